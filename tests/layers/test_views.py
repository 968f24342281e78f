import keras
import numpy as np
import pytest

from keras_ssl.layers import ColorDistortion
from keras_ssl.layers import MultiCrop
from keras_ssl.layers import RandomGaussianBlur
from keras_ssl.layers import RandomResizedCrop
from keras_ssl.layers import RandomSolarize
from keras_ssl.layers import Views
from keras_ssl.layers import ViewSpec
from keras_ssl.testing import TestCase

TF_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf.data / tf.function need the TensorFlow backend",
)

PRESETS = [
    "paws_cifar",
    "paws_imagenet",
    "semppl_imagenet",
    "simclr_cifar",
    "simclr_imagenet",
]


def uint8_images(batch=4, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)


def numpy_views(views):
    return [keras.ops.convert_to_numpy(v) for v in views]


class TestViews(TestCase):
    def test_presets_listed(self):
        assert Views.presets() == PRESETS

    def test_unknown_preset(self):
        with pytest.raises(ValueError, match="byol") as info:
            Views.from_preset("byol")
        for name in PRESETS:
            assert name in str(info.value)

    def test_simclr_presets(self):
        # SimCLR: 2 views, crop (0.08, 1), blur p = 0.5 on ImageNet,
        # strength 0.5 and no blur on CIFAR-10.
        imagenet = Views.preset_specs("simclr_imagenet")
        assert [s.size for s in imagenet] == [224, 224]
        assert all(s.scale == (0.08, 1.0) for s in imagenet)
        assert all(s.color_strength == 1.0 for s in imagenet)
        assert all(s.blur_p == 0.5 and s.solarize_p == 0 for s in imagenet)
        assert all(s.eval_crop_proportion == 0.875 for s in imagenet)
        cifar = Views.preset_specs("simclr_cifar")
        assert [s.size for s in cifar] == [32, 32]
        assert all(s.color_strength == 0.5 and s.blur_p == 0 for s in cifar)
        assert all(s.eval_crop_proportion == 1.0 for s in cifar)

    def test_paws_presets(self):
        # PAWS Sec. 5 / Appendix A (ImageNet), Appendix C (CIFAR-10).
        imagenet = Views.preset_specs("paws_imagenet")
        assert [s.size for s in imagenet] == [224] * 2 + [96] * 6
        assert [s.scale for s in imagenet] == [(0.14, 1.0)] * 2 + [
            (0.05, 0.14)
        ] * 6
        assert all(s.blur_p == 0.5 for s in imagenet)
        cifar = Views.preset_specs("paws_cifar")
        assert [s.size for s in cifar] == [32] * 2 + [18] * 6
        assert [s.scale for s in cifar] == [(0.75, 1.0)] * 2 + [(0.3, 0.75)] * 6
        assert all(s.blur_p == 0 and s.solarize_p == 0 for s in cifar)
        assert all(s.flip for s in cifar)

    def test_semppl_preset(self):
        # SemPPL Table 12: odd views (1st and 3rd large, 1st small) blur
        # 10%, solarize 20%; even views blur 100%, solarize 0%.
        specs = Views.preset_specs("semppl_imagenet")
        assert [s.size for s in specs] == [224] * 4 + [96] * 2
        assert [s.blur_p for s in specs] == [0.1, 1.0, 0.1, 1.0, 0.1, 1.0]
        assert [s.solarize_p for s in specs] == [0.2, 0.0] * 3
        assert [s.scale[0] for s in specs] == [0.14, 0.08, 0.14, 0.08] + [
            0.05
        ] * 2
        layer = Views(specs)
        amounts = {layers[1].amounts for layers in layer.view_layers}
        assert amounts == {(0.4, 0.4, 0.2, 0.1)}
        assert all(s.p_jitter == 0.8 and s.p_grayscale == 0.2 for s in specs)

    def test_size_override(self):
        specs = Views.preset_specs("paws_imagenet", size=64)
        assert [s.size for s in specs] == [64] * 2 + [27] * 6
        specs = Views.preset_specs("simclr_imagenet", size=32)
        assert [s.size for s in specs] == [32, 32]
        with pytest.raises(ValueError, match="`size`"):
            Views.preset_specs("simclr_cifar", size=0)

    @pytest.mark.parametrize("name", PRESETS)
    def test_presets_make_views(self, name):
        layer = Views.from_preset(name, size=16, seed=0)
        images = uint8_images()
        views = layer(images, training=True)
        specs = Views.preset_specs(name, size=16)
        assert len(views) == len(specs)
        for spec, view in zip(specs, views):
            self.assertShape(view, (4, spec.size, spec.size, 3))
            self.assertDType(view, "float32")
            view = keras.ops.convert_to_numpy(view)
            assert view.min() >= 0.0 and view.max() <= 1.0

    def test_sub_layers_follow_specs(self):
        layer = Views.from_preset("semppl_imagenet", size=32)
        kinds = [[type(x) for x in layers] for layers in layer.view_layers]
        assert kinds[0] == [
            RandomResizedCrop,
            ColorDistortion,
            RandomGaussianBlur,
            RandomSolarize,
        ]
        assert kinds[1] == [
            RandomResizedCrop,
            ColorDistortion,
            RandomGaussianBlur,
        ]
        cifar = Views.from_preset("simclr_cifar")
        kinds = [[type(x) for x in layers] for layers in cifar.view_layers]
        assert kinds == [[RandomResizedCrop, ColorDistortion]] * 2

    def test_group_by_size(self):
        images = uint8_images()
        views = Views.from_preset("paws_cifar", size=16, seed=3)(
            images, training=True
        )
        grouped = Views.from_preset(
            "paws_cifar", size=16, seed=3, group_by_size=True
        )(images, training=True)
        assert sorted(grouped) == [9, 16]
        self.assertShape(grouped[16], (8, 16, 16, 3))
        self.assertShape(grouped[9], (24, 9, 9, 3))
        views = numpy_views(views)
        self.assertAllClose(grouped[16], np.concatenate(views[:2]), atol=0)
        self.assertAllClose(grouped[9], np.concatenate(views[2:]), atol=0)
        layer = Views.from_preset("paws_cifar", group_by_size=True)
        shapes = layer.compute_output_shape((4, 32, 32, 3))
        assert shapes == {32: (8, 32, 32, 3), 18: (24, 18, 18, 3)}

    def test_same_seed_same_views_and_views_differ(self):
        images = uint8_images()
        a = numpy_views(Views.from_preset("simclr_cifar", 16, seed=5)(images))
        b = numpy_views(Views.from_preset("simclr_cifar", 16, seed=5)(images))
        c = numpy_views(Views.from_preset("simclr_cifar", 16, seed=6)(images))
        for x, y in zip(a, b):
            self.assertAllClose(x, y, atol=0)
        assert np.abs(a[0] - c[0]).max() > 0.01
        # The two views of one call are different augmentations.
        assert np.abs(a[0] - a[1]).max() > 0.01

    def test_eval_is_deterministic_centre_crop(self):
        images = uint8_images(size=32)
        layer = Views.from_preset("simclr_imagenet", size=16, seed=0)
        a = numpy_views(layer(images, training=False))
        b = numpy_views(layer(images, training=False))
        crop = RandomResizedCrop(16, eval_crop_proportion=0.875)
        expected = crop(images, training=False)
        for x, y in zip(a, b):
            self.assertAllClose(x, y, atol=0)
            self.assertAllClose(x, expected, atol=1e-6)
        cifar = Views.from_preset("simclr_cifar", size=32)
        for view in cifar(images, training=False):
            self.assertAllClose(view, images / 255.0, atol=1e-7)

    def test_pipeline_order(self):
        # Full-image crop, no colour, solarize always: solarize(resize(x)).
        spec = ViewSpec(
            8,
            scale=(1.0, 1.0),
            ratio=(1.0, 1.0),
            flip=False,
            color_strength=0.0,
            p_grayscale=0.0,
            blur_p=0.0,
            solarize_p=1.0,
        )
        images = uint8_images(size=16)
        (view,) = Views([spec], seed=0)(images, training=True)
        resized = RandomResizedCrop(8)(images, training=False)
        resized = keras.ops.convert_to_numpy(resized)
        expected = np.where(resized >= 0.5, 1.0 - resized, resized)
        self.assertAllClose(view, expected, atol=1e-5)

    def test_dict_specs_and_config(self):
        layer = Views(
            [{"size": 8, "blur_p": 0.0}, {"size": (8, 6), "solarize_p": 0.2}],
            group_by_size=True,
            seed=1,
        )
        assert layer.specs[1].size == (8, 6)
        rebuilt = self.run_config_round_trip(layer)
        assert rebuilt.specs == layer.specs
        out = layer(uint8_images(), training=True)
        self.assertShape(out[8], (4, 8, 8, 3))
        self.assertShape(out[(8, 6)], (4, 8, 6, 3))

    def test_contract_and_saving(self):
        images = uint8_images()
        self.run_layer_contract(
            Views,
            {"specs": Views.preset_specs("simclr_imagenet", size=8), "seed": 0},
            images,
            expected_output_shape=(4, 8, 8, 3),
            # Augmentation computes and returns float32 under any policy.
            expected_mixed_output_dtype="float32",
        )

    def test_multicrop_alias(self):
        assert MultiCrop is Views

    @pytest.mark.parametrize(
        "kwargs, name",
        [
            ({"size": 0}, "size"),
            ({"color_strength": -1.0}, "color_strength"),
            ({"blur_p": 1.5}, "blur_p"),
            ({"solarize_p": -0.5}, "solarize_p"),
        ],
    )
    def test_spec_validation(self, kwargs, name):
        with pytest.raises(ValueError, match=f"`{name}`"):
            ViewSpec(**kwargs)

    def test_layer_validation(self):
        with pytest.raises(ValueError, match="`specs`"):
            Views([])
        with pytest.raises(ValueError, match="`scale`"):
            Views([ViewSpec(8, scale=(0.5, 0.1))])
        with pytest.raises(ValueError, match="`p_jitter`"):
            Views([{"size": 8, "p_jitter": 2.0}])

    @TF_ONLY
    def test_in_tf_data(self):
        import tensorflow as tf

        specs = [ViewSpec(16, blur_p=0.0), ViewSpec(8, solarize_p=0.5)]
        layer = Views(specs, seed=0)
        ds = tf.data.Dataset.from_tensor_slices(uint8_images(8)).batch(4)
        views = next(iter(ds.map(lambda x: tuple(layer(x, training=True)))))
        shapes = [tuple(v.shape) for v in views]
        assert shapes == [(4, 16, 16, 3), (4, 8, 8, 3)]
        grouped = Views(specs[1:] * 2, group_by_size=True, seed=0)
        out = next(iter(ds.map(lambda x: grouped(x, training=True))))
        assert tuple(out[8].shape) == (8, 8, 8, 3)

    @TF_ONLY
    def test_jit_compiled(self):
        import tensorflow as tf

        specs = [ViewSpec(24, blur_p=0.5, solarize_p=0.2), ViewSpec(10)]
        layer = Views(specs, seed=0)
        fn = tf.function(lambda x: layer(x, training=True), jit_compile=True)
        images = uint8_images(4, 32)
        a, b = numpy_views(fn(images)), numpy_views(fn(images))
        assert [v.shape for v in a] == [(4, 24, 24, 3), (4, 10, 10, 3)]
        assert np.abs(a[0] - b[0]).max() > 0

    @pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX only")
    def test_jax_jit(self):
        import jax

        specs = [ViewSpec(24, blur_p=0.5, solarize_p=0.2), ViewSpec(10)]
        layer = Views(specs, seed=0)
        state = [v.value for v in layer.non_trainable_variables]

        @jax.jit
        def fn(state, x):
            return layer.stateless_call([], state, x, training=True)

        a, state = fn(state, uint8_images(4, 32))
        b, _ = fn(state, uint8_images(4, 32))
        assert [v.shape for v in a] == [(4, 24, 24, 3), (4, 10, 10, 3)]
        assert np.abs(np.asarray(a[0]) - np.asarray(b[0])).max() > 0
