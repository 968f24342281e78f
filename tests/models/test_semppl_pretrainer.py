import concurrent.futures
import os
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_ssl
from keras_ssl.layers import ProjectionHead
from keras_ssl.layers import Views
from keras_ssl.layers import ViewSpec
from keras_ssl.models import SemPPLPretrainer
from keras_ssl.testing import TestCase
from keras_ssl.testing import run_in_subprocess
from tests.models.conftest import tiny_encoder

# Views that are plain resizes, so a test can recompute what the model saw.
FIXED = dict(
    scale=(1.0, 1.0),
    ratio=(1.0, 1.0),
    flip=False,
    color_strength=0.0,
    p_grayscale=0.0,
    blur_p=0.0,
)


def mlp(input_dim, dim=4, hidden=8):
    """The paper's MLP shape (Dense, BN, ReLU, Dense), tiny."""
    network = keras.Sequential(
        [
            keras.layers.Dense(hidden),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Dense(dim),
        ]
    )
    network.build((None, input_dim))
    return network


def make_model(fixed=False, small=True, **kwargs):
    spec = dict(FIXED) if fixed else {}
    specs = [ViewSpec(16, **spec), ViewSpec(16, **spec)]
    if small:
        specs.append(ViewSpec(8, **spec))
    config = dict(
        num_classes=3,
        projector=mlp(8),
        predictor=mlp(4),
        views=Views(specs, seed=1),
        queue_size=6,
        num_negatives=5,
        seed=2,
    )
    config.update(kwargs)
    return SemPPLPretrainer(tiny_encoder(size=None), **config)


@pytest.fixture
def semi_batch(batch):
    return dict(batch, unlabeled_labels=np.array([0, 1, 2, 0, 1, 2, 0, 1]))


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


