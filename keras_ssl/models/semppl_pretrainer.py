"""SemPPL pretraining: semantic positives from k-NN pseudo-labels."""

import math

import keras
from keras import ops

from keras_ssl import distribute
from keras_ssl._checks import check_in_range
from keras_ssl._checks import check_positive_int
from keras_ssl._checks import is_int
from keras_ssl.layers.memory_queue import MemoryQueue
from keras_ssl.layers.projection_head import ProjectionHead
from keras_ssl.layers.random_resized_crop import normalize_size
from keras_ssl.layers.views import Views
from keras_ssl.losses.semppl import VOTE_FRACTIONS
from keras_ssl.losses.semppl import SemPPL
from keras_ssl.losses.semppl import global_anchor_indices
from keras_ssl.losses.semppl import pseudo_label_quality
from keras_ssl.losses.semppl import pseudo_labels
from keras_ssl.losses.semppl import sample_negative_indices
from keras_ssl.losses.semppl import semantic_positives
from keras_ssl.losses.semppl import semppl
from keras_ssl.models._compiled_call import compiled_call
from keras_ssl.models.image_utils import to_float_images
from keras_ssl.models.image_utils import unpack_batch
from keras_ssl.models.momentum import clone_layer
from keras_ssl.models.momentum import clone_network
from keras_ssl.models.momentum import ema_update
from keras_ssl.models.ssl_model import SSLModel
from keras_ssl.ops.math import l2_normalize


def _mlp(hidden_dim, output_dim, name, dtype=None):
    """SemPPL's projector / predictor (§2.1, Appendix D.1).

    "2 linear layers—the first one followed by batch normalization and
    rectified linear activation with output sizes 4096 and 256"; Keras's
    default initializers and BatchNorm settings.
    """
    return ProjectionHead(
        num_layers=2,
        output_dim=output_dim,
        hidden_dim=hidden_dim,
        bn_momentum=0.99,
        bn_epsilon=1e-3,
        synchronized_bn=True,
        use_bias=True,
        batch_norm=[True, False],
        kernel_initializer="glorot_uniform",
        dtype=dtype,
        name=name,
    )


def _last(outputs):
    # `ProjectionHead` returns every activation; a plain MLP one tensor.
    return outputs[-1] if isinstance(outputs, (list, tuple)) else outputs


def _output_dim(layer, input_dim):
    shape = layer.compute_output_shape((None, input_dim))
    if isinstance(shape, list) and isinstance(shape[-1], (tuple, list)):
        shape = shape[-1]
    return int(shape[-1])


def _build(layer, input_dim):
    if not layer.built:
        layer.build((None, input_dim))
    return layer


def _clone(layer, input_dim, batch_statistics):
    if isinstance(layer, keras.Model):
        return clone_network(layer, batch_statistics=batch_statistics)
    return clone_layer(
        layer, (None, input_dim), batch_statistics=batch_statistics
    )


def _check_args(num_classes, queue_size, k, num_semantic_positives):
    if not is_int(num_classes) or num_classes < 2:
        raise ValueError(
            "`num_classes` must be an int >= 2. Received: "
            f"num_classes={num_classes}"
        )
    check_positive_int("queue_size", queue_size)
    check_positive_int("k", k)
    if k > queue_size:
        raise ValueError(
            f"`k` must be at most the queue size ({queue_size}): the k-NN "
            f"looks for k neighbours in the queue. Received: k={k}"
        )
    if not is_int(num_semantic_positives) or num_semantic_positives < 0:
        raise ValueError(
            "`num_semantic_positives` must be an int >= 0. Received: "
            f"num_semantic_positives={num_semantic_positives}"
        )


