import keras
import numpy as np
import pytest

from keras_ssl.backbones.resnet import ResNet
from keras_ssl.backbones.resnet_blocks import SelectiveKernelAttention
from keras_ssl.testing import TestCase
from keras_ssl.testing import run_in_subprocess

SK = 0.0625  # SimCLRv2's sk_ratio.

# SimCLRv2 Table 1: (depth, width multiplier, SK, parameters in millions).
TABLE_1 = [
    (50, 1, False, 24),
    (50, 1, True, 35),
    (50, 2, False, 94),
    (50, 2, True, 140),
    (101, 1, False, 43),
    (101, 1, True, 65),
    (101, 2, False, 170),
    (101, 2, True, 257),
    (152, 1, False, 58),
    (152, 1, True, 89),
    (152, 2, False, 233),
    (152, 2, True, 354),
    (152, 3, True, 795),
]


def deferred_resnet(**kwargs):
    """Builds the model's graph and variable shapes without allocating.

    Inside a `StatelessScope` Keras defers variable initialisation; with
    `initialize_variables=False` it never happens, so even the 795M model
    is counted in about a second with the same layer code.
    """
    with keras.StatelessScope(initialize_variables=False):
        return ResNet(**kwargs)


def images(batch, size, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(batch, size, size, 3)).astype("float32")


def softmax_sk_reference(x, w_reduce, bn, w_expand, eps, training):
    """SimCLRv2's SK attention in float64, written from the description."""
    x = x.astype("float64")
    f = x.shape[-1] // 2
    a, b = x[..., :f], x[..., f:]
    s = (a + b).mean(axis=(1, 2))  # (B, f): spatial mean of branch sum
    z = s @ w_reduce[0, 0]
    gamma, beta, moving_mean, moving_var = bn
    if training:
        mean, var = z.mean(axis=0), z.var(axis=0)
    else:
        mean, var = moving_mean, moving_var
    z = np.maximum((z - mean) / np.sqrt(var + eps) * gamma + beta, 0.0)
    logits = z @ w_expand[0, 0]  # (B, 2f)
    logits = np.stack([logits[:, :f], logits[:, f:]])  # (2, B, f)
    weights = np.exp(logits) / np.exp(logits).sum(axis=0)
    return weights[0][:, None, None, :] * a + weights[1][:, None, None, :] * b


