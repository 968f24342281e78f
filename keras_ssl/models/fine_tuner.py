"""SimCLRv2 fine-tuning from a middle layer of the projection head."""

import warnings

import keras
import numpy as np

from keras_ssl.data._checks import as_int32_labels
from keras_ssl.layers.projection_head import ProjectionHead
from keras_ssl.layers.random_resized_crop import RandomResizedCrop
from keras_ssl.models._compiled_call import compiled_call
from keras_ssl.models._input_checks import check_fit_input
from keras_ssl.models._recompile_on_load import RecompileOnLoad
from keras_ssl.models._training_state import batch_spec
from keras_ssl.models._training_state import build_training_state
from keras_ssl.models.image_utils import to_float_images
from keras_ssl.models.ssl_model import SavesRandomState
from keras_ssl.optimizers.lars import LARS


def fine_tuning_network(encoder, head=None, ft_layer=1):
    """The encoder followed by the first `ft_layer` projection-head layers.

    SimCLRv2 §2: "To fine-tune from the first layer of the projection head,
    we have a new encoder function as f_task(x) = W_task σ(W1 f(x))". The
    returned functional model shares its layers (and so its weights) with
    `encoder` and `head`.

    Args:
        encoder: `keras.Model` mapping float images to features (B, C).
        head: `keras_ssl.layers.ProjectionHead` or `None`.
        ft_layer: int in `[0, head.num_layers]`.

    Returns:
        A functional `keras.Model` from images to features.
    """
    num_layers = 0 if head is None else head.num_layers
    if not isinstance(ft_layer, int) or not 0 <= ft_layer <= num_layers:
        raise ValueError(
            "`ft_layer` must be an int between 0 and the number of "
            f"projection-head layers ({num_layers}). Received: "
            f"ft_layer={ft_layer}"
        )
    if ft_layer == 0:
        return encoder
    if not head.built:
        head.build(tuple(encoder.output.shape))
    x = encoder.output
    for i in range(ft_layer):
        for layer in head.layers_of(i):
            x = layer(x)
    return keras.Model(encoder.input, x, name=f"{encoder.name}_ft{ft_layer}")


def logistic_regression(features, labels, num_classes, l2=1.0):
    """A multinomial logistic regression as `Dense` weights.

    scikit-learn's L-BFGS fit on centred features divided by their
    overall standard deviation, folded into the returned weights so that
    `features @ kernel + bias` are the regression's logits. Classes
    without an example get a zero kernel and a bias of -30.

    Args:
        features: float array `(N, D)`.
        labels: int array `(N,)` of ids in `[0, num_classes)`.
        num_classes: int. Columns of the kernel.
        l2: float. The L2 penalty, scikit-learn's `1 / C`. Defaults to
            `1.0`.

    Returns:
        `(kernel, bias, training_accuracy)`: float64 `(D, K)` and `(K,)`
        arrays and a float.
    """
    # scikit-learn takes seconds to import: only this fit needs it.
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    features = np.asarray(features, "float64")
    labels = np.asarray(labels)
    # One scale for all features: per-feature scales would blow up
    # features that barely vary on the labeled images.
    mean, std = features.mean(0), features.std() + 1e-12
    kernel = np.zeros((features.shape[1], num_classes))
    bias = np.full(num_classes, -30.0)
    classes = np.unique(labels)
    if len(classes) == 1:
        bias[classes[0]] = 0.0
        return kernel, bias, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        regression = LogisticRegression(C=1.0 / l2, max_iter=1000)
        regression.fit((features - mean) / std, labels)
    coef, intercept = regression.coef_, regression.intercept_
    if len(classes) == 2:
        # scikit-learn keeps one logit for two classes: split it.
        coef = np.stack([-coef[0], coef[0]]) / 2
        intercept = np.array([-intercept[0], intercept[0]]) / 2
    weights = coef / std
    kernel[:, classes] = weights.T
    bias[classes] = intercept - weights @ mean
    predicted = np.argmax(features @ kernel + bias, axis=-1)
    return kernel, bias, float(np.mean(predicted == labels))


