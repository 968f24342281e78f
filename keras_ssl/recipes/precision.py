"""The precision a recipe computes in: `precision="auto"` and its checks.

Low precision pays only where the hardware computes in it natively. On a
CPU with AVX512-BF16 or AMX-BF16 the SimCLRv2 step ran 1.75x faster than
SimCLR's float32 step in bfloat16; on an AVX2-only CPU, where bfloat16 is
emulated, the same step in bfloat16 was 11.2x slower than in float32
(docs/benchmarks.md). `choose_precision` is a pure function of the CPU's
flags and the devices, so every case can be fed to it; `detect` reads
them from the machine (TensorFlow's or JAX's device queries and
`/proc/cpuinfo`). Nothing here imports Keras or TensorFlow at import time.
"""

import os
import warnings
from dataclasses import asdict
from dataclasses import dataclass

from keras_ssl.recipes.config import PRECISION_CHOICES
from keras_ssl.recipes.config import PRECISIONS
from keras_ssl.recipes.config import check_choice

# `/proc/cpuinfo` flags of native bfloat16 arithmetic on x86 CPUs.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# The flags benchmarks print with their machine: the instruction sets that
# decide float32 and low-precision speed on x86.
INSTRUCTION_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
# The step measured on an AVX2-only CPU (docs/benchmarks.md).
EMULATED_BF16 = (
    "11.2x slower than float32 in the SimCLRv2 step measured on a 2-core "
    "AMD EPYC with AVX2 and FMA but no AVX-512 (docs/benchmarks.md)"
)


class SlowPrecisionWarning(UserWarning):
    """A precision chosen explicitly that the hardware only emulates."""


@dataclass(frozen=True)
class Device:
    """A compute device, as TensorFlow or JAX lists it.

    Attributes:
        platform: str. `"cpu"`, `"gpu"`, `"tpu"`, or another platform's
            name (an unknown device).
        name: str. The device's model, where known.
        compute_capability: tuple of int or `None`. A GPU's CUDA compute
            capability, e.g. `(8, 0)`.
    """

    platform: str
    name: str = ""
    compute_capability: tuple | None = None


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run uses, and why.

    Attributes:
        requested: str. The config's `precision` (`"auto"` or a precision).
        precision: str. The precision used: `"float32"`, `"bfloat16"` or
            `"float16"`.
        policy: str. Its Keras dtype policy.
        device: str. The device it was chosen for, in words.
        reason: str. Why `auto` picks what it picks on this device.
        native: bool. Whether the device computes in `precision` natively.
    """

    requested: str
    precision: str
    policy: str
    device: str
    reason: str
    native: bool

    def message(self):
        """The line a run prints at its start (`describe`)."""
        return describe(self.as_dict())

    def as_dict(self):
        return asdict(self)


def describe(choice):
    """The precision line of a run and its report, from
    `PrecisionChoice.as_dict()`."""
    how = "auto" if choice["requested"] == "auto" else "as set"
    if not choice["native"]:
        how += ", not native here"
    return (
        f"Precision: {choice['precision']} ({how}; {choice['device']}: "
        f"{choice['reason']})."
    )


@dataclass(frozen=True)
class _Support:
    device: str
    native: tuple  # low precisions computed natively, best first
    reason: str
    slowdown: str = "expect it to be slower than float32 (not measured here)"


def choose_precision(requested, cpu_flags, devices):
    """The precision a run uses on a machine, as a `PrecisionChoice`.

    With `requested="auto"`: on a TPU bfloat16; on GPUs (the least capable
    decides) bfloat16 from compute capability 8.0 (Ampere), float16 with
    Keras's loss scaling on 7.x, float32 below; on a CPU bfloat16 where it
    has AVX512-BF16 or AMX-BF16, float32 otherwise; float32 on a device
    it does not know. Any other value is used as it is.

    Args:
        requested: str. `"auto"`, `"float32"`, `"bfloat16"` or `"float16"`.
        cpu_flags: collection of str or `None`. The CPU's flags as
            `/proc/cpuinfo` lists them; `None` where they cannot be read.
        devices: sequence of `Device`. Every device the run can see.

    Returns:
        A `PrecisionChoice`.
    """
    check_choice("precision", requested, PRECISION_CHOICES)
    support = _support(cpu_flags, list(devices))
    if requested == "auto":
        precision = support.native[0] if support.native else "float32"
    else:
        precision = requested
    return PrecisionChoice(
        requested=requested,
        precision=precision,
        policy=PRECISIONS[precision],
        device=support.device,
        reason=support.reason,
        native=precision == "float32" or precision in support.native,
    )


def _support(cpu_flags, devices):
    accelerators = [d for d in devices if d.platform != "cpu"]
    if not devices:
        return _Support("no device listed", (), _UNKNOWN)
    if any(d.platform == "tpu" for d in accelerators):
        return _Support("TPU", ("bfloat16",), "TPUs compute in bfloat16")
    unknown = sorted({d.platform for d in accelerators} - {"gpu"})
    if unknown:
        return _Support(f"unknown device {', '.join(unknown)}", (), _UNKNOWN)
    if accelerators:
        return _gpu_support(accelerators)
    return _cpu_support(cpu_flags)


_UNKNOWN = "not known to compute faster in bfloat16 or float16 than float32"


def _gpu_support(gpus):
    names = ", ".join(sorted({g.name or "GPU" for g in gpus}))
    capabilities = [g.compute_capability for g in gpus]
    if None in capabilities:
        device = f"GPU {names}, compute capability unknown"
        return _Support(device, (), _UNKNOWN)
    least = min(tuple(c) for c in capabilities)
    shown = ".".join(map(str, least))
    device = f"GPU {names}, compute capability {shown}"
    if least >= (8, 0):
        reason = "bfloat16 is native from compute capability 8.0 (Ampere)"
        return _Support(device, ("bfloat16", "float16"), reason)
    if least >= (7, 0):
        reason = (
            "float16 tensor cores with Keras's loss scaling; bfloat16 is "
            "native only from compute capability 8.0"
        )
        return _Support(device, ("float16",), reason)
    reason = "no tensor cores (compute capability below 7.0)"
    return _Support(device, (), reason)


def _cpu_support(cpu_flags):
    if cpu_flags is None:
        reason = "its instruction set is unknown (no /proc/cpuinfo flags)"
        return _Support("CPU", (), reason)
    native = sorted(set(cpu_flags) & set(CPU_BF16_FLAGS))
    if native:
        reason = f"{' and '.join(native)}: bfloat16 is native"
        return _Support("CPU", ("bfloat16",), reason)
    reason = (
        "no avx512_bf16 or amx_bf16 flag: bfloat16 would be emulated, "
        + EMULATED_BF16
    )
    slowdown = "expect it to be many times slower than float32"
    return _Support("CPU", (), reason, slowdown=slowdown)


def slow_precision_warning(choice, cpu_flags, devices):
    """The warning for an explicit precision that the device does not
    compute in natively, or `None`."""
    if choice.native:
        return None
    support = _support(cpu_flags, list(devices))
    auto = choose_precision("auto", cpu_flags, devices).precision
    return (
        f"precision={choice.requested!r} is not native on this "
        f"{choice.device}: {choice.reason}. It still runs; "
        f"{support.slowdown}. precision='auto' uses {auto} here."
    )


def cpu_flags(path="/proc/cpuinfo"):
    """The CPU's flags from `/proc/cpuinfo` (its first `flags` line), or
    `None` where there is none (not Linux, or not x86)."""
    if not os.path.exists(path):
        return None
    with open(path) as lines:
        for line in lines:
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    return None


def instruction_flags(flags=None):
    """The flags of `INSTRUCTION_FLAGS` the CPU has, in words, for a
    benchmark's machine line."""
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        return "CPU flags not readable"
    present = [f for f in INSTRUCTION_FLAGS if f in flags]
    absent = [f for f in INSTRUCTION_FLAGS if f not in flags]
    text = "flags " + (" ".join(present) or "none of " + " ".join(absent))
    if present and absent:
        text += "; not " + " ".join(absent)
    return text


