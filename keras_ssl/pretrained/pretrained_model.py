"""`PretrainedModel`: a published network rebuilt from keras_ssl parts."""

import keras
import numpy as np

from keras_ssl.layers.projection_head import ProjectionHead
from keras_ssl.models.ssl_model import ConfigFromArguments


@keras.saving.register_keras_serializable(package="keras_ssl")
class PretrainedModel(ConfigFromArguments, keras.Model):
    """A published self-/semi-supervised network as keras_ssl layers.

    The readers in `keras_ssl.pretrained` return this model: the encoder is
    a `keras_ssl.backbones.ResNet` (which takes images in `[0, 1]`, and
    normalises them itself where the reference network expects ImageNet
    statistics), the heads are the reference's heads, and a call returns
    a dict with `"features"` (the pooled encoder output), and, where the
    checkpoint has them, `"projection"`, `"prediction"` and `"logits"`.
    Every part is an ordinary Keras object, so the parts plug into the rest
    of the library: `FineTuner(model.encoder, num_classes, head=model.head,
    ft_layer=1)` fine-tunes a SimCLRv2 network from the middle of its
    projection head, a model with a classifier is a `Distiller`'s teacher
    (through `classify` and `num_classes`, as a `FineTuner` is),
    `keras_ssl.evaluation.embed(model, images, output="features")` feeds
    k-NN and linear evaluation, and `keras_ssl.export.export_saved_model`
    serves it (`serving_outputs`: `"embedding"`, the features, and the
    other outputs under their own names).

    Args:
        encoder: `keras.Model` mapping images to features `(B, C)`.
        head: optional projection head: a
            `keras_ssl.layers.ProjectionHead` (SimCLR), whose `ft_layer`-th
            activation feeds the classifier, or any layer mapping features
            to the projection (PAWS, SemPPL). Defaults to `None`.
        classifier: optional layer mapping the classifier input to logits.
            Defaults to `None`.
        predictor: optional layer mapping projections to predictions (the
            PAWS and SemPPL prediction heads). Defaults to `None`.
        ft_layer: int. Which `ProjectionHead` activation the classifier
            reads (0: the features). Must be 0 unless `head` is a
            `ProjectionHead`. Defaults to `0`.
        image_size: int or `(height, width)`. The side images are resized
            to when the model is served (`keras_ssl.export`): the
            published networks were trained and evaluated at 224. Defaults
            to `224`.
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Example:

    ```python
    model = keras_ssl.pretrained.load("simclrv2/r50_1x_sk0/pretrained")
    outputs = model(images)  # images in [0, 1], (B, 224, 224, 3)
    outputs["features"], outputs["projection"], outputs["logits"]
    ```
    """

    config_objects = ("encoder", "head", "classifier", "predictor")
    config_values = ("ft_layer", "image_size")

    def __init__(
        self,
        encoder,
        head=None,
        classifier=None,
        predictor=None,
        ft_layer=0,
        image_size=224,
        **kwargs,
    ):
        num_layers = head.num_layers if isinstance(head, ProjectionHead) else 0
        if not isinstance(ft_layer, int) or not 0 <= ft_layer <= num_layers:
            raise ValueError(
                "`ft_layer` must be an int between 0 and the number of "
                f"projection-head layers ({num_layers}). Received: "
                f"ft_layer={ft_layer}"
            )
        if predictor is not None and head is None:
            raise ValueError(
                "`predictor` needs a `head` to read projections from. "
                f"Received: head=None, predictor={predictor!r}"
            )
        super().__init__(**kwargs)
        self.encoder = encoder
        self.head = head
        self.classifier = classifier
        self.predictor = predictor
        self.ft_layer = ft_layer
        self.image_size = (
            tuple(image_size)
            if isinstance(image_size, (tuple, list))
            else image_size
        )
        features = tuple(encoder.output.shape)
        shape = features
        if head is not None and not head.built:
            head.build(features)
        if head is not None:
            shapes = head.compute_output_shape(features)
            if isinstance(head, ProjectionHead):
                shape = tuple(shapes[ft_layer])
                shapes = shapes[-1]
            if predictor is not None and not predictor.built:
                predictor.build(tuple(shapes))
        if classifier is not None and not classifier.built:
            classifier.build(shape)
        self._classifier_input_shape = shape
        self.built = True

    def call(self, images, training=None):
        features = self.encoder(images, training=training)
        outputs = {"features": features}
        classifier_input = features
        if self.head is not None:
            projection = self.head(features, training=training)
            if isinstance(self.head, ProjectionHead):
                classifier_input = projection[self.ft_layer]
                projection = projection[-1]
            outputs["projection"] = projection
            if self.predictor is not None:
                outputs["prediction"] = self.predictor(
                    projection, training=training
                )
        if self.classifier is not None:
            outputs["logits"] = self.classifier(
                classifier_input, training=training
            )
        return outputs

    @property
    def num_classes(self):
        """The classifier's number of classes, or `None` without one."""
        if self.classifier is None:
            return None
        shape = self.classifier.compute_output_shape(
            self._classifier_input_shape
        )
        return int(shape[-1])

    def classify(self, images, training=None):
        """Logits of float images in `[0, 1]`, as `FineTuner.classify`."""
        if self.classifier is None:
            raise ValueError(
                f"`{self.name}` has no classifier: its checkpoint holds no "
                "supervised head. Fine-tune it with "
                "`keras_ssl.models.FineTuner` first."
            )
        x = self.encoder(images, training=training)
        if self.ft_layer:
            x = self.head(x, training=training)[self.ft_layer]
        return self.classifier(x, training=training)

    def serving_outputs(self, images):
        """What an export serves for float images in `[0, 1]` at
        `image_size`: the features as `"embedding"`, and `"projection"`,
        `"prediction"` and `"logits"` where the model has them."""
        outputs = dict(self(images, training=False))
        outputs["embedding"] = outputs.pop("features")
        return outputs


def relative_path(layer, variable):
    """`variable.path` without the leading `layer.name/`."""
    prefix = f"{layer.name}/"
    path = variable.path
    return path[len(prefix) :] if path.startswith(prefix) else path


def assign(layer, values, source):
    """Sets every variable of `layer` from `values` (relative path -> array).

    Every variable must get a value of its own shape and every value must
    be used, so that a reader that misreads a checkpoint fails here rather
    than returning a half-initialised network.

    Args:
        layer: built `keras.layers.Layer` or `keras.Model`.
        values: dict from `relative_path(layer, variable)` to arrays.
        source: str. Names the checkpoint in error messages.
    """
    values = dict(values)
    missing = []
    for variable in layer.weights:
        path = relative_path(layer, variable)
        if path not in values:
            missing.append(path)
            continue
        value = np.asarray(values.pop(path))
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"{source}: the value for `{path}` has shape {value.shape}, "
                f"the network expects {tuple(variable.shape)}."
            )
        variable.assign(value.astype(variable.dtype))
    if missing or values:
        raise ValueError(
            f"{source} does not match the network `{layer.name}`: no value "
            f"for {sorted(missing)[:8]}"
            + (f" (and {len(missing) - 8} more)" if len(missing) > 8 else "")
            + f"; unused values {sorted(values)[:8]}."
        )
