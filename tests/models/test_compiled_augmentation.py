import keras
import numpy as np
import pytest

from keras_ssl.layers import ProjectionHead
from keras_ssl.layers import RandomResizedCrop
from keras_ssl.layers import Views
from keras_ssl.losses import nt_xent
from keras_ssl.models import SimCLRv2Pretrainer
from keras_ssl.models._compiled_call import compiled_call
from keras_ssl.testing import TestCase
from tests.models.conftest import tiny_encoder

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="compares with tf.function(jit_compile=True)",
)


def images(n=4, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3)).astype("uint8")


def twin(layer):
    """A layer with the same config and seeds, in the same random state."""
    return layer.__class__.from_config(layer.get_config())


def jit_compiled(layer):
    import tensorflow as tf

    return tf.function(
        lambda x: layer(x, training=True), jit_compile=True, autograph=False
    )


class TestCompiledCall(TestCase):
    @pytest.mark.parametrize(
        "layer",
        [
            Views.from_preset("simclr_cifar", size=16, seed=3),
            # Views of two sizes, grouped: one XLA launch per view.
            Views.from_preset(
                "paws_cifar", size=16, group_by_size=True, seed=7
            ),
            RandomResizedCrop(12, flip=True, seed=4),
        ],
        ids=["views", "grouped_views", "crop"],
    )
    def test_inside_a_step_equals_the_compiled_layer(self, layer):
        import tensorflow as tf

        reference = jit_compiled(twin(layer))
        uncompiled = twin(layer)
        # An uncompiled step around it, as `fit()` runs on a CPU.
        step = tf.function(lambda x: compiled_call(layer, x, training=True))
        x = images().astype("float32") / 255.0
        for _ in range(2):  # the random state moves on identically
            got = keras.tree.flatten(step(x))
            expected = keras.tree.flatten(reference(x))
            for a, b in zip(got, expected):
                self.assertAllClose(a, b, atol=0, rtol=0)
        # XLA draws other numbers than the uncompiled ops, so the equality
        # above tells a compiled call from an uncompiled one.
        plain = keras.tree.flatten(uncompiled(x, training=True))
        assert not np.allclose(plain[0], expected[0], atol=1e-3)

    @pytest.mark.parametrize(
        "layer",
        [
            Views.from_preset("simclr_cifar", size=16, seed=3),
            RandomResizedCrop(12, flip=True, seed=4),
        ],
        ids=["views", "crop"],
    )
    def test_eager_call_and_eval_mode(self, layer):
        x = images().astype("float32") / 255.0
        expected = keras.tree.flatten(jit_compiled(twin(layer))(x))
        got = keras.tree.flatten(compiled_call(layer, x, training=True))
        for a, b in zip(got, expected):
            self.assertAllClose(a, b, atol=0, rtol=0)
        got = keras.tree.flatten(compiled_call(layer, x, training=False))
        expected = keras.tree.flatten(layer(x, training=False))
        for a, b in zip(got, expected):
            self.assertAllClose(a, b, atol=1e-6)


class TestTrainingStepViews(TestCase):
    def test_fit_step_uses_the_compiled_views(self):
        """The loss `train_on_batch` reports is that of the compiled views."""
        import tensorflow as tf

        model = SimCLRv2Pretrainer(
            tiny_encoder(),
            head=ProjectionHead(num_layers=2, output_dim=4),
            views=Views.from_preset("simclr_cifar", size=16, seed=5),
            memory_size=0,
        )
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        x = images(8)
        view1, view2 = jit_compiled(twin(model.views))(
            tf.cast(x, "float32") / 255.0
        )
        h = model.encoder(tf.concat([view1, view2], 0), training=True)
        z = model.head(h, training=True)[-1]
        expected = nt_xent(z[:8], z[8:], temperature=model.temperature)
        logs = model.train_on_batch(x, return_dict=True)
        self.assertAllClose(logs["loss"], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Views.from_preset(
            "paws_cifar", size=16, group_by_size=True, seed=7
        ),
        lambda: RandomResizedCrop(12, flip=True, seed=4),
    ],
    ids=["grouped_views", "crop"],
)
def test_the_compiled_functions_do_not_keep_the_layer_alive(make):
    import gc
    import weakref

    from keras_ssl.models import _compiled_call

    layer = make()
    compiled_call(layer, images().astype("float32") / 255.0, training=True)
    assert layer in _compiled_call._COMPILED
    own = weakref.ref(layer)
    del layer
    gc.collect()
    assert own() is None
