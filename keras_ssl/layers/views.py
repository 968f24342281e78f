"""Multi-view augmentation (SimCLR views, SwAV/PAWS multi-crop) on device."""

import dataclasses

import keras

from keras_ssl._checks import check_non_negative
from keras_ssl._checks import check_probability
from keras_ssl.layers.color_distortion import ColorDistortion
from keras_ssl.layers.random_gaussian_blur import RandomGaussianBlur
from keras_ssl.layers.random_resized_crop import RandomResizedCrop
from keras_ssl.layers.random_resized_crop import normalize_size
from keras_ssl.layers.random_solarize import RandomSolarize


@dataclasses.dataclass(frozen=True)
class ViewSpec:
    """How to make one view: crop, flip, colour, blur and solarize settings.

    A view is `RandomResizedCrop` -> `ColorDistortion` ->
    `RandomGaussianBlur` -> `RandomSolarize`, in that order (SimCLR, BYOL and
    SemPPL's order). `Views` also accepts a plain dict with these keys.

    Args:
        size: int or tuple `(height, width)`. Output size. Defaults to `224`.
        scale: tuple. Crop area range as a fraction of the image. Defaults
            to `(0.08, 1.0)`.
        ratio: tuple. Crop aspect-ratio range. Defaults to `(3/4, 4/3)`.
        flip: bool. Random horizontal flip. Defaults to `True`.
        color_strength: float >= 0. SimCLR colour distortion strength.
            Defaults to `1.0`.
        p_jitter: float. Probability of colour jitter. Defaults to `0.8`.
        p_grayscale: float. Probability of grayscale. Defaults to `0.2`.
        brightness: optional float. Overrides `0.8 * color_strength`.
        contrast: optional float. Overrides `0.8 * color_strength`.
        saturation: optional float. Overrides `0.8 * color_strength`.
        hue: optional float. Overrides `0.2 * color_strength`.
        blur_p: float in [0, 1]. Probability of Gaussian blur; 0 skips the
            layer. Defaults to `0.5`.
        solarize_p: float in [0, 1]. Probability of solarization; 0 skips
            the layer. Defaults to `0.0`.
        eval_crop_proportion: float in (0, 1]. Centre-crop proportion when
            `training=False`. Defaults to `1.0`.
    """

    size: object = 224
    scale: tuple = (0.08, 1.0)
    ratio: tuple = (3.0 / 4.0, 4.0 / 3.0)
    flip: bool = True
    color_strength: float = 1.0
    p_jitter: float = 0.8
    p_grayscale: float = 0.2
    brightness: object = None
    contrast: object = None
    saturation: object = None
    hue: object = None
    blur_p: float = 0.5
    solarize_p: float = 0.0
    eval_crop_proportion: float = 1.0

    def __post_init__(self):
        height, width = normalize_size(self.size)
        # Square sizes stay plain ints: they are the keys of grouped views.
        size = height if height == width else (height, width)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "scale", tuple(self.scale))
        object.__setattr__(self, "ratio", tuple(self.ratio))
        check_non_negative("color_strength", self.color_strength)
        check_probability("blur_p", self.blur_p)
        check_probability("solarize_p", self.solarize_p)

    def to_dict(self):
        """The spec as a plain dict (what `get_config` stores)."""
        return dataclasses.asdict(self)


# The layers of a view, in order (the slot of their seed).
_VIEW_LAYERS = (
    RandomResizedCrop,
    ColorDistortion,
    RandomGaussianBlur,
    RandomSolarize,
)
# The `ViewSpec` fields of the layers' arguments they are not named after.
_RENAMED = {
    (ColorDistortion, "strength"): "color_strength",
    (RandomGaussianBlur, "p"): "blur_p",
    (RandomSolarize, "p"): "solarize_p",
}


def _layer_args(layer, spec):
    """The arguments of `layer` that `spec` sets (the others keep the
    layer's defaults, e.g. the blur's `sigma`)."""
    args = {}
    for name in layer.config_args:
        field = _RENAMED.get((layer, name), name)
        if hasattr(spec, field):
            args[name] = getattr(spec, field)
    return args


def _sub_seed(seed, view, index):
    # Distinct seeds per sub-layer: equal seeds would give equal streams,
    # e.g. the same crop for every view.
    if seed is None:
        return None
    return (seed * 1_000_003 + 4 * view + index) % (2**31 - 1)


def _simclr_imagenet():
    spec = ViewSpec(224, blur_p=0.5, eval_crop_proportion=0.875)
    return [spec, spec]


def _simclr_cifar():
    spec = ViewSpec(32, color_strength=0.5, blur_p=0.0)
    return [spec, spec]


def _paws_imagenet():
    kwargs = dict(color_strength=1.0, blur_p=0.5, eval_crop_proportion=0.875)
    large = ViewSpec(224, scale=(0.14, 1.0), **kwargs)
    small = ViewSpec(96, scale=(0.05, 0.14), **kwargs)
    return [large] * 2 + [small] * 6