def gradients(model, x):
    """Gradients of `mean(features)` w.r.t. the trainable variables."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = keras.ops.mean(model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def loss_fn(trainable):
            y, _ = model.stateless_call(
                trainable, non_trainable, x, training=True
            )
            return keras.ops.mean(y)

        # One XLA compilation instead of op-by-op dispatch (3x faster).
        return jax.jit(jax.grad(loss_fn))(trainable)
    pytest.skip(f"no gradient helper for backend {backend}")


class TestParameterCounts(TestCase):
    @pytest.mark.parametrize("depth,width,sk,millions", TABLE_1)
    def test_table_1(self, depth, width, sk, millions):
        model = deferred_resnet(
            depth=depth, width_multiplier=width, sk_ratio=SK if sk else 0.0
        )
        assert round(model.count_params() / 1e6) == millions

    def test_deferred_count_equals_built_count(self):
        # Deep stem, SK and ResNet-D shortcuts: every kind of layer.
        kwargs = dict(depth=18, sk_ratio=SK, input_shape=(32, 32, 3))
        built = ResNet(**kwargs)
        assert built.count_params() == deferred_resnet(**kwargs).count_params()

    @pytest.mark.slow
    def test_largest_model_builds(self):
        if keras.backend.backend() != "tensorflow":
            pytest.skip("initialising 795M weights takes ~60 s on JAX CPU")
        model = ResNet(depth=152, width_multiplier=3, sk_ratio=SK)
        assert round(model.count_params() / 1e6) == 795


class TestArchitecture(TestCase):
    @pytest.mark.parametrize(
        "depth,sk_ratio,stem,size,final_size",
        [
            (18, 0.0, "cifar", 32, 4),
            (50, SK, "cifar", 32, 4),
            (18, 0.0, "imagenet", 64, 2),
            (50, 0.0, "imagenet", 64, 2),
            (50, SK, "imagenet", 64, 2),
        ],
    )
    def test_output_shape(self, depth, sk_ratio, stem, size, final_size):
        model = ResNet(depth=depth, sk_ratio=sk_ratio, stem=stem)
        expected_dim = 512 if depth < 50 else 2048
        assert model.output_dim == expected_dim
        features = model(images(2, size), training=False)
        self.assertShape(features, (2, expected_dim))
        last = keras.Model(
            model.input, model.get_layer("stage4_block2_out").output
        )
        self.assertShape(
            last(images(2, size)), (2, final_size, final_size, expected_dim)
        )

    def test_odd_input_size(self):
        model = ResNet(depth=18, sk_ratio=SK, input_shape=(33, 33, 3))
        self.assertShape(model(images(2, 33)), (2, 512))

    def test_width_multiplier(self):
        model = deferred_resnet(depth=18, width_multiplier=3, stem="cifar")
        assert model.output_dim == 3 * 512
        assert model.output_shape == (None, 3 * 512)
        kernel = model.get_layer("stem_conv1").kernel
        assert tuple(kernel.shape) == (3, 3, 3, 3 * 64)

    def test_fractional_width_multiplier(self):
        model = ResNet(
            depth=18,
            width_multiplier=0.25,
            stem="cifar",
            input_shape=(16, 16, 3),
        )
        assert model.output_dim == 128
        assert model.get_config()["width_multiplier"] == 0.25
        kernel = model.get_layer("stem_conv1").kernel
        assert tuple(kernel.shape) == (3, 3, 3, 16)
        x = np.zeros((2, 16, 16, 3), "float32")
        self.assertShape(model(x), (2, 128))
        sk = ResNet(depth=18, width_multiplier=0.5, sk_ratio=0.0625)
        assert sk.output_dim == 256

    def test_plain_stem_and_shortcut(self):
        model = deferred_resnet(depth=50)
        stem = model.get_layer("stem_conv1")
        assert stem.kernel_size == (7, 7) and stem.strides == (2, 2)
        assert model.get_layer("stem_pool").pool_size == (3, 3)
        shortcut = model.get_layer("stage2_block1_shortcut_conv")
        assert shortcut.strides == (2, 2)
        names = [layer.name for layer in model.layers]
        assert not any("shortcut_pool" in name for name in names)
        assert not any("_sk" in name for name in names)

    def test_resnet_d_stem_and_shortcut_with_sk(self):
        model = deferred_resnet(depth=50, width_multiplier=2, sk_ratio=SK)
        widths = [
            model.get_layer(f"stem_conv{i}").kernel.shape[-1] for i in (1, 2, 3)
        ]
        assert widths == [64, 64, 128]  # 32w, 32w, 64w
        strides = [model.get_layer(f"stem_conv{i}").strides for i in (1, 2, 3)]
        assert strides == [(2, 2), (1, 1), (1, 1)]
        for stage in (2, 3, 4):
            pool = model.get_layer(f"stage{stage}_block1_shortcut_pool")
            assert pool.pool_size == (2, 2) and pool.strides == (2, 2)
            conv = model.get_layer(f"stage{stage}_block1_shortcut_conv")
            assert conv.strides == (1, 1) and conv.kernel_size == (1, 1)
        names = [layer.name for layer in model.layers]
        # Stage 1 is not strided: plain 1x1 projection, no pool.
        assert "stage1_block1_shortcut_pool" not in names

    def test_cifar_stem_ignores_deep_stem(self):
        model = deferred_resnet(depth=50, sk_ratio=SK, stem="cifar")
        stem = model.get_layer("stem_conv1")
        assert stem.kernel_size == (3, 3) and stem.strides == (1, 1)
        names = [layer.name for layer in model.layers]
        assert "stem_conv2" not in names and "stem_pool" not in names

    @pytest.mark.parametrize(
        "width,stage,mid",
        [(1, 1, 32), (1, 4, 32), (3, 4, 96), (4, 4, 128), (3, 3, 48)],
    )
    def test_sk_widths(self, width, stage, mid):
        model = deferred_resnet(depth=50, width_multiplier=width, sk_ratio=SK)
        filters = 64 * 2 ** (stage - 1) * width
        assert max(int(filters * SK), 32) == mid
        branches = model.get_layer(f"stage{stage}_block1_conv2").kernel
        assert tuple(branches.shape)[-1] == 2 * filters
        attention = model.get_layer(f"stage{stage}_block1_sk2")
        assert tuple(attention.reduce_conv.kernel.shape) == (
            1,
            1,
            filters,
            mid,
        )
        assert tuple(attention.expand_conv.kernel.shape) == (
            1,
            1,
            mid,
            2 * filters,
        )

    @pytest.mark.parametrize("depth", [18, 50])
    def test_batch_norm_and_conv_settings(self, depth):
        model = deferred_resnet(
            depth=depth, sk_ratio=SK, bn_momentum=0.99, bn_epsilon=1e-3
        )
        last_bn = "bn2" if depth == 18 else "bn3"
        bns, convs = 0, 0
        for layer in _all_layers(model):
            if isinstance(layer, keras.layers.BatchNormalization):
                bns += 1
                assert layer.momentum == 0.99 and layer.epsilon == 1e-3
                zero = layer.name.endswith(last_bn) and "stage" in layer.name
                expected = "Zeros" if zero else "Ones"
                assert type(layer.gamma_initializer).__name__ == expected
            if isinstance(layer, keras.layers.Conv2D):
                convs += 1
                assert not layer.use_bias
        assert bns > 0 and convs > 0

    def test_blocks_start_as_identity(self):
        # Zero-init gamma makes each residual branch output 0 at init, so in
        # inference mode a block without projection passes its input on.
        model = ResNet(depth=18, sk_ratio=SK, stem="cifar")
        probe = keras.Model(
            model.input,
            [
                model.get_layer("stage1_block1_out").output,
                model.get_layer("stage1_block2_out").output,
            ],
        )
        before, after = probe(images(2, 16), training=False)
        self.assertAllClose(after, before)
        assert float(keras.ops.max(before)) > 0

    def test_variable_paths_are_readable(self):
        model = deferred_resnet(depth=50, sk_ratio=SK)
        paths = {v.path for v in model.weights}
        assert "stem_conv1/kernel" in paths
        assert "stage3_block2_conv2/kernel" in paths
        assert "stage3_block2_sk2/reduce_conv/kernel" in paths
        assert "stage4_block1_shortcut_bn/moving_variance" in paths
        assert len(paths) == len(model.weights)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, SelectiveKernelAttention):
            yield from (layer.reduce_conv, layer.reduce_bn, layer.expand_conv)


class TestSelectiveKernelAttention(TestCase):
    @pytest.mark.parametrize("training", [False, True])
    def test_matches_numpy_reference(self, training):
        rng = np.random.default_rng(1)
        x = rng.normal(size=(4, 3, 3, 16)).astype("float32")
        layer = SelectiveKernelAttention(sk_ratio=0.25, min_dim=4)
        layer.build(x.shape)
        w_reduce = rng.normal(size=(1, 1, 8, 4))
        w_expand = rng.normal(size=(1, 1, 4, 16))
        bn = [
            rng.uniform(0.5, 1.5, 4),
            rng.normal(size=4),
            rng.normal(size=4),
            rng.uniform(0.5, 1.5, 4),
        ]
        layer.reduce_conv.kernel.assign(w_reduce)
        layer.expand_conv.kernel.assign(w_expand)
        for variable, value in zip(layer.reduce_bn.weights, bn):
            variable.assign(value)
        expected = softmax_sk_reference(
            x, w_reduce, bn, w_expand, 1e-5, training
        )
        self.assertAllClose(
            layer(x, training=training), expected, atol=1e-5, rtol=1e-5
        )

    def test_min_dim(self):
        layer = SelectiveKernelAttention(sk_ratio=SK)
        layer.build((None, 4, 4, 64))
        assert tuple(layer.reduce_conv.kernel.shape) == (1, 1, 32, 32)

    def test_contract(self):
        x = np.random.default_rng(2).normal(size=(2, 4, 4, 8))
        self.run_layer_contract(
            SelectiveKernelAttention,
            {"sk_ratio": 0.5, "min_dim": 2},
            x.astype("float32"),
            expected_output_shape=(2, 4, 4, 4),
        )

    @pytest.mark.parametrize("sk_ratio", [0.0, 1.0, -0.1])
    def test_bad_sk_ratio(self, sk_ratio):
        with pytest.raises(ValueError, match=f"sk_ratio={sk_ratio}"):
            SelectiveKernelAttention(sk_ratio=sk_ratio)


class TestTraining(TestCase):
    @pytest.mark.parametrize("depth", [18, 50])
    def test_gradients_reach_every_variable(self, depth):
        if depth == 50 and keras.backend.backend() != "tensorflow":
            pytest.skip("slow to compile on JAX CPU; depth 18 covers JAX")
        model = ResNet(depth=depth, sk_ratio=SK, stem="cifar")
        grads = gradients(model, images(4, 16))
        assert len(grads) == len(model.trainable_variables)
        for grad, variable in zip(grads, model.trainable_variables):
            assert grad is not None, variable.path
            assert np.all(np.isfinite(keras.ops.convert_to_numpy(grad)))
        # The residual branches start at zero, but the shortcuts carry the
        # gradient down to the stem.
        stem = model.trainable_variables.index(
            model.get_layer("stem_conv1").kernel
        )
        assert np.abs(keras.ops.convert_to_numpy(grads[stem])).max() > 0

    def test_training_updates_batch_norm_statistics(self):
        model = ResNet(depth=18, stem="cifar")
        model(images(4, 16), training=True)
        moving_mean = model.get_layer("stem_bn1").moving_mean
        assert np.abs(keras.ops.convert_to_numpy(moving_mean)).max() > 0


class TestSynchronizedBatchNorm(TestCase):
    def test_builds_and_runs(self):
        model = ResNet(
            depth=18, sk_ratio=SK, stem="cifar", synchronized_bn=True
        )
        on_tf = keras.backend.backend() == "tensorflow"
        for layer in _all_layers(model):
            if isinstance(layer, keras.layers.BatchNormalization):
                # Other backends fall back to a plain BN.
                assert layer.synchronized == on_tf
        assert model.get_config()["synchronized_bn"] is True
        features = model(images(2, 16), training=True)
        self.assertShape(features, (2, 512))
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(features)))

    @pytest.mark.distributed
    def test_two_replicas_match_one(self):
        if keras.backend.backend() != "tensorflow":
            pytest.skip("synchronized BN is a TensorFlow feature")
        # One process, one MirroredStrategy: a training-mode forward pass of
        # 8 images on 2 replicas (4 each) against 1 replica with all 8.
        result = run_in_subprocess(
            """
            from keras_ssl.backbones import ResNet

            x = np.random.default_rng(0).uniform(size=(8, 16, 16, 3))
            x = x.astype("float32")
            strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
            errors = {}
            for sync in (True, False):
                kwargs = dict(
                    depth=18, stem="cifar", sk_ratio=0.0625,
                    synchronized_bn=sync, input_shape=(16, 16, 3),
                )
                reference = ResNet(**kwargs)
                expected = reference(x, training=True).numpy()
                with strategy.scope():
                    model = ResNet(**kwargs)
                    model.set_weights(reference.get_weights())
                shards = strategy.experimental_distribute_values_from_function(
                    lambda ctx: x[4 * ctx.replica_id_in_sync_group:][:4]
                )

                # Eager: replicas run in threads, and no tf.function trace
                # of the model (3x slower here) is needed.
                out = strategy.experimental_local_results(
                    strategy.run(
                        lambda s: model(s, training=True), args=(shards,)
                    )
                )
                actual = np.concatenate([o.numpy() for o in out])
                errors[str(sync)] = float(np.abs(actual - expected).max())
            emit(errors=errors)
            """,
            num_devices=2,
            env={"KERAS_BACKEND": "tensorflow"},
        )
        errors = result["errors"]
        assert errors["True"] < 1e-4, errors
        # Per-replica statistics give different features: the check can fail.
        assert errors["False"] > 1e-3, errors


class TestSerialization(TestCase):
    def test_config_round_trip(self):
        kwargs = dict(
            depth=18,
            width_multiplier=2,
            sk_ratio=SK,
            stem="cifar",
            bn_momentum=0.99,
            bn_epsilon=1e-3,
            synchronized_bn=False,
            input_shape=(16, 16, 3),
        )
        # Variables are not needed to compare configs: skip their init.
        with keras.StatelessScope(initialize_variables=False):
            model = ResNet(name="encoder", **kwargs)
            rebuilt = self.run_config_round_trip(model)
        config = rebuilt.get_config()
        assert {k: config[k] for k in kwargs} == kwargs
        assert rebuilt.name == "encoder"
        assert rebuilt.count_params() == model.count_params()
        assert rebuilt.output_dim == 1024

    def test_keras_saving(self):
        model = ResNet(
            depth=18, sk_ratio=SK, stem="cifar", input_shape=(16, 16, 3)
        )
        # Train-mode calls move the BN statistics away from their initial
        # values, so the reload must restore them to give equal outputs.
        model(images(4, 16, seed=1), training=True)
        reloaded = self.run_model_saving(model, images(2, 16), atol=1e-4)
        assert isinstance(reloaded, ResNet)
        assert reloaded.get_config() == model.get_config()

    def test_dtype_policy_reaches_every_layer(self):
        model = ResNet(
            depth=18,
            width_multiplier=0.25,
            stem="cifar",
            input_shape=(16, 16, 3),
            dtype="mixed_bfloat16",
        )
        assert keras.config.dtype_policy().name == "float32"
        assert {layer.dtype_policy.name for layer in model.layers} == {
            "mixed_bfloat16"
        }
        assert all(v.dtype == "float32" for v in model.weights)
        self.assertDType(model(images(2, 16)), "bfloat16")
        rebuilt = ResNet.from_config(model.get_config())
        assert rebuilt.get_config()["dtype"] == "mixed_bfloat16"
        assert {layer.dtype_policy.name for layer in rebuilt.layers} == {
            "mixed_bfloat16"
        }


class TestValidation(TestCase):
    @pytest.mark.parametrize(
        "kwargs,message",
        [
            ({"depth": 20}, "`depth` must be one of .* Received: depth=20"),
            ({"depth": "50"}, "Received: depth='50'"),
            ({"depth": 50.0}, "Received: depth=50.0"),
            ({"width_multiplier": 0}, "Received: width_multiplier=0"),
            ({"width_multiplier": -2}, "Received: width_multiplier=-2"),
            ({"width_multiplier": 0.3}, "Received: width_multiplier=0.3"),
            ({"width_multiplier": True}, "Received: width_multiplier=True"),
            ({"sk_ratio": 1.0}, r"`sk_ratio` must be in \[0, 1\)"),
            ({"sk_ratio": -0.1}, r"Received: sk_ratio=-0.1"),
            (
                {"stem": "tiny"},
                "`stem` must be one of .* Received: stem='tiny'",
            ),
            ({"bn_momentum": 1.0}, "Received: bn_momentum=1.0"),
            ({"bn_epsilon": 0.0}, "Received: bn_epsilon=0.0"),
            ({"resnet_d": 1}, "Received: resnet_d=1"),
            ({"shortcut_pool": "x"}, "Received: shortcut_pool='x'"),
            ({"conv_padding": "valid"}, "Received: conv_padding='valid'"),
            ({"pool_padding": "valid"}, "Received: pool_padding='valid'"),
            ({"input_mean": (0.5,) * 3}, "Received: input_std=None"),
            (
                {"input_mean": (0.5,) * 3, "input_std": (0.1, 0.1, 0.0)},
                "`input_std` must be > 0",
            ),
        ],
    )
    def test_bad_arguments(self, kwargs, message):
        with pytest.raises(ValueError, match=message):
            ResNet(**kwargs)

    def test_numpy_integer_width(self):
        model = deferred_resnet(depth=18, width_multiplier=np.int64(2))
        assert model.output_dim == 1024
        assert type(model.get_config()["width_multiplier"]) is int


class TestLayoutOptions(TestCase):
    def test_config_round_trip_and_same_count(self):
        kwargs = {
            "depth": 18,
            "width_multiplier": 0.25,
            "resnet_d": True,
            "shortcut_pool": "all",
            "conv_padding": "same",
            "pool_padding": "symmetric",
            "input_mean": (0.5, 0.5, 0.5),
            "input_std": (0.25, 0.25, 0.25),
        }
        model = ResNet(**kwargs)
        clone = ResNet.from_config(model.get_config())
        for key, value in kwargs.items():
            assert clone.get_config()[key] == model.get_config()[key]
        plain = ResNet(depth=18, width_multiplier=0.25, resnet_d=True)
        # Padding, pooling and normalisation add no weights.
        assert model.count_params() == plain.count_params()
        x = images(2, 32)
        clone.set_weights(model.get_weights())
        np.testing.assert_allclose(clone(x), model(x), atol=1e-6)

    def test_input_normalisation(self):
        plain = ResNet(depth=18, width_multiplier=0.25, stem="cifar")
        normalising = ResNet(
            depth=18,
            width_multiplier=0.25,
            stem="cifar",
            input_mean=(0.1, 0.2, 0.3),
            input_std=(0.5, 0.25, 2.0),
        )
        normalising.set_weights(plain.get_weights())
        x = images(2, 16)
        expected = plain((x - np.array([0.1, 0.2, 0.3])) / [0.5, 0.25, 2.0])
        np.testing.assert_allclose(normalising(x), expected, atol=1e-5)