@keras.saving.register_keras_serializable(package="keras_ssl")
class FineTuner(SavesRandomState, RecompileOnLoad, keras.Model):
    """A classifier fine-tuned from a pretrained encoder (SimCLRv2 §2).

    The task network is the encoder, then the first `ft_layer` layers of
    the pretrained projection head, then a zero-initialised linear
    classifier. Training applies only random crop and horizontal flip
    (SimCLRv2 §3.1: "Only random crop and horizontal flips of training
    images are applied during fine-tuning and distillation"); inference
    resizes or centre-crops. Images may be uint8 in [0, 255] or float in
    [0, 1]. The crop's random-generator state is saved with the weights,
    so a resumed fine-tuning draws the crops an uninterrupted one draws.

    SimCLRv2 fine-tunes from the first head layer with 1% and 10% labels
    and from the head's input (`ft_layer=0`) with 100%, without weight
    decay or warm-up, at a learning rate of 0.005·√B (standard ResNets) or
    0.002·√B (wider or SK ResNets) with LARS; see
    `keras_ssl.recipes.simclrv2`. The same class serves as the student of
    `keras_ssl.models.Distiller` (give it a fresh encoder).

    Args:
        encoder: `keras.Model`. Maps float images (B, H, W, 3) to (B, C).
        num_classes: int. Number of classes.
        head: optional pretrained `keras_ssl.layers.ProjectionHead`.
        ft_layer: int. Head layers kept (0 = none). Defaults to `1`.
        image_size: int. Side of the training crop and the eval resize.
            Defaults to the encoder's input side, else `224`.
        crop_scale: tuple. Area range of the training crop. Defaults to
            `(0.08, 1.0)`.
        seed: optional int for the augmentation.
        frozen_batch_norm: bool. Whether the network's BatchNorm layers
            normalise by their moving statistics in training too (their
            scale and offset still train), as when fine-tuning on small
            labeled sets: the features then match those the linear head
            was fitted to (`fit_linear_head`). Defaults to `False`.
        **kwargs: base `keras.Model` arguments.

    Example:
    ```python
    encoder = keras_ssl.backbones.ResNet(depth=18, stem="cifar",
                                         input_shape=(32, 32, 3))
    head = keras_ssl.layers.ProjectionHead()
    model = keras_ssl.models.FineTuner(encoder, num_classes=10, head=head)
    model.compile(optimizer=keras_ssl.optimizers.LARS(0.1))
    model.fit(labeled_images, labels, epochs=1)
    ```
    """

    def __init__(
        self,
        encoder,
        num_classes,
        head=None,
        ft_layer=1,
        image_size=None,
        crop_scale=(0.08, 1.0),
        seed=None,
        frozen_batch_norm=False,
        **kwargs,
    ):
        if head is None and ft_layer == 1:
            ft_layer = 0
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                "`num_classes` must be an int >= 2. Received: "
                f"num_classes={num_classes}"
            )
        super().__init__(**kwargs)
        self.network = fine_tuning_network(encoder, head, ft_layer)
        if image_size is None:
            side = encoder.input.shape[1]
            image_size = int(side) if side is not None else 224
        self.augment = RandomResizedCrop(
            image_size, scale=crop_scale, flip=True, seed=seed
        )
        self.classifier = keras.layers.Dense(
            num_classes, kernel_initializer="zeros", name="classifier"
        )
        self.classifier.build(tuple(self.network.output.shape))
        self.num_classes = num_classes
        self.ft_layer = ft_layer
        self.image_size = image_size
        self.crop_scale = tuple(crop_scale)
        self.seed = seed
        self.frozen_batch_norm = bool(frozen_batch_norm)
        self.built = True

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """`keras.Model.compile` with classification defaults.

        `loss` defaults to sparse categorical cross-entropy on logits and
        `metrics` to `["accuracy"]`.
        """
        if loss is None:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if metrics is None:
            metrics = ["accuracy"]
        super().compile(
            optimizer=optimizer, loss=loss, metrics=metrics, **kwargs
        )
        # SimCLR leaves its supervised head (`head_supervised`) out of
        # LARS's trust ratio: with it, the zero-initialised classifier
        # would move by `eeta` times its norm per step once it is nonzero.
        # Its coupled decay stays, the gradient of SimCLR's L2 loss on the
        # head. LP-FT's frozen BatchNorm keeps every weight under the trust
        # ratio (`recipes.stages.classifier_stage`).
        inner = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        if isinstance(inner, LARS) and not self.frozen_batch_norm:
            inner.exclude_variables(
                self.classifier.trainable_weights, weight_decay=False
            )

    def _checked(self, x, method, action="run on", name="x"):
        """`x` after the checks of `fit`'s images (see `check_fit_input`)."""
        channels = self.network.input.shape[-1] or 3
        model = type(self).__name__
        if method != "fit":
            model = f"{model}.{method}"
        return check_fit_input(x, channels, model, action, name)

    def fit(self, x=None, *args, **kwargs):
        """`keras.Model.fit`, after checking the images in `x` (uint8 in
        [0, 255] or float in [0, 1], channels last; arrays in full,
        streams on their first batch)."""
        x = self._checked(x, "fit", action="be trained on")
        y = args[0] if args else kwargs.get("y")
        weights = kwargs.get("sample_weight")
        build_training_state(self, batch_spec(x, y, weights))
        return super().fit(x, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        """`keras.Model.predict`, after the checks of `fit`'s images."""
        return super().predict(self._checked(x, "predict"), *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        """`keras.Model.evaluate`, after the checks of `fit`'s images."""
        x = self._checked(x, "evaluate")
        return super().evaluate(x, *args, **kwargs)

    def fit_linear_head(self, images, labels, l2=1.0, batch_size=256):
        """Sets the classifier to a logistic regression on frozen features.

        LP-FT (Kumar et al., 2022): with few labels, fine-tuning from a
        zero (or random) classifier distorts the pretrained features
        before the head is any good; fitting the head first on the frozen
        features (inference mode, no augmentation), then fine-tuning the
        whole network from there, keeps what pretraining learned. The
        regression is scikit-learn's (L-BFGS, multinomial) on centred and
        scaled features, folded into the `Dense` weights.
        Classes without a labeled image get a very negative bias.

        Args:
            images: uint8 `(N, H, W, 3)` or float images in [0, 1].
            labels: int class ids `(N,)`.
            l2: float. Inverse of scikit-learn's `C`: the L2 penalty.
                Defaults to `1.0`.
            batch_size: int. Images per inference batch. Defaults to `256`.

        Returns:
            The training accuracy of the fitted head, a float.

        References:
            - [Kumar et al., 2022. Fine-Tuning can Distort Pretrained
              Features and Underperform Out-of-Distribution](
              https://arxiv.org/abs/2202.10054)
        """
        images = self._checked(images, "fit_linear_head", "fit", "images")
        labels = as_int32_labels(
            labels, len(images), self.num_classes, name="labels"
        )
        features = np.concatenate(
            [
                keras.ops.convert_to_numpy(
                    self.embed(images[i : i + batch_size])
                )
                for i in range(0, len(images), batch_size)
            ]
        ).astype("float64")
        kernel, bias, accuracy = logistic_regression(
            features, labels, self.num_classes, l2=l2
        )
        self.classifier.kernel.assign(kernel.astype("float32"))
        self.classifier.bias.assign(bias.astype("float32"))
        return accuracy

    def classify(self, images, training=None):
        """Logits of already-prepared float images (no augmentation)."""
        # Frozen BatchNorm: moving statistics even in training; the
        # gradients still reach every weight.
        network_training = False if self.frozen_batch_norm else training
        features = self.network(images, training=network_training)
        return self.classifier(features)

    def embed(self, images, training=None):
        """Features fed to the classifier, for uint8 or float images."""
        x = self.augment(to_float_images(images), training=False)
        return self.network(x, training=training)

    def call(self, images, training=None):
        x = to_float_images(images)
        if training:
            # The training crop runs as one compiled function inside any
            # step, as the pretrainers' views do.
            x = compiled_call(self.augment, x, training=True)
        else:
            x = self.augment(x, training=training)
        return self.classify(x, training=training)

    def serving_outputs(self, images):
        """What an export serves for float images in [0, 1] at
        `image_size`: the classifier's input features and its logits."""
        x = self.augment(images, training=False)
        embedding = self.network(x, training=False)
        return {"embedding": embedding, "logits": self.classifier(embedding)}

    def get_config(self):
        config = super().get_config()
        # The network already contains the kept head layers, so the saved
        # model rebuilds it with `ft_layer=0`: the unused head layers are
        # not part of the fine-tuned model and are not saved.
        config.update(
            {
                "encoder": keras.saving.serialize_keras_object(self.network),
                "num_classes": self.num_classes,
                "head": None,
                "ft_layer": 0,
                "image_size": self.image_size,
                "crop_scale": self.crop_scale,
                "seed": self.seed,
                "frozen_batch_norm": self.frozen_batch_norm,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(
            config["encoder"]
        )
        if config.get("head") is not None:
            config["head"] = ProjectionHead.from_config(config["head"])
        return cls(**config)
