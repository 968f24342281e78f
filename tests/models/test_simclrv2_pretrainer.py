import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_ssl
from keras_ssl.layers import ProjectionHead
from keras_ssl.layers import Views
from keras_ssl.layers import ViewSpec
from keras_ssl.losses import nt_xent
from keras_ssl.models import SimCLRv2Pretrainer
from keras_ssl.testing import TestCase
from keras_ssl.testing import run_in_subprocess
from tests.losses.test_nt_xent import reference as nt_xent_reference
from tests.models.conftest import tiny_encoder


def make_model(memory_size=6, num_classes=3, momentum=0.999, **kwargs):
    kwargs.setdefault(
        "views", Views.from_preset("simclr_cifar", size=16, seed=1)
    )
    return SimCLRv2Pretrainer(
        tiny_encoder(),
        head=ProjectionHead(num_layers=2, output_dim=4),
        memory_size=memory_size,
        momentum=momentum,
        num_classes=num_classes,
        **kwargs,
    )


def deterministic_views():
    spec = ViewSpec(
        size=16,
        scale=(1.0, 1.0),
        ratio=(1.0, 1.0),
        flip=False,
        color_strength=0.0,
        p_grayscale=0.0,
    )
    return Views([spec, spec])


def mean_pairwise_cosine(z):
    z = np.asarray(z, np.float64)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z)
    return float(((z @ z.T).sum() - n) / (n * n - n))


