"""PAWS pretraining: multi-crop views classified against a support batch."""

import keras
from keras import ops

from keras_ssl import distribute
from keras_ssl._checks import is_int
from keras_ssl.layers.projection_head import ProjectionHead
from keras_ssl.layers.views import Views
from keras_ssl.losses.paws import PAWS
from keras_ssl.losses.paws import paws
from keras_ssl.models._compiled_call import compiled_call
from keras_ssl.models.image_utils import to_float_images
from keras_ssl.models.image_utils import unpack_batch
from keras_ssl.models.ssl_model import SSLModel
from keras_ssl.ops.math import soft_nearest_neighbour


def _check_args(num_classes, support_views):
    if not is_int(num_classes) or num_classes < 2:
        raise ValueError(
            "`num_classes` must be an int >= 2. Received: "
            f"num_classes={num_classes}"
        )
    if support_views not in (1, 2) or isinstance(support_views, bool):
        raise ValueError(
            "`support_views` must be 1 or 2. Received: "
            f"support_views={support_views}"
        )


def _unpack(data):
    """`(unlabeled, support, support_labels)` of a training batch."""
    batch = unpack_batch(data)
    if any(x is None for x in (batch.unlabeled, batch.support)) or (
        batch.support_labels is None
    ):
        raise ValueError(
            "PAWSPretrainer needs batches with unlabeled images and a "
            "labeled support batch: dicts with keys 'unlabeled', 'support' "
            "and 'support_labels', as keras_ssl.data.semi_supervised(..., "
            "support=keras_ssl.data.SupportSampler(...)) yields them. "
            f"Received: {batch.received}"
        )
    return batch.unlabeled, batch.support, batch.support_labels


def _as_list(views_layer, outputs):
    """The views in spec order, also from a `group_by_size` layer."""
    if not isinstance(outputs, dict):
        return list(outputs)
    chunks = {}
    for size, tensor in outputs.items():
        count = sum(spec.size == size for spec in views_layer.specs)
        chunks[size] = list(ops.split(tensor, count, axis=0))
    return [chunks[spec.size].pop(0) for spec in views_layer.specs]