def _paws_cifar():
    large = ViewSpec(32, scale=(0.75, 1.0), color_strength=0.5, blur_p=0.0)
    small = ViewSpec(18, scale=(0.3, 0.75), color_strength=0.5, blur_p=0.0)
    return [large] * 2 + [small] * 6


def _semppl_imagenet():
    jitter = dict(
        brightness=0.4,
        contrast=0.4,
        saturation=0.2,
        hue=0.1,
        eval_crop_proportion=0.875,
    )
    odd = dict(blur_p=0.1, solarize_p=0.2, **jitter)
    even = dict(blur_p=1.0, solarize_p=0.0, **jitter)
    large_odd = ViewSpec(224, scale=(0.14, 1.0), **odd)
    large_even = ViewSpec(224, scale=(0.08, 1.0), **even)
    small_odd = ViewSpec(96, scale=(0.05, 0.14), **odd)
    small_even = ViewSpec(96, scale=(0.05, 0.14), **even)
    return [large_odd, large_even, large_odd, large_even, small_odd, small_even]


_PRESETS = {
    "simclr_imagenet": _simclr_imagenet,
    "simclr_cifar": _simclr_cifar,
    "paws_imagenet": _paws_imagenet,
    "paws_cifar": _paws_cifar,
    "semppl_imagenet": _semppl_imagenet,
}


def _rescale(specs, size):
    """Sets the largest view to `size`; smaller views scale in proportion."""
    largest = max(max(normalize_size(s.size)) for s in specs)
    factor = size / largest

    def scaled(spec):
        h, w = normalize_size(spec.size)
        new = (max(1, round(h * factor)), max(1, round(w * factor)))
        return dataclasses.replace(spec, size=new)

    return [scaled(s) for s in specs]


