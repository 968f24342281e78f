"""Keras deserialisation of keras_ssl objects without importing them first.

`import keras_ssl` loads its subpackages on first use, so that a recipe's
`--help` answers without importing Keras and its backend. A saved model
names its classes by registered name (`"keras_ssl>FineTuner"`), and Keras
finds a custom class only in its registry: it does not import the
`module` a config records unless that module belongs to Keras itself.

So `keras_ssl` puts a placeholder in Keras's registry for each of its
classes as soon as Keras is imported (at once if it already is, else by
an import hook that runs when `keras` has finished importing). The
placeholder's `from_config` imports the class's module, whose
`register_keras_serializable` decorator replaces the placeholder with the
class, and builds the object with the class's own `from_config`. No
keras_ssl module is imported before a saved object needs it.
"""

import importlib
import importlib.util
import sys

# Registered name -> the module that defines and registers it.
# tests/test_registry.py checks this table against the registry.
CLASSES = {
    "keras_ssl>ColorDistortion": "keras_ssl.layers.color_distortion",
    "keras_ssl>Distillation": "keras_ssl.losses.distillation",
    "keras_ssl>Distiller": "keras_ssl.models.distiller",
    "keras_ssl>FineTuner": "keras_ssl.models.fine_tuner",
    "keras_ssl>FusedBatchNormalization": (
        "keras_ssl.layers.fused_batch_normalization"
    ),
    "keras_ssl>LARS": "keras_ssl.optimizers.lars",
    "keras_ssl>MemoryQueue": "keras_ssl.layers.memory_queue",
    "keras_ssl>NTXent": "keras_ssl.losses.nt_xent",
    "keras_ssl>PAWS": "keras_ssl.losses.paws",
    "keras_ssl>PAWSPretrainer": "keras_ssl.models.paws_pretrainer",
    "keras_ssl>PretrainedModel": "keras_ssl.pretrained.pretrained_model",
    "keras_ssl>ProjectionHead": "keras_ssl.layers.projection_head",
    "keras_ssl>RandomGaussianBlur": "keras_ssl.layers.random_gaussian_blur",
    "keras_ssl>RandomResizedCrop": "keras_ssl.layers.random_resized_crop",
    "keras_ssl>RandomSolarize": "keras_ssl.layers.random_solarize",
    "keras_ssl>ResNet": "keras_ssl.backbones.resnet",
    "keras_ssl>SelectiveKernelAttention": "keras_ssl.backbones.resnet_blocks",
    "keras_ssl>SemPPL": "keras_ssl.losses.semppl",
    "keras_ssl>SemPPLPretrainer": "keras_ssl.models.semppl_pretrainer",
    "keras_ssl>SimCLRv2Pretrainer": "keras_ssl.models.simclrv2_pretrainer",
    "keras_ssl>Views": "keras_ssl.layers.views",
    "keras_ssl>WarmupCosineDecay": "keras_ssl.optimizers.warmup_cosine_decay",
}


class Placeholder:
    """Stands in Keras's registry for a keras_ssl class not yet imported."""

    def __init__(self, name, module):
        self.name = name
        self.module = module

    def resolve(self):
        """Imports the class's module; returns the class it registered."""
        # Keras: imported by then (a saved object is being loaded, or
        # Keras has just finished importing).
        import keras

        importlib.import_module(self.module)
        # The global registry, not `get_registered_object`: while Keras
        # deserialises, a scope holding a copy of it (this placeholder
        # included) takes precedence.
        cls = keras.saving.get_custom_objects().get(self.name)
        if cls is None or isinstance(cls, Placeholder):
            raise TypeError(
                f"Importing {self.module} did not register {self.name!r}."
            )
        return cls

    def from_config(self, *args, **kwargs):
        return self.resolve().from_config(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)

    def __repr__(self):
        return f"<keras_ssl class {self.name!r}, from {self.module}>"


def register():
    """Registers a placeholder for each keras_ssl class Keras lacks."""
    # Keras: imported by then (a saved object is being loaded, or
    # Keras has just finished importing).
    import keras

    registry = keras.saving.get_custom_objects()
    for name, module in CLASSES.items():
        registry.setdefault(name, Placeholder(name, module))


def install():
    """Calls `register()` now if Keras is imported, else right after it is.

    Called by `import keras_ssl`; it imports nothing itself.
    """
    if "keras" in sys.modules:
        register()
    elif not any(isinstance(f, _AfterKeras) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterKeras())


class _AfterKeras:
    """A `sys.meta_path` finder that runs `register()` once `keras` has
    been imported: it finds `keras` as the other finders would and wraps
    only its loader's `exec_module`."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _RegisterAfter(spec.loader)
        return spec


class _RegisterAfter:
    """The original loader, with `register()` after `exec_module`."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        # Once imported, the module points at its own loader again.
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        register()

    def __getattr__(self, name):
        return getattr(self.loader, name)