@keras.saving.register_keras_serializable(package="keras_ssl")
class PAWSPretrainer(SSLModel):
    """PAWS pretraining (Assran et al., 2021) with a custom train step.

    Each step makes multi-crop views of every unlabeled image on the
    device (two global views, then any small ones: `views`), augments the
    labeled support batch like the global views (`support_views` views of
    each support image), embeds everything with `encoder` and the 3-layer
    projection `head` (and the optional `prediction_head`), and minimises
    `keras_ssl.losses.paws` (eq. 4): the soft nearest-neighbour prediction
    of every view against the support embeddings, with the other global
    view's sharpened prediction as target, plus ME-MAX. Views of one size
    share one forward pass (the support views join the global views'
    pass), so BatchNorm sees each resolution's batch as a whole.

    Batches are the dicts of `keras_ssl.data.semi_supervised(...,
    support=keras_ssl.data.SupportSampler(...))`: `"unlabeled"` uint8
    images and a fresh class-balanced support batch `"support"` with int
    `"support_labels"` every step (PAWS Appendix A: classes first, then
    images per class, "with replacement" across steps). `"labeled"` /
    `"labels"` / `"support_targets"`, if present, are not used: the model
    one-hot encodes and smooths the support labels itself, so give the
    sampler `label_smoothing=0`. A batch without a support batch raises a
    `ValueError` when the step is first traced, before any update.

    Label space: support labels are global class ids, `K = num_classes`
    columns, the same as the sampler's `one_hot_labels`. PAWS indexes the
    `C` classes of each support batch `0..C-1` instead; the loss smooths
    only over the classes present in the support batch so that the two
    give identical values (see `keras_ssl.losses.paws`).

    Distribution: under `tf.distribute` each replica receives its slice of
    the support batch like any other batch entry, embeds it (with global
    BatchNorm when the encoder and head use synchronized BN: the default
    head does; give the encoder `synchronized_bn=True`) and the loss
    gathers the support embeddings and labels from every replica,
    differentiably. Every replica therefore classifies its views against
    the *global* support batch of `C x I` images (PAWS §5: 6720 support
    images on 64 GPUs), and gradients reach every replica's support rows;
    ME-MAX averages the sharpened predictions over the global batch. One
    replica with batch `N` and `R` replicas with `N / R` each compute the
    same step. The support batch size must divide by `R`
    (`keras_ssl.data.distribute_dataset` checks it).

    Defaults follow the paper's ImageNet setting: a 3-layer projection
    head of width 2048 (Appendix A: "three fully-connected layers of
    dimension 2048"), no prediction head (Table 5: "PAWS also works well
    without it", and the CIFAR-10 setup of Appendix C omits it), one view
    of each support image. For CIFAR-10 (Appendix C) pass
    `views=Views.from_preset("paws_cifar")`, a head of width 128 and
    `support_views=2` ("we also generate two views of each sampled support
    image"). The default head is the reference code's: `Dense` layers with
    biases, BatchNorm and ReLU after the hidden ones only.

    `call(images)` returns `{"embedding", "projection"}` (and
    `"prediction"` with a prediction head). PAWS-NN classifies with the
    projection (the paper's `f_theta` includes the projection head), e.g.
    with `keras_ssl.evaluation.SoftNearestNeighbour`.

    Metrics: `loss`; `cross_entropy` (the consistency term, Fig. 4a);
    `me_max` (`H(p_bar)` in nats, so `loss = cross_entropy - me_max`);
    `target_confidence` (mean largest probability of the sharpened
    targets of the global views, Fig. 4c); `support_accuracy`, report-only
    and without gradient: each support view of this replica is classified
    by the soft nearest-neighbour rule (temperature `temperature`, hard
    labels) against the views of all *other* images of the global support
    batch, and the fraction whose argmax is its label is reported (a
    leave-one-image-out accuracy; classes with one image per batch and one
    view can never be right).

    Args:
        encoder: `keras.Model` mapping float images in [0, 1] to features
            `(B, C)`, e.g. `keras_ssl.backbones.ResNet`; it must accept
            every view size (use `input_shape=(None, None, 3)`).
        num_classes: int >= 2. Number of classes `K` of the support
            labels.
        head: layer mapping features to the projection (or to a list of
            activations whose last entry is the projection). Defaults to
            `ProjectionHead(3, output_dim=2048, hidden_dim=2048,
            synchronized_bn=True, use_bias=True,
            batch_norm=[True, True, False])`.
        views: `keras_ssl.layers.Views` with the two global views first.
            Defaults to the `"paws_imagenet"` preset at the encoder's input
            size (224 when unknown).
        prediction_head: optional layer applied to the projections (of
            views and support) before the classifier, as PAWS's default
            ImageNet setup with a BYOL-style head. As in the reference
            code, the targets are then built from the projections before
            the head. Defaults to `None`.
        support_views: int, 1 or 2. Views of each support image, made with
            the first `support_views` specs of `views`. Defaults to `1`.
        temperature: float > 0. Cosine temperature `tau`. Defaults to
            `0.1`.
        sharpen_temperature: float > 0. Target sharpening temperature `T`.
            Defaults to `0.25`.
        label_smoothing: float in [0, 1). Defaults to `0.1`.
        me_max: bool. Use the ME-MAX regulariser. Defaults to `True`.
        **kwargs: base `keras.Model` arguments.

    Example:
    ```python
    x, y = keras_ssl.data.load_npz("cifar10/train.npz")
    subset = keras_ssl.data.labeled_subset((x, y), per_class=400)
    sampler = keras_ssl.data.SupportSampler(
        subset.x, subset.y, classes_per_batch=10, images_per_class=64)
    stream = keras_ssl.data.semi_supervised(
        x, unlabeled_batch_size=256, support=sampler)
    encoder = keras_ssl.backbones.ResNet(
        depth=18, stem="cifar", input_shape=(None, None, 3))
    model = keras_ssl.models.PAWSPretrainer(
        encoder,
        num_classes=10,
        head=keras_ssl.layers.ProjectionHead(3, 128, 128),
        views=keras_ssl.layers.Views.from_preset("paws_cifar"),
        support_views=2,
    )
    model.compile(optimizer=keras_ssl.optimizers.LARS(0.8))
    model.fit(stream, epochs=1)
    ```

    References:
        - [Assran et al., 2021. Semi-Supervised Learning of Visual Features
          by Non-Parametrically Predicting View Assignments with Support
          Samples](https://arxiv.org/abs/2104.13963)
    """

    config_objects = ("encoder", "head", "views", "prediction_head")
    config_values = (
        "num_classes",
        "support_views",
        "temperature",
        "sharpen_temperature",
        "label_smoothing",
        "me_max",
    )
    metric_names = (
        "loss",
        "cross_entropy",
        "me_max",
        "target_confidence",
        "support_accuracy",
    )

    def __init__(
        self,
        encoder,
        num_classes,
        head=None,
        views=None,
        prediction_head=None,
        support_views=1,
        temperature=0.1,
        sharpen_temperature=0.25,
        label_smoothing=0.1,
        me_max=True,
        **kwargs,
    ):
        _check_args(num_classes, support_views)
        # The loss checks its own arguments.
        PAWS(
            num_classes=num_classes,
            temperature=temperature,
            sharpen_temperature=sharpen_temperature,
            label_smoothing=label_smoothing,
        )
        super().__init__(**kwargs)
        feature_shape = tuple(encoder.output.shape)
        image_size = encoder.input.shape[1]
        # === Layers ===
        self.encoder = encoder
        projection_shape = self._build_head(head, feature_shape)
        self._build_views(views, support_views, image_size or 224)
        self.prediction_head = prediction_head
        if prediction_head is not None and not prediction_head.built:
            prediction_head.build(tuple(projection_shape))
        # === Config ===
        self.num_classes = num_classes
        self.support_views = support_views
        self.temperature = temperature
        self.sharpen_temperature = sharpen_temperature
        self.label_smoothing = label_smoothing
        self.me_max = me_max
        self.image_size = image_size
        self.built = True

    def _build_head(self, head, feature_shape):
        """Sets and builds the projection head; returns its output shape."""
        if head is None:
            head = ProjectionHead(
                3,
                output_dim=2048,
                hidden_dim=2048,
                synchronized_bn=True,
                use_bias=True,
                batch_norm=[True, True, False],
                dtype=self.dtype_policy,
            )
        self.head = head
        if not self.head.built:
            self.head.build(feature_shape)
        projection_shape = self.head.compute_output_shape(feature_shape)
        if isinstance(projection_shape, list):
            projection_shape = projection_shape[-1]
        return projection_shape

    def _build_views(self, views, support_views, image_size):
        """Sets the views of the unlabeled images and of the support."""
        if views is None:
            views = Views.from_preset(
                "paws_imagenet", size=image_size, dtype=self.dtype_policy
            )
        if len(views.specs) < 2:
            raise ValueError(
                "`views` must make at least the two global views. Received: "
                f"{len(views.specs)} view(s)"
            )
        self.views = views
        self.support_augment = Views(
            views.specs[:support_views],
            seed=None if views.seed is None else views.seed + 1,
            name="support_views",
            dtype=views.dtype_policy,
        )

    def _project(self, x, training):
        h = self.encoder(x, training=training)
        z = self.head(h, training=training)
        if isinstance(z, (list, tuple)):
            z = z[-1]
        outputs = {"embedding": h, "projection": z}
        if self.prediction_head is not None:
            outputs["prediction"] = self.prediction_head(z, training=training)
        return outputs

    def call(self, images, training=None):
        x = to_float_images(images)
        size = self.image_size
        if size is not None and (x.shape[1] != size or x.shape[2] != size):
            x = ops.image.resize(x, (size, size))
        return self._project(x, training)

    def _embed_views(self, tensors, training):
        """Each tensor's outputs (projection, prediction), one pass per size."""
        groups = {}
        for index, tensor in enumerate(tensors):
            groups.setdefault(tuple(tensor.shape[1:3]), []).append(index)
        outputs = [None] * len(tensors)
        for indices in groups.values():
            parts = [tensors[i] for i in indices]
            x = parts[0] if len(parts) == 1 else ops.concatenate(parts, 0)
            z = self._project(x, training)
            start = 0
            for i in indices:
                rows = ops.shape(tensors[i])[0]
                outputs[i] = {
                    key: value[start : start + rows] for key, value in z.items()
                }
                start = start + rows
        return outputs

    def compute_ssl_loss(self, data, training=True):
        unlabeled, support, support_labels = _unpack(data)
        views = _as_list(
            self.views,
            compiled_call(self.views, to_float_images(unlabeled), training),
        )
        support_views = compiled_call(
            self.support_augment, to_float_images(support), training
        )
        outputs = self._embed_views(list(support_views) + views, training)
        count = len(support_views)
        support_outputs, view_outputs = outputs[:count], outputs[count:]

        def stacked(name, part):
            tensors = [output[name] for output in part]
            return (
                tensors[0] if len(tensors) == 1 else ops.concatenate(tensors, 0)
            )

        # The classifier sees the prediction head's outputs when there is
        # one; the targets come from the projections before it, as in the
        # reference code (without a head the two are the same).
        key = "projection" if self.prediction_head is None else "prediction"
        z_support = stacked(key, support_outputs)
        targets = {}
        if self.prediction_head is not None:
            targets = {
                "target_views": [o["projection"] for o in view_outputs[:2]],
                "target_support": stacked("projection", support_outputs),
            }
        labels = ops.cast(support_labels, "int32")
        loss, logs = paws(
            [output[key] for output in view_outputs],
            z_support,
            ops.concatenate([labels] * count, 0) if count > 1 else labels,
            num_classes=self.num_classes,
            temperature=self.temperature,
            sharpen_temperature=self.sharpen_temperature,
            label_smoothing=self.label_smoothing,
            me_max=self.me_max,
            return_metrics=True,
            **targets,
        )
        logs["support_accuracy"] = self._support_accuracy(z_support, labels)
        return loss, logs

    def _support_accuracy(self, z_support, labels):
        """Leave-one-image-out soft-NN accuracy on the global support."""
        queries = ops.stop_gradient(ops.cast(z_support, "float32"))
        images = ops.shape(labels)[0]
        first = ops.cast(distribute.replica_id(), "int32") * images
        ids = ops.arange(images, dtype="int32") + first
        ids = ops.concatenate([ids] * self.support_views, 0)
        labels = ops.concatenate([labels] * self.support_views, 0)
        keys = distribute.all_gather(queries)
        # Gathered as floats (exact for ids and labels below 2**24).
        key_ids = distribute.all_gather(ops.cast(ids, "float32"))
        key_rows = distribute.all_gather(
            ops.one_hot(labels, self.num_classes, dtype="float32")
        )
        other_image = ops.not_equal(ops.cast(ids, "float32")[:, None], key_ids)
        probs = soft_nearest_neighbour(
            queries, keys, key_rows, self.temperature, mask=other_image
        )
        predicted = ops.cast(ops.argmax(probs, axis=-1), "int32")
        return ops.mean(ops.cast(ops.equal(predicted, labels), "float32"))
