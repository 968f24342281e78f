"""Loading a saved model whose class overrides `compile`."""

import keras


class RecompileOnLoad:
    """Mixin: a loaded model is compiled again through its own `compile`.

    Keras skips recompiling a loaded model whose class overrides `compile`
    (it cannot know what the override does) and warns. Our overrides only
    add defaults or set up the optimizer (e.g. which variables LARS leaves
    out of its trust ratio), so calling them with the saved arguments
    restores the model as it was compiled.
    """

    def compile_from_config(self, config):
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            # Create the optimizer's variables, so its saved state loads.
            self.optimizer.build(self.trainable_variables)