@keras.saving.register_keras_serializable(package="keras_ssl")
class Views(keras.layers.Layer):
    """Makes several augmented views of each image in a batch, on device.

    Each view follows its own `ViewSpec` (crop size and scale, flip, colour
    distortion, blur and solarize probabilities) and draws its own random
    parameters per image. Views are returned as a list in spec order, or, with
    `group_by_size=True`, as a dict from size to one tensor holding every
    view of that size, view after view (`(n_views * B, h, w, 3)`: rows
    `[v * B, (v + 1) * B)` are view `v`), so that each resolution gets one
    forward pass through the encoder. Square sizes are int keys (`224`), others
    `(height, width)` tuples.

    Presets (`Views.from_preset(name)`):
    - `simclr_imagenet`: 2 x 224, crop scale (0.08, 1), colour strength 1.0,
      blur with p = 0.5 on both views. SimCLR v2, Sec. 3.1: "random crop,
      color distortion, and Gaussian blur"; SimCLR, Appendix A: "We blur the
      image 50% of the time".
    - `simclr_cifar`: 2 x 32, crop scale (0.08, 1), colour strength 0.5, no
      blur (SimCLR, Appendix B.9: strength 0.5 and no blur on CIFAR-10).
    - `paws_imagenet`: 2 x 224 with crop scale (0.14, 1) and 6 x 96 with
      scale (0.05, 0.14); colour strength 1.0, blur p = 0.5. PAWS, Sec. 5:
      "we apply the SimCLR data-augmentations [2, 1], specifically random
      crop, horizontal flip, color distortion, and Gaussian blur"; Appendix
      A: "The two large-crops (global views) are generated with scale (0.14,
      1.0), and the six small-crops (local views) are generated with scale
      (0.05, 0.14)". The paper gives no blur probability: SimCLR's 0.5.
    - `paws_cifar`: 2 x 32 with scale (0.75, 1) and 6 x 18 with scale
      (0.3, 0.75); colour strength 0.5, no blur. PAWS, Appendix C: "random
      crop, horizontal flip, and color distortion (but no Gaussian blur)"
      (the strength is not in the paper; 0.5 as SimCLR on CIFAR-10 and the
      PAWS CIFAR-10 config's `color_jitter_strength`).
    - `semppl_imagenet`: 4 x 224 + 2 x 96 with SemPPL's Table 12 (Appendix
      E): jitter brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1 with
      p = 0.8, grayscale p = 0.2; "the first and third large views and the
      first small view" use the odd-view column (blur p = 0.1, solarize
      p = 0.2), the others the even-view column (blur p = 1.0, solarize
      p = 0). Crop areas as the table's columns read: even large views
      (0.08, 1), odd large views (0.14, 1), small views (0.05, 0.14). List
      order: large 1-4, then small 1-2. Not implemented: the saliency
      masking, and the table's "probability of randomly cropping 50%"
      (every view is cropped); views are resized bilinearly, not bicubically.

    ImageNet presets evaluate (`training=False`) with SimCLR's 0.875 centre
    crop; CIFAR presets resize the whole image (the identity at 32 px).

    Args:
        specs: list of `ViewSpec` or dicts of `ViewSpec` fields.
        group_by_size: bool. Return a dict size -> views of that size
            instead of a list. Defaults to `False`.
        seed: optional int. Seeds every sub-layer (each its own stream).
        **kwargs: base `Layer` arguments.

    Example:

    ```python
    views = keras_ssl.layers.Views.from_preset("simclr_cifar", seed=0)
    images = np.random.randint(0, 256, (8, 32, 32, 3), dtype="uint8")
    view_1, view_2 = views(images, training=True)  # 2 x (8, 32, 32, 3)
    ```

    References:
        - [Chen et al., 2020](https://arxiv.org/abs/2002.05709), SimCLR.
        - [Chen et al., 2020](https://arxiv.org/abs/2006.10029), SimCLR v2.
        - [Caron et al., 2020](https://arxiv.org/abs/2006.09882), SwAV
          multi-crop.
        - [Assran et al., 2021](https://arxiv.org/abs/2104.13963), PAWS.
        - [Bošnjak et al., 2023](https://arxiv.org/abs/2301.05158), SemPPL.
    """

    def __init__(self, specs, group_by_size=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        specs = list(specs)
        if not specs:
            raise ValueError(
                f"`specs` must not be empty. Received: specs={specs}"
            )
        self.specs = [
            s if isinstance(s, ViewSpec) else ViewSpec(**s) for s in specs
        ]
        self.group_by_size = bool(group_by_size)
        self.seed = seed
        self.view_layers = [
            self._make_view(spec, i) for i, spec in enumerate(self.specs)
        ]
        self.built = True

    def _make_view(self, spec, i):
        layers = []
        for slot, layer in enumerate(_VIEW_LAYERS):
            args = _layer_args(layer, spec)
            # Blur and solarization only where they can happen; their
            # seeds keep their slots 2 and 3 either way.
            if args.get("p", 1.0) > 0:
                seed = _sub_seed(self.seed, i, slot)
                layers.append(layer(**args, seed=seed, dtype=self.dtype_policy))
        return layers

    @classmethod
    def presets(cls):
        """Names of the presets accepted by `from_preset`."""
        return sorted(_PRESETS)

    @classmethod
    def preset_specs(cls, name, size=None):
        """The `ViewSpec` list of a preset.

        Args:
            name: str. A preset name (see `Views.presets()`).
            size: optional int. Size of the largest views; smaller views
                are scaled in proportion (rounded), e.g. `paws_imagenet`
                with `size=64` gives 2 x 64 and 6 x 27.

        Returns:
            A list of `ViewSpec`.
        """
        if name not in _PRESETS:
            raise ValueError(
                f"Unknown preset `name`: {name!r}. Valid presets: "
                f"{', '.join(sorted(_PRESETS))}. Received: name={name!r}"
            )
        specs = _PRESETS[name]()
        if size is not None:
            normalize_size(size)
            specs = _rescale(specs, size)
        return specs

    @classmethod
    def from_preset(
        cls, name, size=None, group_by_size=False, seed=None, **kwargs
    ):
        """Builds `Views` from a named preset.

        Args:
            name: str. One of `simclr_imagenet`, `simclr_cifar`,
                `paws_imagenet`, `paws_cifar`, `semppl_imagenet`.
            size: optional int. Overrides the size of the largest views;
                smaller views scale in proportion.
            group_by_size: bool. See the class. Defaults to `False`.
            seed: optional int.
            **kwargs: base `Layer` arguments (`name`, `dtype`).

        Returns:
            A `Views` layer.
        """
        specs = cls.preset_specs(name, size=size)
        return cls(specs, group_by_size=group_by_size, seed=seed, **kwargs)

    def group(self, views):
        """Groups a list of views by size: `{size: (n * B, h, w, 3)}`."""
        grouped = {}
        for spec, view in zip(self.specs, views):
            grouped.setdefault(spec.size, []).append(view)
        return {
            size: tensors[0]
            if len(tensors) == 1
            else keras.ops.concatenate(tensors, axis=0)
            for size, tensors in grouped.items()
        }

    def apply_view(self, index, images, training=True):
        """View `index` of `images`: its crop, flip, colour and blur."""
        for layer in self.view_layers[index]:
            images = layer(images, training=training)
        return images

    def arrange(self, views):
        """The layer's output from the list of views: grouped by size
        with `group_by_size`, else the list."""
        return self.group(views) if self.group_by_size else views

    def call(self, images, training=True):
        return self.arrange(
            [
                self.apply_view(i, images, training)
                for i in range(len(self.view_layers))
            ]
        )

    def compute_output_shape(self, input_shape):
        shapes = [
            tuple(input_shape[:-3])
            + normalize_size(spec.size)
            + (input_shape[-1],)
            for spec in self.specs
        ]
        if not self.group_by_size:
            return shapes
        grouped = {}
        for spec, shape in zip(self.specs, shapes):
            grouped.setdefault(spec.size, []).append(shape)
        return {
            size: (None if s[0][0] is None else len(s) * s[0][0],) + s[0][1:]
            for size, s in grouped.items()
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "specs": [spec.to_dict() for spec in self.specs],
                "group_by_size": self.group_by_size,
                "seed": self.seed,
            }
        )
        return config


# SwAV / PAWS call this multi-crop; it is the same layer.
MultiCrop = Views