@keras.saving.register_keras_serializable(package="keras_ssl")
class SemPPLPretrainer(SSLModel):
    """SemPPL pretraining: RELICv2 with semantic positives (Bošnjak 2023).

    Each step makes SemPPL's views of every image on the device (by default
    4 large and 2 small views, Appendix E), runs the large and small views
    through the online network (encoder `f` -> projector `g` -> predictor
    `h`) and the large views through the target network (EMA copies
    `f_t`, `g_t`, decay `momentum`, updated at the start of each step), and
    minimises eq. (10) (`keras_ssl.losses.semppl`) with augmentation
    positives, semantic positives and RELICv2's invariance terms.

    Semantic positives (§2, Appendix C):
    1. For each large view `i` a FIFO `MemoryQueue` of `queue_size` slots
       holds target projections (l2-normalised) of labeled images with their
       labels. Each step enqueues the labeled images of the global batch,
       gathered from every replica, *before* the k-NN (pseudo-code lines
       22-23 come before line 32), so the queue is used from the first
       step. Slots start as random unit vectors, as the paper's queue does,
       but are marked invalid until written: they never vote and never
       become positives.
    2. Pseudo-labels: every unlabeled image's online prediction of each
       large view is matched (cosine k-NN, `k` neighbours) against each
       large view's queue: `L^2` lookups whose votes are summed ("view
       voting"); ties go to the lowest class id (`majority_vote`).
       Labeled images use their labels.
    3. Each image draws `num_semantic_positives` queue slots uniformly among
       the valid slots with its (pseudo-)label, independently (with
       replacement). The same slots are used in every large view's queue
       (they are filled in lockstep, so a slot holds the same image in all
       of them) and for every view pair. An image whose label has no entry
       gets no semantic term (`semantic_positive_coverage` is the fraction
       that has one), never a positive of another class.
    4. Negatives: `num_negatives` distinct other images of the global batch
       per image, uniformly, shared by all view pairs and both positive
       kinds (the KL terms need the same candidates on both sides).

    Randomness is drawn for the global batch from one `SeedGenerator` that
    every replica advances alike, and each replica takes its rows; images
    are ordered globally as all unlabeled images, then all labeled ones.
    So the samples do not depend on how the batch is split over replicas.

    Batches are the dicts of `keras_ssl.data.semi_supervised`: `"unlabeled"`
    (optional), `"labeled"` and `"labels"` (required: SemPPL needs labeled
    images in every batch). An optional `"unlabeled_labels"` with the true
    labels of the unlabeled images is used for monitoring only, never in
    the loss: `pseudo_label_accuracy`, and for each voting threshold of
    Fig. 3, expressed as a fraction `f` of the `L^2·k` votes an image gets
    (`f` in 25, 50, 75, 100 %), `pseudo_label_precision_f` (the accuracy
    of the pseudo-labels whose top class has at least `ceil(f·L^2·k)`
    votes) and `pseudo_label_recall_f` (the fraction of all unlabeled
    images that reach the threshold *and* are right). These are pooled
    over the epoch (weighted by their counts), not averages of per-batch
    ratios. Without `"unlabeled_labels"` these metrics are absent from the
    logs.

    Other choices the paper leaves open:
    - The target network's BatchNorm layers normalise each batch by its own
      statistics during training (`target_batch_statistics=True`), as the
      BYOL code base RELICv2 builds on does; their moving statistics are
      the EMA of the online network's and serve only `training=False`
      calls. In inference mode instead, the target starts from moving
      statistics of (0, 1): its projections of different images are nearly
      parallel (mean cosine 0.97 on the digits) and, at lambda = 5, the
      invariance term holds the network at the point where every candidate
      scores alike (docs/benchmarks.md).
    - Views are large if they have the largest size of `views`, small
      otherwise; the encoder must accept both sizes (e.g. an input shape
      `(None, None, 3)`) when there are small views.
    - `queue_size` defaults to `20·B` for the paper's `B = 4096` (Appendix
      D.1: "queue capacity C = 20B"); `B` is the whole global batch,
      labeled plus unlabeled images (§2 defines the batch of size `B` as
      holding both). Set it to `20·B` of your batch.

    `call(images)` returns the `"embedding"` (encoder output), the
    online `"projection"` and `"prediction"`.

    Args:
        encoder: `keras.Model` mapping float images to features `(B, F)`,
            e.g. `keras_ssl.backbones.ResNet`.
        num_classes: int >= 2. Number of classes of the labels.
        projector: optional layer or model `g` (a
            `keras_ssl.layers.ProjectionHead` works: its last output is
            used). Defaults to the paper's MLP, 4096 -> 256 with BatchNorm
            (synchronized on TensorFlow) and ReLU after the first layer: a
            `ProjectionHead(2, 256, 4096, use_bias=True,
            batch_norm=[True, False])`.
        predictor: optional layer or model `h`. Defaults to the same MLP.
        views: `keras_ssl.layers.Views`. Defaults to the `"semppl_imagenet"`
            preset at the encoder's input size (224 if unknown).
        queue_size: int >= 1. Capacity `C` of each large view's queue.
            Defaults to `81920` (20 x 4096).
        k: int in [1, queue_size]. Neighbours of the k-NN. Defaults to `1`.
        num_semantic_positives: int >= 0. Defaults to `3`.
        num_negatives: int >= 1. Negatives per image. Defaults to `10`.
        temperature: float > 0. `tau`. Defaults to `0.2`.
        alpha: float >= 0. Weight of the semantic positives. Defaults to
            `0.2`.
        invariance_scale: float >= 0. `lambda` of eq. (10). Defaults to `5.0`.
        contrastive_scale: float >= 0. `c` of eq. (10). Defaults to `0.3`.
        momentum: float in [0, 1). EMA decay of the target network.
            Defaults to `0.996`.
        target_batch_statistics: bool. Whether the target network's
            BatchNorm layers use the batch's statistics in training steps
            (synchronized across replicas where the online network's are).
            Defaults to `True`.
        seed: optional int. Seed of the negative and semantic-positive
            sampling. Defaults to `None`.
        **kwargs: base `keras.Model` arguments.

    Example:
    ```python
    encoder = keras_ssl.backbones.ResNet(depth=18, stem="cifar",
                                         input_shape=(None, None, 3))
    model = keras_ssl.models.SemPPLPretrainer(
        encoder,
        num_classes=10,
        views=keras_ssl.layers.Views.from_preset("semppl_imagenet", size=32),
        queue_size=20 * 512,
    )
    model.compile(optimizer=keras_ssl.optimizers.LARS(0.3))
    model.fit(stream, epochs=1)  # dicts from keras_ssl.data.semi_supervised
    ```

    References:
        - [Bošnjak et al., 2023. SemPPL: Predicting Pseudo-Labels for
          Better Contrastive Representations](https://arxiv.org/abs/2301.05158)
        - [Tomasev et al., 2022. Pushing the limits of self-supervised
          ResNets (RELICv2)](https://arxiv.org/abs/2201.05119)
    """

    config_objects = ("encoder", "projector", "predictor", "views")
    config_values = (
        "num_classes",
        "queue_size",
        "k",
        "num_semantic_positives",
        "num_negatives",
        "temperature",
        "alpha",
        "invariance_scale",
        "contrastive_scale",
        "momentum",
        "target_batch_statistics",
        "seed",
    )
    metric_names = (
        "loss",
        "augmentation_loss",
        "semantic_loss",
        "invariance_loss",
        "semantic_positive_coverage",
        "pseudo_label_accuracy",
    ) + tuple(
        f"pseudo_label_{kind}_{f}"
        for f in VOTE_FRACTIONS
        for kind in ("precision", "recall")
    )

    def __init__(
        self,
        encoder,
        num_classes,
        projector=None,
        predictor=None,
        views=None,
        queue_size=81920,
        k=1,
        num_semantic_positives=3,
        num_negatives=10,
        temperature=0.2,
        alpha=0.2,
        invariance_scale=5.0,
        contrastive_scale=0.3,
        momentum=0.996,
        target_batch_statistics=True,
        seed=None,
        **kwargs,
    ):
        _check_args(num_classes, queue_size, k, num_semantic_positives)
        check_positive_int("num_negatives", num_negatives)
        check_in_range("momentum", momentum, 0, 1, include_high=False)
        if not isinstance(target_batch_statistics, bool):
            raise ValueError(
                "`target_batch_statistics` must be a bool. Received: "
                f"target_batch_statistics={target_batch_statistics}"
            )
        # The loss checks its own arguments.
        SemPPL(temperature, alpha, invariance_scale, contrastive_scale)
        super().__init__(**kwargs)
        feature_dim = int(encoder.output.shape[-1])
        # === Layers ===
        self.encoder = encoder
        projection_dim = self._build_heads(projector, predictor, feature_dim)
        if views is None:
            size = encoder.input.shape[1] or 224
            views = Views.from_preset(
                "semppl_imagenet", size=size, dtype=self.dtype_policy
            )
        self._set_views(views)
        self._build_target_network(
            feature_dim, projection_dim, queue_size, target_batch_statistics
        )
        self.seed_generator = keras.random.SeedGenerator(seed)
        # === Config ===
        self.num_classes = num_classes
        self.queue_size = queue_size
        self.k = k
        self.num_semantic_positives = num_semantic_positives
        self.num_negatives = num_negatives
        self.temperature = temperature
        self.alpha = alpha
        self.invariance_scale = invariance_scale
        self.contrastive_scale = contrastive_scale
        self.momentum = momentum
        self.target_batch_statistics = target_batch_statistics
        self.seed = seed
        self.built = True

    def _build_heads(self, projector, predictor, feature_dim):
        """Sets the projector `g` and predictor `h`; returns the width of
        the projections."""
        if projector is None:
            projector = _mlp(4096, 256, "projector", self.dtype_policy)
        self.projector = _build(projector, feature_dim)
        projection_dim = _output_dim(self.projector, feature_dim)
        if predictor is None:
            predictor = _mlp(
                4096, projection_dim, "predictor", self.dtype_policy
            )
        self.predictor = _build(predictor, projection_dim)
        prediction_dim = _output_dim(self.predictor, projection_dim)
        if prediction_dim != projection_dim:
            raise ValueError(
                "The predictor must map projections to their own width "
                f"({projection_dim}): its outputs are compared with target "
                "projections. Received: predictor output dim="
                f"{prediction_dim}"
            )
        return projection_dim

    def _set_views(self, views):
        """Sets `views`, which of them are large (the largest size) and
        small, and the size of the large ones."""
        self.views = views
        areas = [math.prod(normalize_size(s.size)) for s in views.specs]
        self.large_views = [i for i, a in enumerate(areas) if a == max(areas)]
        self.small_views = [i for i, a in enumerate(areas) if a != max(areas)]
        self.image_size = normalize_size(views.specs[self.large_views[0]].size)

    def _build_target_network(
        self, feature_dim, projection_dim, queue_size, batch_statistics
    ):
        """The EMA copies `f_t`, `g_t` and one queue per large view."""
        self.target_encoder = clone_network(
            self.encoder, batch_statistics=batch_statistics
        )
        self.target_projector = _clone(
            self.projector, feature_dim, batch_statistics
        )
        # One attribute per queue, not a list: Keras 3 leaves layers held in
        # lists out of `tf.train.Checkpoint`s (they are in `.keras` files).
        for i in range(len(self.large_views)):
            queue = MemoryQueue(
                queue_size, projection_dim, with_labels=True, name=f"queue_{i}"
            )
            setattr(self, f"queue_{i}", queue)

    @property
    def queues(self):
        """The `MemoryQueue` of each large view, in view order."""
        return [
            getattr(self, f"queue_{i}") for i in range(len(self.large_views))
        ]

    # --- inference -------------------------------------------------------
    def _eval_images(self, images):
        x = to_float_images(images)
        if tuple(x.shape[1:3]) != self.image_size:
            x = ops.image.resize(x, self.image_size)
        return x

    def call(self, images, training=None):
        h = self.encoder(self._eval_images(images), training=training)
        z = _last(self.projector(h, training=training))
        return {
            "embedding": h,
            "projection": z,
            "prediction": _last(self.predictor(z, training=training)),
        }

    # --- networks ------------------------------------------------------
    def _online(self, views, training):
        """Online predictions `h(g(f(x)))` of each view, one pass."""
        if not views:
            return []
        h = self.encoder(ops.concatenate(views, axis=0), training=training)
        z = _last(self.projector(h, training=training))
        p = _last(self.predictor(z, training=training))
        return ops.split(p, len(views), axis=0)

    def _target(self, views, training):
        """Target projections `g_t(f_t(x))` of each view (no gradient)."""
        h = self.target_encoder(
            ops.concatenate(views, axis=0), training=training
        )
        z = _last(self.target_projector(h, training=training))
        z = l2_normalize(ops.stop_gradient(z))
        return ops.split(z, len(views), axis=0)

    def _update_target_network(self):
        # BYOL / RELICv2: the target moves towards the online network before
        # this step's forward pass (as this library's momentum networks).
        ema_update(
            self.target_encoder.weights + self.target_projector.weights,
            self.encoder.weights + self.projector.weights,
            self.momentum,
        )

    # --- the step ------------------------------------------------------
    def _unpack(self, data):
        batch = unpack_batch(data)
        if batch.labeled is None or not batch.received.startswith("dict"):
            raise ValueError(
                "SemPPLPretrainer needs labeled images in every batch: a dict "
                "with 'labeled' and 'labels' (and usually 'unlabeled'), as "
                f"keras_ssl.data.semi_supervised yields. Received: "
                f"{batch.received}"
            )
        if batch.labels is None:
            raise ValueError(
                "The batch has 'labeled' images but no 'labels'. Received: "
                f"{batch.received}"
            )
        if batch.labeled.shape[0] == 0:
            raise ValueError(
                "SemPPLPretrainer needs labeled images in every batch. "
                f"Received: labeled.shape={tuple(batch.labeled.shape)}"
            )
        return (
            batch.unlabeled,
            batch.labeled,
            ops.cast(batch.labels, "int32"),
            batch.unlabeled_labels,
        )

    def _check_batch(self, num_unlabeled, num_labeled):
        # Static checks at trace time, i.e. before the first step runs.
        if num_unlabeled is None or num_labeled is None:
            # The global order of the images, the gathers and the sampled
            # indices are laid out from the batch sizes.
            raise ValueError(
                "SemPPLPretrainer needs batches of static size (e.g. "
                "`batch(n, drop_remainder=True)`, or a keras_ssl.data "
                "stream's `.to_tf_dataset()` on TensorFlow, where Keras "
                "gives a stream passed as is an unknown batch size). "
                "Received: unlabeled batch size="
                f"{num_unlabeled}, labeled batch size={num_labeled}"
            )
        replicas = distribute.num_replicas()
        if replicas * num_labeled > self.queue_size:
            raise ValueError(
                "`queue_size` must hold at least the labeled images of one "
                f"global batch ({replicas * num_labeled}). Received: "
                f"queue_size={self.queue_size}"
            )
        num_images = replicas * (num_unlabeled + num_labeled)
        if self.num_negatives >= num_images:
            raise ValueError(
                "`num_negatives` must be smaller than the global batch "
                f"({num_images} images). Received: "
                f"num_negatives={self.num_negatives}"
            )

    def _global_order(self, x, num_unlabeled):
        """Rows of the global batch: all unlabeled, then all labeled."""
        parts = [x[:num_unlabeled]] if num_unlabeled else []
        parts.append(x[num_unlabeled:])
        parts = [distribute.all_gather(p) for p in parts]
        return ops.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]

    def _update_queues(self, targets, labels, num_unlabeled):
        global_labels = distribute.all_gather(labels)
        for queue, target in zip(self.queues, targets):
            global_labeled = distribute.all_gather(target[num_unlabeled:])
            queue.enqueue(global_labeled, global_labels)

    def _embed(self, unlabeled, labeled, training):
        """Online predictions of the large and small views, and targets."""
        parts = [
            to_float_images(x) for x in (unlabeled, labeled) if x is not None
        ]
        images = ops.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
        views = compiled_call(self.views, images, training)
        large = [views[i] for i in self.large_views]
        small = [views[i] for i in self.small_views]
        online_large = self._online(large, training)
        online_small = self._online(small, training)
        return online_large, online_small, self._target(large, training)

    def compute_ssl_loss(self, data, training=True):
        unlabeled, labeled, labels, true_labels = self._unpack(data)
        num_unlabeled = 0 if unlabeled is None else unlabeled.shape[0]
        num_labeled = labeled.shape[0]
        self._check_batch(num_unlabeled, num_labeled)
        if training:
            self._update_target_network()
        online_large, online_small, targets = self._embed(
            unlabeled, labeled, training
        )
        if training:
            self._update_queues(targets, labels, num_unlabeled)
        global_targets = [self._global_order(t, num_unlabeled) for t in targets]
        memory = [queue.read() for queue in self.queues]
        values = [m[0] for m in memory]
        valid, queue_labels = memory[0][1], memory[0][2]
        anchor_labels, votes = self._anchor_labels(
            online_large, values, queue_labels, valid, labels, num_unlabeled
        )
        anchors = global_anchor_indices(
            num_unlabeled,
            num_labeled,
            distribute.replica_id(),
            distribute.num_replicas(),
        )
        num_global = ops.shape(global_targets[0])[0]
        negatives = self._negatives(anchors, num_global)
        positives, has_positive = self._semantic_positives(
            anchors, anchor_labels, values, queue_labels, valid, num_global
        )
        loss, logs = semppl(
            online_large,
            global_targets,
            negatives,
            online_small=online_small,
            semantic_positives=positives,
            semantic_mask=has_positive,
            anchor_indices=anchors,
            temperature=self.temperature,
            alpha=self.alpha,
            invariance_scale=self.invariance_scale,
            contrastive_scale=self.contrastive_scale,
            return_metrics=True,
        )
        logs["semantic_positive_coverage"] = ops.mean(
            ops.cast(has_positive, "float32")
        )
        if votes is not None and true_labels is not None:
            per_image = len(self.large_views) ** 2 * self.k
            logs.update(pseudo_label_quality(votes, true_labels, per_image))
        return loss, logs

    def _negatives(self, anchors, num_global):
        # Drawn for the global batch, so that every replica draws alike.
        noise = keras.random.uniform(
            (num_global, num_global), seed=self.seed_generator
        )
        return sample_negative_indices(
            ops.take(noise, anchors, axis=0), anchors, self.num_negatives
        )

    def _anchor_labels(
        self, online_large, values, queue_labels, valid, labels, num_unlabeled
    ):
        """Pseudo-labels (view voting) then labels, and the votes."""
        if not num_unlabeled:
            return labels, None
        pseudo, votes = pseudo_labels(
            [ops.stop_gradient(o[:num_unlabeled]) for o in online_large],
            values,
            queue_labels,
            valid,
            self.num_classes,
            k=self.k,
        )
        return ops.concatenate([pseudo, labels], 0), votes

    def _semantic_positives(
        self, anchors, anchor_labels, values, queue_labels, valid, num_global
    ):
        # Coverage does not depend on the draws: with no positives to draw,
        # a zero `uniform` still tells which labels have queue entries.
        draws = max(self.num_semantic_positives, 1)
        if self.num_semantic_positives:
            uniform = keras.random.uniform(
                (num_global, draws), seed=self.seed_generator
            )
            uniform = ops.take(uniform, anchors, axis=0)
        else:
            uniform = ops.zeros((ops.shape(anchors)[0], 1))
        positives, has_positive = semantic_positives(
            uniform,
            anchor_labels,
            values,
            queue_labels,
            valid,
            self.num_classes,
        )
        if not self.num_semantic_positives:
            return None, has_positive
        return positives, has_positive