class TestSimCLRv2Pretrainer(TestCase):
    def test_fit_on_semi_supervised_batches(self, batch):
        model = make_model()
        model.compile(optimizer=keras_ssl.optimizers.LARS(0.1))
        ds = tf.data.Dataset.from_tensors(batch).repeat(2)
        history = model.fit(ds, epochs=2, verbose=0, shuffle=False).history
        for name in SimCLRv2Pretrainer.metric_names:
            assert name in history, name
            assert np.all(np.isfinite(history[name])), name
        assert 0.0 <= history["probe_accuracy"][-1] <= 1.0
        # 2 steps x 2 views x 12 images fill the 6 slots.
        queue, valid = model.queue.read()
        assert bool(np.all(keras.ops.convert_to_numpy(valid)))

    def test_fit_on_unlabeled_images_only(self, batch):
        model = make_model(num_classes=None, memory_size=0)
        model.compile(optimizer=keras_ssl.optimizers.LARS(0.1))
        history = model.fit(
            batch["unlabeled"], batch_size=4, epochs=1, verbose=0
        ).history
        assert np.isfinite(history["loss"][0])
        # No labels, no probe: its metrics are absent, not reported as 0.
        assert "probe_loss" not in history
        assert "probe_accuracy" not in history
        assert model.queue is None

    def test_loss_matches_nt_xent_in_eval_mode(self, batch):
        # In inference mode both views are the same centre crop, so the
        # model's loss must equal eq. (1) on its own projections, with the
        # (masked) queue as extra negatives.
        model = make_model(num_classes=None)
        images = np.concatenate([batch["unlabeled"], batch["labeled"]])
        z = model(images, training=False)["projection"]
        negatives, valid = model.queue.read()
        expected = nt_xent(
            z, z, temperature=0.1, negatives=negatives, negatives_mask=valid
        )
        loss, _ = model.compute_ssl_loss(batch, training=False)
        self.assertAllClose(loss, expected, atol=1e-5)

    def test_momentum_encoder_is_an_ema_of_the_online_encoder(self, batch):
        model = make_model(momentum=0.5)
        model.compile(optimizer="sgd")
        online = []
        for _ in range(3):
            online.append(
                [keras.ops.convert_to_numpy(w) for w in model.encoder.weights]
            )
            model.train_on_batch(batch)
        # The EMA runs at the start of each step: after 3 steps the memory
        # network holds 0.5·(0.5·w0 + 0.5·w1) + 0.5·w2.
        expected = [0.25 * a + 0.25 * b + 0.5 * c for a, b, c in zip(*online)]
        for actual, want in zip(model.momentum_encoder.weights, expected):
            self.assertAllClose(actual, want, atol=1e-6)

    @pytest.mark.parametrize("memory_views", [1, 2])
    def test_memory_views_sets_the_keys_per_step(self, batch, memory_views):
        model = make_model(memory_size=50, memory_views=memory_views)
        model.compile(optimizer="sgd")
        model.train_on_batch(batch)
        _, valid = model.queue.read()
        # 12 images (8 unlabeled + 4 labeled) per view.
        assert int(np.sum(keras.ops.convert_to_numpy(valid))) == (
            12 * memory_views
        )
        assert model.get_config()["memory_views"] == memory_views

    def test_keys_are_as_diverse_as_the_online_projections(self):
        # MoCo's key encoder normalises by batch statistics. On moving
        # statistics (which start at 0 and 1) a fresh memory network maps
        # all images to nearly one key (mean cosine 0.998 here), and the
        # queue's negatives are near-copies of each other.
        keras.utils.set_random_seed(0)
        model = SimCLRv2Pretrainer(
            tiny_encoder(),
            head=ProjectionHead(num_layers=2, output_dim=8),
            views=Views.from_preset("simclr_cifar", size=16, seed=1),
            memory_size=64,
            momentum=0.99,
        )
        model.compile(optimizer=keras_ssl.optimizers.LARS(1.0))
        x = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3))
        x = x.astype("uint8")
        for _ in range(3):
            model.train_on_batch(x)
            keys = keras.ops.convert_to_numpy(model.queue.read()[0])
            pointer = int(keras.ops.convert_to_numpy(model.queue.pointer))
            # This step's 32 keys sit just before the pointer.
            latest = keys[[(pointer - 32 + k) % 64 for k in range(32)]]
            online = model(x, training=True)["projection"]
            keys_cosine = mean_pairwise_cosine(latest)
            online_cosine = mean_pairwise_cosine(online)
            assert abs(keys_cosine - online_cosine) < 0.15, (
                keys_cosine,
                online_cosine,
            )

    def test_own_earlier_keys_never_in_the_denominator(self):
        keras.utils.set_random_seed(0)
        model = make_model(
            memory_size=40, num_classes=None, views=deterministic_views()
        )
        model.compile(optimizer="sgd")
        rng = np.random.default_rng(3)
        first = rng.integers(0, 256, (8, 16, 16, 3)).astype("uint8")
        model.train_on_batch(
            {"unlabeled": first, "unlabeled_ids": np.arange(8, dtype="int32")}
        )
        # Half of the next batch was keyed in the first step.
        new = rng.integers(0, 256, (4, 16, 16, 3)).astype("uint8")
        images = np.concatenate([first[:4], new])
        ids = np.array([0, 1, 2, 3, 100, 101, 102, 103], "int32")
        negatives, valid = model.queue.read()
        negatives = keras.ops.convert_to_numpy(negatives)
        valid = keras.ops.convert_to_numpy(valid)
        stored = keras.ops.convert_to_numpy(model.queue.read_ids())
        np.testing.assert_array_equal(stored[:16], np.tile(np.arange(8), 2))
        view = model.views(images, training=True)[0]
        h = model.encoder(keras.ops.concatenate([view, view]), training=True)
        z = keras.ops.convert_to_numpy(model.head(h, training=True)[-1])
        z1, z2 = z[:8], z[8:]
        mask = valid[None, :] & (stored[None, :] != ids[:, None])
        assert (~mask[:4] & valid[None, :]).sum() == 8  # 2 own keys each
        expected = nt_xent_reference(z1, z2, 0.1, negatives, mask)[0]
        without_ids = nt_xent_reference(z1, z2, 0.1, negatives, valid)[0]
        assert abs(expected - without_ids) > 1e-3
        _, logs = model.compute_ssl_loss(
            {"unlabeled": images, "unlabeled_ids": ids}, training=True
        )
        self.assertAllClose(logs["contrastive_loss"], expected, atol=1e-5)
        # The step's keys entered the queue with their ids.
        stored = keras.ops.convert_to_numpy(model.queue.read_ids())
        np.testing.assert_array_equal(stored[16:32], np.tile(ids, 2))

    def test_labeled_ids_join_the_unlabeled_ones(self, batch):
        model = make_model(memory_size=30)
        model.compile(optimizer="sgd")
        model.train_on_batch(
            dict(batch, labeled_ids=np.array([5, -1, 7, 2], "int32"))
        )
        stored = keras.ops.convert_to_numpy(model.queue.read_ids())
        # No unlabeled ids: those images are unknown (-1).
        np.testing.assert_array_equal(
            stored[:24], np.tile([-1] * 8 + [5, -1, 7, 2], 2)
        )

    def test_warns_when_the_memory_can_hold_the_data_without_ids(self):
        model = make_model(memory_size=8, num_classes=None)
        model.compile(optimizer="sgd")
        x = np.zeros((16, 16, 16, 3), "uint8")
        with pytest.warns(UserWarning, match="memory_size=8"):
            model.fit(x, batch_size=8, epochs=1, verbose=0)
        stream = keras_ssl.data.semi_supervised(
            x, unlabeled_batch_size=8, image_ids=True
        )
        model.fit(stream, epochs=1, verbose=0)  # ids: no warning
        model.fit(x[:4].repeat(20, 0), batch_size=8, epochs=1, verbose=0)

    def test_probe_is_plain_sgd_with_an_l2_loss_under_lars(self, batch):
        # SimCLR excludes head_supervised from LARS's adaptation and decay
        # and adds weight_decay * l2_loss(kernel) to the loss instead.
        model = make_model(memory_size=0, views=deterministic_views())
        optimizer = keras_ssl.optimizers.LARS(0.1, weight_decay=0.5)
        model.compile(optimizer=optimizer)
        optimizer.build(model.trainable_variables)
        flags = {
            v.path: (optimizer._decayed[i], optimizer._adapted[i])
            for i, v in enumerate(model.trainable_variables)
        }
        assert flags[model.probe.kernel.path] == (False, False)
        assert flags[model.encoder.layers[1].kernel.path] == (True, True)
        kernel = keras.ops.convert_to_numpy(model.probe.kernel)
        loss, logs = model.compute_ssl_loss(batch, training=False)
        expected = (
            logs["contrastive_loss"]
            + logs["probe_loss"]
            + 0.25 * np.sum(kernel.astype("float64") ** 2)
        )
        self.assertAllClose(loss, expected, atol=1e-5)
        # One step moves the kernel by lr * gradient of that loss, no trust
        # ratio (momentum starts at zero).
        with tf.GradientTape() as tape:
            total, _ = model.compute_ssl_loss(batch, training=True)
        gradient = tape.gradient(total, model.probe.kernel)
        model.train_on_batch(batch)
        self.assertAllClose(
            model.probe.kernel,
            kernel - 0.1 * keras.ops.convert_to_numpy(gradient),
            atol=1e-5,
        )

    def test_momentum_network_is_not_trained(self, batch):
        model = make_model()
        trainable = {id(v) for v in model.trainable_variables}
        for v in model.momentum_encoder.weights + model.momentum_head.weights:
            assert id(v) not in trainable

    def test_saving_keeps_queue_and_momentum_state(self, batch):
        model = make_model()
        model.compile(optimizer="sgd")
        model.train_on_batch(batch)
        reloaded = self.run_model_saving(model, batch["unlabeled"])
        for a, b in zip(model.queue.weights, reloaded.queue.weights):
            self.assertAllClose(a, b)
        for a, b in zip(
            model.momentum_encoder.weights, reloaded.momentum_encoder.weights
        ):
            self.assertAllClose(a, b)
        self.run_config_round_trip(model)

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"temperature": 0}, "temperature=0"),
            ({"memory_size": -1}, "memory_size=-1"),
            ({"momentum": 1.0}, "momentum=1.0"),
            ({"num_classes": 1}, "num_classes=1"),
            ({"memory_views": 3}, "memory_views=3"),
        ],
    )
    def test_bad_arguments(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            make_model(**kwargs)

    def test_rejects_views_that_are_not_two(self):
        with pytest.raises(ValueError, match="exactly two views"):
            SimCLRv2Pretrainer(
                tiny_encoder(),
                views=Views.from_preset("paws_cifar", size=16),
            )


_DISTRIBUTED_STEP = """
import keras_ssl
from keras_ssl.layers import ProjectionHead, Views, ViewSpec
from keras_ssl.models import SimCLRv2Pretrainer
from tests.losses.test_nt_xent import reference as nt_xent_reference
from tests.models.conftest import tiny_encoder

NUM_REPLICAS = {num_replicas}
SYNC = {sync}
IDS = {ids}
keras.utils.set_random_seed(0)
# Deterministic views, so that 1 and 2 replicas see the same images.
spec = ViewSpec(size=16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False,
                color_strength=0.0, p_grayscale=0.0)
devices = ["CPU:0", "CPU:1"][:NUM_REPLICAS]
strategy = tf.distribute.MirroredStrategy(devices)
with strategy.scope():
    model = SimCLRv2Pretrainer(
        tiny_encoder(synchronized=SYNC),
        head=ProjectionHead(num_layers=2, output_dim=4, synchronized_bn=SYNC),
        views=Views([spec, spec]),
        memory_size=24,
        momentum=0.5,
        num_classes=3,
    )
    model.compile(optimizer=keras_ssl.optimizers.LARS(0.5, weight_decay=1e-4))
rng = np.random.default_rng(0)
batch = {{
    "unlabeled": rng.integers(0, 256, (8, 16, 16, 3)).astype("uint8"),
    "labeled": rng.integers(0, 256, (4, 16, 16, 3)).astype("uint8"),
    "labels": np.array([0, 1, 2, 1], "int32"),
}}
if IDS:
    batch["unlabeled_ids"] = np.arange(8, dtype="int32")
    batch["labeled_ids"] = np.array([20, 21, 3, 22], "int32")
ds = tf.data.Dataset.from_tensors(batch).repeat({steps})
history = model.fit(ds, epochs=1, verbose=0, shuffle=False).history
emit(
    loss=history["loss"][0],
    weights=[w.numpy() for w in model.encoder.weights + model.head.weights],
    momentum=[w.numpy() for w in model.momentum_encoder.weights],
    queue=model.queue.read()[0].numpy(),
)
"""


def _run(num_replicas, sync, steps=2, ids=False):
    return run_in_subprocess(
        _DISTRIBUTED_STEP.format(
            num_replicas=num_replicas, sync=sync, steps=steps, ids=ids
        ),
        env={"PYTHONPATH": "."},
    )


@pytest.mark.distributed
@pytest.mark.slow
class TestSimCLRv2PretrainerDistributed(TestCase):
    def test_two_replicas_match_one(self):
        single = _run(1, True)
        double = _run(2, True)
        unsynced = _run(2, False)
        self.assertAllClose(double["loss"], single["loss"], atol=1e-5)
        for a, b in zip(double["weights"], single["weights"]):
            self.assertAllClose(a, b, atol=2e-5, rtol=1e-4)
        for a, b in zip(double["momentum"], single["momentum"]):
            self.assertAllClose(a, b, atol=2e-5, rtol=1e-4)
        # Each step replaces all 24 slots; the replicas' gathered order of
        # the images differs from one device's, so compare as sets of rows.
        self.assertAllClose(
            np.sort(np.asarray(double["queue"]), axis=0),
            np.sort(np.asarray(single["queue"]), axis=0),
            atol=1e-5,
        )
        # Without synchronized BatchNorm each replica normalises with its
        # own half of the batch: the result visibly differs.
        difference = max(
            np.abs(np.asarray(a) - np.asarray(b)).max()
            for a, b in zip(unsynced["weights"], single["weights"])
        )
        assert difference > 1e-3
        # With image ids the second step meets the first step's keys of
        # the same images: each replica must mask its own images' keys in
        # the gathered queue, and that changes the loss.
        single_ids = _run(1, True, ids=True)
        double_ids = _run(2, True, ids=True)
        self.assertAllClose(double_ids["loss"], single_ids["loss"], atol=1e-5)
        for a, b in zip(double_ids["weights"], single_ids["weights"]):
            self.assertAllClose(a, b, atol=2e-5, rtol=1e-4)
        assert abs(single_ids["loss"] - single["loss"]) > 1e-3


def test_a_float64_model_trains_with_its_probe(batch, monkeypatch):
    # The probe's loss is computed in float32 under mixed precision; in a
    # float64 model it joins the float64 NT-Xent in float64. The views are
    # the images themselves (the augmentation layers are not under test).
    from keras_ssl.models import simclrv2_pretrainer

    monkeypatch.setattr(
        simclrv2_pretrainer,
        "compiled_call",
        lambda layer, images, training=None: (images, images[:, ::-1]),
    )
    floatx = keras.config.floatx()
    keras.config.set_floatx("float64")
    try:
        model = make_model(memory_size=0)
        model.compile(optimizer=keras_ssl.optimizers.LARS(0.1))
        model.train_on_batch(batch)
        loss, logs = model.compute_ssl_loss(batch, training=False)
    finally:
        keras.config.set_floatx(floatx)
    assert keras.backend.standardize_dtype(loss.dtype) == "float64"
    assert keras.backend.standardize_dtype(logs["probe_loss"].dtype) == (
        "float64"
    )
    assert np.isfinite(keras.ops.convert_to_numpy(loss))
