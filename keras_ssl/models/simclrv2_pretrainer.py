"""SimCLRv2 contrastive pretraining with a MoCo memory and a linear probe."""

import warnings

import keras
from keras import ops

from keras_ssl import distribute
from keras_ssl._checks import check_in_range
from keras_ssl._checks import check_positive
from keras_ssl._checks import is_int
from keras_ssl.layers.memory_queue import MemoryQueue
from keras_ssl.layers.projection_head import ProjectionHead
from keras_ssl.layers.views import Views
from keras_ssl.losses.nt_xent import NTXent
from keras_ssl.losses.nt_xent import nt_xent
from keras_ssl.models._compiled_call import compiled_call
from keras_ssl.models.image_utils import to_float_images
from keras_ssl.models.image_utils import unpack_batch
from keras_ssl.models.momentum import clone_layer
from keras_ssl.models.momentum import clone_network
from keras_ssl.models.momentum import ema_update
from keras_ssl.models.ssl_model import SSLModel
from keras_ssl.ops.math import loss_dtype
from keras_ssl.optimizers.lars import LARS

# The probe's own learning rate (see `SimCLRv2Pretrainer`).
PROBE_LEARNING_RATE = 0.01


def _check_args(temperature, memory_size, momentum, memory_views, num_classes):
    # The loss checks its own argument.
    NTXent(temperature=temperature)
    if not is_int(memory_size) or memory_size < 0:
        raise ValueError(
            "`memory_size` must be an int >= 0. Received: "
            f"memory_size={memory_size}"
        )
    check_in_range("momentum", momentum, 0, 1, include_high=False)
    if memory_views not in (1, 2):
        raise ValueError(
            "`memory_views` must be 1 or 2. Received: "
            f"memory_views={memory_views}"
        )
    if num_classes is not None and (not is_int(num_classes) or num_classes < 2):
        raise ValueError(
            "`num_classes` must be None or an int >= 2. Received: "
            f"num_classes={num_classes}"
        )


def _two_views(views, image_size, dtype):
    """`views`, or SimCLR's ImageNet views at `image_size`; exactly two."""
    if views is None:
        views = Views.from_preset(
            "simclr_imagenet", size=image_size, dtype=dtype
        )
    if len(views.specs) != 2:
        raise ValueError(
            "`views` must make exactly two views for NT-Xent. Received: "
            f"{len(views.specs)} views"
        )
    return views