def _capability(value):
    """A compute capability as a tuple of ints: TensorFlow gives `(8, 0)`,
    JAX `"8.0"`."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split(".")
    return tuple(int(part) for part in value)


def tensorflow_devices():
    """Every physical device TensorFlow lists, and the TPU cores of an
    initialized TPU system (`tf.config.list_physical_devices`,
    `get_device_details` for a GPU's compute capability)."""
    # The backend in use, loaded when a run asks for its devices.
    import tensorflow as tf

    devices = []
    for device in tf.config.list_physical_devices():
        kind = device.device_type.lower()
        if kind.endswith("_system"):
            continue  # TPU_SYSTEM: the TPU's host, not a compute device.
        details = {}
        if kind == "gpu":
            details = tf.config.experimental.get_device_details(device)
        devices.append(
            Device(
                platform=kind,
                name=details.get("device_name", ""),
                compute_capability=_capability(
                    details.get("compute_capability")
                ),
            )
        )
    if not any(d.platform == "tpu" for d in devices):
        tpus = tf.config.list_logical_devices("TPU")
        devices += [Device("tpu", "TPU") for _ in tpus]
    return devices


def jax_devices():
    """Every device JAX lists (`jax.devices()`: `platform`, `device_kind`
    and a GPU's `compute_capability`)."""
    # As `tensorflow_devices`.
    import jax

    platforms = {"cuda": "gpu", "rocm": "gpu"}
    return [
        Device(
            platform=platforms.get(d.platform, d.platform),
            name=getattr(d, "device_kind", ""),
            compute_capability=_capability(
                getattr(d, "compute_capability", None)
            ),
        )
        for d in jax.devices()
    ]


def detect(requested):
    """`choose_precision` on this machine, with the devices of Keras's
    backend (TensorFlow's or JAX's) and `/proc/cpuinfo`'s flags; warns
    with a `SlowPrecisionWarning` when an explicit precision is not
    native here."""
    # Keras: loaded when a run starts, not with the command line.
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        devices = jax_devices()
    elif backend == "tensorflow":
        devices = tensorflow_devices()
    else:
        devices = [Device(backend)]
    flags = cpu_flags()
    choice = choose_precision(requested, flags, devices)
    warning = slow_precision_warning(choice, flags, devices)
    if warning:
        warnings.warn(warning, SlowPrecisionWarning, stacklevel=2)
    return choice