class TestSemPPLPretrainer(TestCase):
    def test_fit_reports_every_metric(self, semi_batch):
        # A `ProjectionHead` projector works too (its last output is used).
        model = make_model(projector=ProjectionHead(num_layers=2, output_dim=4))
        # Eager keeps this file fast; the distributed test below runs
        # `fit` compiled.
        model.compile(
            optimizer=keras_ssl.optimizers.LARS(0.1), run_eagerly=True
        )
        ds = tf.data.Dataset.from_tensors(semi_batch).repeat(2)
        history = model.fit(ds, epochs=1, verbose=0, shuffle=False).history
        for name in SemPPLPretrainer.metric_names:
            assert name in history, name
            assert np.all(np.isfinite(history[name])), name
        for name in SemPPLPretrainer.metric_names[4:]:
            assert 0.0 <= history[name][0] <= 1.0, name
        # Labeled images always find their own label (they were enqueued
        # before the k-NN), so coverage is at least their share.
        assert history["semantic_positive_coverage"][0] >= 4 / 12
        # 2 steps x 4 labeled images in a queue of 6: full, wrapped
        # (slots 0-3, then 4, 5, 0, 1).
        for queue in model.queues:
            _, valid, labels = queue.read()
            assert np.all(_numpy(valid))
            assert list(_numpy(labels)) == [2, 1, 2, 1, 0, 1]

    def test_no_pseudo_label_metrics_without_held_out_labels(self, batch):
        model = make_model(small=False)
        model.compile(
            optimizer=keras_ssl.optimizers.LARS(0.1), run_eagerly=True
        )
        ds = tf.data.Dataset.from_tensors(batch)
        history = model.fit(ds, epochs=1, verbose=0, shuffle=False).history
        assert np.isfinite(history["loss"][0])
        assert "semantic_positive_coverage" in history
        # Nothing to compare the pseudo-labels with: absent, not 0.
        assert not [k for k in history if k.startswith("pseudo_label")]

    def test_queue_holds_target_projections_of_labeled_images(self, batch):
        model = make_model(fixed=True, queue_size=7)
        model.compile(optimizer="sgd", run_eagerly=True)
        model.train_on_batch(batch)
        # The target normalises by the statistics of the whole batch (both
        # fixed views are the images themselves, so one copy has the same).
        images = np.concatenate([batch["unlabeled"], batch["labeled"]])
        h = model.target_encoder(
            images.astype("float32") / 255.0, training=True
        )
        expected = _unit(_numpy(model.target_projector(h, training=True)))[-4:]
        for queue in model.queues:
            values, valid, labels = (_numpy(x) for x in queue.read())
            self.assertAllClose(values[:4], expected, atol=1e-5)
            assert list(labels[:4]) == [0, 1, 2, 1]
            assert list(valid) == [True] * 4 + [False] * 3
            assert int(_numpy(queue.pointer)) == 4

    def test_pseudo_labels_and_fig3_metrics(self, semi_batch):
        model = make_model(fixed=True, small=False, queue_size=8)
        rng = np.random.default_rng(0)
        contents = []
        for queue in model.queues:
            values = rng.normal(size=(5, 4)).astype("float32")
            queue.enqueue(values, np.array([0, 1, 2, 0, 1]))
            contents.append(values)
        # Evaluation: no enqueue, and both large views are the same image.
        _, logs = model.compute_ssl_loss(semi_batch, training=False)
        queries = _numpy(model(semi_batch["unlabeled"])["prediction"])
        labels = np.array([0, 1, 2, 0, 1])
        votes = np.zeros((8, 3))
        for values in contents:
            nearest = np.argmax(_unit(queries) @ _unit(values).T, axis=1)
            # Two query views, each casting its vote against this queue.
            np.add.at(votes, (np.arange(8), labels[nearest]), 2)
        predicted = np.argmax(votes, axis=1)  # no ties: 4 votes, 2 queues
        correct = predicted == semi_batch["unlabeled_labels"]
        self.assertAllClose(logs["pseudo_label_accuracy"][0], correct.mean())
        top = votes.max(axis=1)
        for fraction, threshold in ((25, 1), (50, 2), (75, 3), (100, 4)):
            confident = top >= threshold
            hits = np.sum(confident & correct)
            precision, count = logs[f"pseudo_label_precision_{fraction}"]
            self.assertAllClose(count, confident.sum())
            self.assertAllClose(precision, hits / max(confident.sum(), 1))
            recall, _ = logs[f"pseudo_label_recall_{fraction}"]
            self.assertAllClose(recall, hits / 8)

    def test_anchors_without_queue_entries_get_no_positive(self, batch):
        model = make_model(queue_size=8)
        for queue in model.queues:
            queue.enqueue(
                np.random.default_rng(0).normal(size=(3, 4)),
                np.array([0, 1, 0]),
            )
        # Without enqueueing, class 2 has no entry: the labeled image with
        # label 2 is the only anchor without a positive (the unlabeled
        # images' pseudo-labels can only be 0 or 1).
        _, logs = model.compute_ssl_loss(batch, training=False)
        self.assertAllClose(logs["semantic_positive_coverage"], 11 / 12)

    def test_no_semantic_positives(self, batch):
        model = make_model(num_semantic_positives=0)
        loss, logs = model.compute_ssl_loss(batch, training=False)
        self.assertAllClose(logs["semantic_loss"], 0.0)
        assert np.isfinite(_numpy(loss))

    def test_target_network_is_an_ema_of_the_online_network(self, batch):
        model = make_model(momentum=0.5)
        model.compile(optimizer="sgd", run_eagerly=True)
        online = []
        for _ in range(3):
            online.append(
                [_numpy(w) for w in model.encoder.weights]
                + [_numpy(w) for w in model.projector.weights]
            )
            model.train_on_batch(batch)
        expected = [0.25 * a + 0.25 * b + 0.5 * c for a, b, c in zip(*online)]
        target = model.target_encoder.weights + model.target_projector.weights
        for actual, want in zip(target, expected):
            self.assertAllClose(actual, want, atol=1e-6)
        trainable = {id(v) for v in model.trainable_variables}
        for v in target + [w for q in model.queues for w in q.weights]:
            assert id(v) not in trainable

    @pytest.mark.parametrize("batch_statistics", [True, False])
    def test_target_batch_statistics(self, batch_statistics):
        model = make_model(target_batch_statistics=batch_statistics)
        rng = np.random.default_rng(3)
        views = [rng.uniform(size=(6, 16, 16, 3)).astype("float32")] * 2
        train = np.stack(_numpy(model._target(views, training=True)))
        infer = np.stack(_numpy(model._target(views, training=False)))
        # A fresh network's moving statistics (0, 1) are not the batch's:
        # training steps see other projections only on batch statistics.
        assert (np.abs(train - infer).max() > 1e-3) == batch_statistics

    def test_saving_keeps_queues_and_target_network(self, batch):
        model = make_model()
        model.compile(optimizer="sgd", run_eagerly=True)
        model.train_on_batch(batch)
        reloaded = self.run_model_saving(model, batch["unlabeled"])
        state = self._state(model)
        for a, b in zip(self._state(reloaded), state):
            self.assertAllClose(a, b)
        self.run_config_round_trip(model)
        # tf.train.Checkpoint: restore into a fresh model.
        fresh = make_model()
        with tempfile.TemporaryDirectory() as tmp:
            path = tf.train.Checkpoint(model=model).write(
                os.path.join(tmp, "ckpt")
            )
            status = tf.train.Checkpoint(model=fresh).read(path)
            status.assert_existing_objects_matched()
        for a, b in zip(self._state(fresh), state):
            self.assertAllClose(a, b)

    @staticmethod
    def _state(model):
        return [
            _numpy(w)
            for w in model.target_encoder.weights
            + model.target_projector.weights
            + [w for q in model.queues for w in q.weights]
        ]

    def test_default_heads_follow_the_paper(self):
        model = SemPPLPretrainer(
            tiny_encoder(), num_classes=3, queue_size=4, k=2
        )
        kinds = (
            keras.layers.Dense,
            keras.layers.BatchNormalization,
            keras.layers.ReLU,
            keras.layers.Dense,
        )
        layers = model.projector.layers
        assert len(layers) == len(kinds)
        for layer, kind in zip(layers, kinds):
            assert isinstance(layer, kind), (layer, kind)
        assert model.projector.layers[0].units == 4096
        assert model.queues[0].dim == 256
        assert len(model.queues) == 4 and len(model.small_views) == 2

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"alpha": -0.2}, "alpha=-0.2"),
            ({"invariance_scale": -5.0}, "invariance_scale=-5.0"),
            ({"contrastive_scale": -0.3}, "contrastive_scale=-0.3"),
            ({"k": 7}, "k=7"),
            ({"k": 0}, "k=0"),
            ({"queue_size": 0}, "queue_size=0"),
            ({"num_classes": 1}, "num_classes=1"),
            ({"temperature": 0}, "temperature=0"),
            ({"momentum": 1.0}, "momentum=1.0"),
            (
                {"target_batch_statistics": "yes"},
                "target_batch_statistics=yes",
            ),
            ({"num_semantic_positives": -1}, "num_semantic_positives=-1"),
            ({"num_negatives": 0}, "num_negatives=0"),
        ],
    )
    def test_bad_arguments(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            make_model(**kwargs)

    @pytest.mark.parametrize(
        "case, match",
        [
            ("unlabeled_only", "needs labeled images"),
            ("no_labels", "no 'labels'"),
            ("small_queue", "queue_size=3"),
            ("few_images", "num_negatives=12"),
        ],
    )
    def test_bad_batches(self, batch, case, match):
        kwargs = {"small_queue": {"queue_size": 3}}.get(case, {})
        if case == "few_images":
            kwargs = {"num_negatives": 12, "queue_size": 6}
        model = make_model(**kwargs)
        model.compile(optimizer="sgd", run_eagerly=True)
        data = dict(batch)
        if case == "unlabeled_only":
            data = batch["unlabeled"]
        if case == "no_labels":
            del data["labels"]
        with pytest.raises(ValueError, match=match):
            model.train_on_batch(data)

    def test_rejects_batches_of_unknown_size(self, batch):
        model = make_model()
        spec = {
            key: tf.TensorSpec((None,) + value.shape[1:], value.dtype)
            for key, value in batch.items()
        }
        step = tf.function(
            lambda data: model.compute_ssl_loss(data)[0],
            input_signature=[spec],
        )
        with pytest.raises(ValueError, match="static size"):
            step.get_concrete_function()


_DISTRIBUTED_STEP = """
import keras_ssl
from keras_ssl.layers import ProjectionHead, Views, ViewSpec
from keras_ssl.models import SemPPLPretrainer
from tests.models.conftest import tiny_encoder

NUM_REPLICAS = {num_replicas}
keras.utils.set_random_seed(0)
# Deterministic views, so that 1 and 2 replicas see the same images; the
# sampling of negatives and positives is drawn for the global batch.
fixed = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False,
             color_strength=0.0, p_grayscale=0.0, blur_p=0.0)
specs = [ViewSpec(16, **fixed), ViewSpec(16, **fixed), ViewSpec(8, **fixed)]
strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"][:NUM_REPLICAS])
with strategy.scope():
    predictor = keras.Sequential([
        keras.layers.Dense(8),
        keras.layers.BatchNormalization(synchronized=True),
        keras.layers.ReLU(),
        keras.layers.Dense(4),
    ])
    predictor.build((None, 4))
    model = SemPPLPretrainer(
        tiny_encoder(size=None, synchronized=True),
        num_classes=3,
        projector=ProjectionHead(num_layers=2, output_dim=4,
                                 synchronized_bn=True),
        predictor=predictor,
        views=Views(specs),
        queue_size=10,
        num_negatives=5,
        momentum=0.5,
        seed=3,
    )
    model.compile(optimizer=keras_ssl.optimizers.LARS(0.5, weight_decay=1e-4))
rng = np.random.default_rng(0)
batch = {{
    "unlabeled": rng.integers(0, 256, (8, 16, 16, 3)).astype("uint8"),
    "labeled": rng.integers(0, 256, (4, 16, 16, 3)).astype("uint8"),
    "labels": np.array([0, 1, 2, 1], "int32"),
    "unlabeled_labels": np.array([0, 1, 2, 0, 1, 2, 0, 1], "int32"),
}}
ds = tf.data.Dataset.from_tensors(batch).repeat(3)
history = model.fit(ds, epochs=1, verbose=0, shuffle=False).history
online = model.encoder.weights + model.projector.weights
online += model.predictor.weights
target = model.target_encoder.weights + model.target_projector.weights
emit(
    history=history,
    online=[w.numpy() for w in online],
    target=[w.numpy() for w in target],
    queues=[[w.numpy() for w in q.weights] for q in model.queues],
)
"""


@pytest.mark.distributed
@pytest.mark.slow
class TestSemPPLPretrainerDistributed(TestCase):
    def test_two_replicas_match_one(self):
        # Both layouts at once: each process spends most of its time
        # tracing, on one core.
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            single, double = pool.map(
                lambda n: run_in_subprocess(
                    _DISTRIBUTED_STEP.format(num_replicas=n),
                    env={"PYTHONPATH": "."},
                ),
                (1, 2),
            )
        for name, values in single["history"].items():
            self.assertAllClose(
                double["history"][name], values, atol=1e-5, msg=name
            )
        # The k-NN found pseudo-labels and the loss had semantic terms.
        assert single["history"]["semantic_loss"][0] > 0
        for key in ("online", "target"):
            for a, b in zip(double[key], single[key]):
                self.assertAllClose(a, b, atol=2e-5, rtol=1e-4)
        # 3 steps x 4 labeled images in 10 slots: wrapped around, in the
        # same order (labeled images are gathered replica by replica).
        for a, b in zip(double["queues"], single["queues"]):
            for x, y in zip(a, b):
                self.assertAllClose(x, y, atol=2e-5)