@keras.saving.register_keras_serializable(package="keras_ssl")
class SimCLRv2Pretrainer(SSLModel):
    """SimCLRv2 pretraining: NT-Xent over two views, memory, online probe.

    Each step makes two augmented views of every image on the device,
    encodes them with the ResNet `encoder`, projects them with the deep
    `head` and minimises NT-Xent (SimCLRv2 eq. 1) with negatives from every
    replica. With `memory_size > 0` a momentum copy of encoder and head
    (EMA decay `momentum`, updated at the start of each step as in MoCo)
    projects the views into a FIFO queue whose entries serve as extra
    negatives (SimCLRv2 §2: "a memory network (with a moving average of
    weights for stabilization) whose output will be buffered as negative
    examples"). Empty queue slots are masked out rather than filled with
    random vectors.

    The memory network normalises each batch by its own statistics, as
    MoCo's key encoder does (it runs in training mode); its moving
    statistics are the EMA of the online network's and are never written
    by the step. (On moving statistics, which start at (0, 1), a fresh
    memory network maps different images to nearly the same key, and the
    queue fills with near-copies of one vector.)

    An image is never its own negative: when batches carry image ids
    (`keras_ssl.data.semi_supervised(..., image_ids=True)` yields
    `"unlabeled_ids"` and `"labeled_ids"`), the queue stores each key's id
    and every query leaves the keys of its own image out of its
    denominator. MoCo relies on scale for this (65,536 keys against 1.28M
    images); with a queue that holds a large share of the data set, most
    queries would otherwise meet an earlier key of their own image. `fit()`
    warns when it sees a memory larger than 10% of an array data set
    without ids.

    Batches may be plain uint8 images, or the dicts of
    `keras_ssl.data.semi_supervised`; then the labeled images join the
    contrastive batch too, and a linear probe on the stop-gradient encoder
    output of their first view is trained alongside (as SimCLR does), which
    reports `probe_loss` and `probe_accuracy` without shaping the encoder.
    As SimCLR treats its supervised head, a `LARS` optimizer updates the
    probe by plain SGD with momentum (no trust ratio, no coupled decay),
    and the probe's kernel is regularised by an L2 loss
    `weight_decay / 2 · ||W||²` with LARS's `weight_decay`. The probe's
    terms join the gradient, but the `loss` log is the contrastive loss
    alone.

    The probe steps at `probe_learning_rate`, not at the pretraining rate:
    its loss is multiplied by `probe_learning_rate / rate` with the
    optimizer's current rate, so plain SGD with momentum steps it by
    `probe_learning_rate · g` at every step. The rate is then constant,
    whatever the optimizer's schedule (no warm-up, no decay; on a step
    whose scheduled rate is 0 nothing moves, the probe included). Softmax
    regression on the unnormalised, non-negative ResNet features is only
    stable below a rate of about `10 / ||h||²`, and `||h||²` grows during
    pretraining (from 29 to 300 in the first 10 epochs of the digits
    recipe): at that recipe's rate of 4 the probe's loss went from 4.7 to
    89 in two epochs and stayed above 100, while at `0.01` it falls
    (docs/benchmarks.md, "The online probe's learning rate"). SimCLR's
    coupling, the probe at the pretraining rate, is `probe_learning_rate=
    None`. The scaling is exact for optimizers whose step is linear in
    the gradient (LARS for the probe, SGD); adaptive ones such as Adam
    normalise it away.

    `call(images)` returns a dict with the `"embedding"` (encoder output),
    the `"projection"` and, with a probe, its `"logits"`.

    Args:
        encoder: `keras.Model` mapping float images to features (B, C),
            e.g. `keras_ssl.backbones.ResNet`.
        head: `keras_ssl.layers.ProjectionHead`. Defaults to SimCLRv2's
            3-layer head with 128 outputs.
        views: `keras_ssl.layers.Views` making exactly two views. Defaults
            to the `"simclr_imagenet"` preset at the encoder's input size.
        temperature: float > 0. NT-Xent temperature. Defaults to `0.1`.
        memory_size: int >= 0. Queue length; `0` turns the memory off.
            Defaults to `65536` (SimCLRv2 §3.1: "The memory buffer is set
            to 64K").
        momentum: float in [0, 1). EMA decay of the memory network.
            Defaults to `0.999`.
        memory_views: 1 or 2. Views whose memory-network projections are
            enqueued each step. `2` (default) keys both views, as a
            symmetric loss suggests; `1` keys the first view only, as
            MoCo's key encoder does, which halves the memory network's
            forward cost (the queue then refreshes half as fast).
        num_classes: optional int. Classes of the online linear probe;
            `None` trains no probe. Defaults to `None`.
        probe_learning_rate: float > 0 or `None`. The probe's constant
            learning rate; `None` steps the probe at the optimizer's own
            (scheduled) rate, as SimCLR does. Defaults to `0.01`.
        **kwargs: base `keras.Model` arguments.

    Example:
    ```python
    encoder = keras_ssl.backbones.ResNet(depth=18, stem="cifar",
                                         input_shape=(32, 32, 3))
    model = keras_ssl.models.SimCLRv2Pretrainer(
        encoder,
        views=keras_ssl.layers.Views.from_preset("simclr_cifar"),
        memory_size=4096,
        num_classes=10,
    )
    model.compile(optimizer=keras_ssl.optimizers.LARS(1.0))
    model.fit(stream, epochs=1)
    ```

    References:
        - [Chen et al., 2020. Big Self-Supervised Models are Strong
          Semi-Supervised Learners](https://arxiv.org/abs/2006.10029)
    """

    config_objects = ("encoder", "head", "views")
    config_values = (
        "temperature",
        "memory_size",
        "momentum",
        "num_classes",
        "memory_views",
        "probe_learning_rate",
    )
    metric_names = (
        "loss",
        "contrastive_loss",
        "contrastive_accuracy",
        "contrastive_entropy",
        "probe_loss",
        "probe_accuracy",
    )

    def __init__(
        self,
        encoder,
        head=None,
        views=None,
        temperature=0.1,
        memory_size=65536,
        momentum=0.999,
        num_classes=None,
        memory_views=2,
        probe_learning_rate=PROBE_LEARNING_RATE,
        **kwargs,
    ):
        _check_args(
            temperature, memory_size, momentum, memory_views, num_classes
        )
        if probe_learning_rate is not None:
            check_positive("probe_learning_rate", probe_learning_rate)
        super().__init__(**kwargs)
        # The layers made here follow the model's dtype policy.
        dtype = self.dtype_policy
        feature_shape = tuple(encoder.output.shape)
        image_size = encoder.input.shape[1] or 224
        # === Layers ===
        self.encoder = encoder
        self.head = head if head is not None else ProjectionHead(dtype=dtype)
        if not self.head.built:
            self.head.build(feature_shape)
        self.views = _two_views(views, image_size, dtype)
        self.queue = None
        if memory_size:
            self.momentum_encoder = clone_network(
                encoder, batch_statistics=True
            )
            self.momentum_head = clone_layer(
                self.head, feature_shape, batch_statistics=True
            )
            self.queue = MemoryQueue(
                memory_size, self.head.output_dim, with_ids=True
            )
            self.queue.build(None)
        self.probe = None
        if num_classes is not None:
            self.probe = keras.layers.Dense(
                num_classes, name="probe", dtype=dtype
            )
            self.probe.build(feature_shape)
        # === Config ===
        self.temperature = temperature
        self.memory_size = memory_size
        self.momentum = momentum
        self.num_classes = num_classes
        self.memory_views = memory_views
        self.probe_learning_rate = probe_learning_rate
        self.image_size = image_size
        self._probe_l2 = 0.0
        self.built = True

    def compile(self, optimizer="rmsprop", **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        self._probe_l2 = 0.0
        # Under mixed_float16 Keras wraps the optimizer in a
        # `LossScaleOptimizer`; LARS is the one inside.
        optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        if self.probe is not None and isinstance(optimizer, LARS):
            optimizer.exclude_variables(self.probe.trainable_weights)
            self._probe_l2 = optimizer.weight_decay_rate

    def _eval_images(self, images):
        x = to_float_images(images)
        if x.shape[1] != self.image_size or x.shape[2] != self.image_size:
            x = ops.image.resize(x, (self.image_size, self.image_size))
        return x

    def call(self, images, training=None):
        h = self.encoder(self._eval_images(images), training=training)
        outputs = {
            "embedding": h,
            "projection": self.head(h, training=training)[-1],
        }
        if self.probe is not None:
            outputs["logits"] = self.probe(h)
        return outputs

    def _update_memory_network(self):
        # As in MoCo, the memory network moves towards the online network
        # before this step's forward pass, which also keeps the moving
        # BatchNorm statistics of both networks in step.
        ema_update(
            self.momentum_encoder.weights + self.momentum_head.weights,
            self.encoder.weights + self.head.weights,
            self.momentum,
        )

    def _memory_negatives(self, views, ids):
        """The queue as it was before this step, its mask, this step's keys.

        The queue is read before this step's keys are written, and keys of
        a query's own image (same id) are masked out of its row.
        """
        negatives, valid = self.queue.read()
        mask = valid
        if ids is not None:
            own = ops.logical_and(
                ops.equal(ids[:, None], self.queue.read_ids()[None, :]),
                (ids >= 0)[:, None],
            )
            mask = ops.logical_and(valid[None, :], ops.logical_not(own))
        # The keyed views go through the memory network together, as the
        # online network sees them, so its batch statistics are over the
        # same images.
        batch = ops.shape(views[0])[0]
        keyed = views[: self.memory_views]
        x = keyed[0] if len(keyed) == 1 else ops.concatenate(keyed, axis=0)
        h = self.momentum_encoder(x, training=True)
        z = ops.stop_gradient(self.momentum_head(h, training=True)[-1])
        # Gathered view by view, so the queue receives all first views of
        # the global batch, then all second views, whatever the replicas.
        keys = ops.concatenate(
            [
                distribute.all_gather(z[index * batch : (index + 1) * batch])
                for index in range(len(keyed))
            ],
            axis=0,
        )
        key_ids = None
        if ids is not None:
            # Every keyed view of the global batch carries the same ids.
            key_ids = ops.tile(distribute.all_gather(ids), (len(keyed),))
        return negatives, mask, (keys, key_ids)

    def compute_ssl_loss(self, data, training=True):
        batch = unpack_batch(data)
        labels, ids = batch.labels, batch.image_ids()
        if self.queue is not None and training:
            self._update_memory_network()
        parts = [
            to_float_images(x)
            for x in (batch.unlabeled, batch.labeled)
            if x is not None
        ]
        images = ops.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
        view1, view2 = compiled_call(self.views, images, training)
        batch = ops.shape(view1)[0]
        h = self.encoder(ops.concatenate([view1, view2], 0), training=training)
        z = self.head(h, training=training)[-1]
        z1, z2 = z[:batch], z[batch:]
        negatives = mask = keys = None
        if self.queue is not None and training:
            negatives, mask, keys = self._memory_negatives((view1, view2), ids)
        elif self.queue is not None:
            negatives, mask = self.queue.read()
        contrastive, logs = nt_xent(
            z1,
            z2,
            temperature=self.temperature,
            negatives=negatives,
            negatives_mask=mask,
            return_metrics=True,
        )
        if keys is not None:
            self.queue.enqueue(keys[0], ids=keys[1])
        # The reported `loss` is the contrastive loss alone: the probe's
        # terms join the gradient but are reported as `probe_loss`.
        logs = dict(logs, contrastive_loss=contrastive, loss=contrastive)
        loss = contrastive
        if self.probe is not None and labels is not None:
            probe_loss, probe_accuracy = self._probe(h, labels, batch)
            logs.update(probe_loss=probe_loss, probe_accuracy=probe_accuracy)
            objective = probe_loss
            if self._probe_l2:
                kernel = ops.convert_to_tensor(self.probe.kernel)
                objective = objective + 0.5 * self._probe_l2 * ops.sum(
                    kernel**2
                )
            ratio = self._probe_rate_ratio(training)
            loss = loss + ops.cast(ratio, objective.dtype) * objective
        return loss, logs

    def _probe_rate_ratio(self, training):
        """`probe_learning_rate / rate` with the optimizer's current rate.

        The probe's loss (which reaches the probe's variables only) is
        multiplied by it, so that an optimizer whose step is linear in the
        gradient, such as LARS's plain SGD with momentum for the probe,
        steps the probe by `probe_learning_rate * g`.
        """
        optimizer = getattr(self, "optimizer", None)
        if (
            self.probe_learning_rate is None
            or not training
            or optimizer is None
        ):
            return 1.0
        rate = ops.cast(optimizer.learning_rate, "float32")
        # While the optimizer's rate is 0 (the first warm-up step) nothing
        # moves, the probe included; `where` avoids dividing by it.
        positive = rate > 0
        return ops.where(
            positive,
            self.probe_learning_rate / ops.where(positive, rate, 1.0),
            0.0,
        )

    def _probe(self, h, labels, batch):
        num_labeled = ops.shape(labels)[0]
        # The labeled images are the last rows of the first view.
        features = ops.stop_gradient(h[batch - num_labeled : batch])
        # The loss and accuracy in float32 under a mixed policy too, and
        # in float64 with the rest of a float64 model's loss.
        logits = self.probe(features)
        logits = ops.cast(logits, loss_dtype(logits))
        loss = ops.mean(
            keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True
            )
        )
        accuracy = ops.mean(
            ops.cast(
                ops.argmax(logits, -1) == ops.cast(labels, "int32"), "float32"
            )
        )
        return loss, accuracy

    def fit(self, x=None, *args, **kwargs):
        self._warn_if_memory_sees_itself(x)
        return super().fit(x, *args, **kwargs)

    def _warn_if_memory_sees_itself(self, x):
        count = _count_without_ids(x)
        if self.queue is None or count is None:
            return
        if self.memory_size > 0.1 * count:
            warnings.warn(
                f"`memory_size={self.memory_size}` exceeds 10% of the "
                f"{count} training images and the batches carry no image "
                "ids, so many queries will meet an earlier key of their own "
                "image among their negatives. Feed "
                "`keras_ssl.data.semi_supervised(..., image_ids=True)` "
                "batches, or use a smaller memory.",
                stacklevel=3,
            )


def _count_without_ids(x):
    """The number of images of an in-memory source without ids, or None."""
    if hasattr(x, "shape") and len(getattr(x, "shape", ())) == 4:
        return int(x.shape[0])
    images = getattr(x, "unlabeled_images", None)
    if images is not None and not getattr(x, "image_ids", False):
        return len(images)
    images = getattr(x, "x", None)
    if images is not None and hasattr(images, "shape"):
        return int(images.shape[0])
    return None
