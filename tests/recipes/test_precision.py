"""`precision="auto"`: the choice on each kind of hardware (fed, not
detected), the warning for an emulated precision set explicitly, the
command line, and a run's fingerprint and report."""

import json
import os

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from keras_ssl.recipes import paws
from keras_ssl.recipes import precision
from keras_ssl.recipes import semppl
from keras_ssl.recipes import simclrv2
from keras_ssl.recipes.checkpoints import StaleStageError
from keras_ssl.recipes.config import PRESETS
from keras_ssl.recipes.config import config_from_command_line
from keras_ssl.recipes.precision import Device
from keras_ssl.recipes.precision import SlowPrecisionWarning
from keras_ssl.recipes.precision import choose_precision
from tests.recipes.test_user_data import TINY

AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})
AVX512_BF16 = AVX2 | {"avx512f", "avx512_bf16"}
AMX = AVX2 | {"avx512f", "amx_tile", "amx_bf16"}
CPU = Device("cpu")


def gpu(major, minor, name="GPU"):
    return Device("gpu", name, (major, minor))


@pytest.mark.parametrize(
    "flags, devices, expected, reason",
    [
        (AVX512_BF16, [CPU], "bfloat16", "avx512_bf16"),
        (AMX, [CPU], "bfloat16", "amx_bf16"),
        (AVX2, [CPU], "float32", "11.2x slower than float32"),
        (None, [CPU], "float32", "instruction set is unknown"),
        (AVX2, [CPU, gpu(8, 0, "A100")], "bfloat16", "8.0 (Ampere)"),
        (AVX2, [CPU, gpu(9, 0)], "bfloat16", "8.0 (Ampere)"),
        (AVX512_BF16, [CPU, gpu(7, 5, "T4")], "float16", "loss scaling"),
        (AVX2, [CPU, gpu(7, 0)], "float16", "loss scaling"),
        (AVX512_BF16, [CPU, gpu(6, 0, "P100")], "float32", "below 7.0"),
        # The least capable GPU decides.
        (AVX2, [CPU, gpu(8, 0), gpu(7, 5)], "float16", "loss scaling"),
        (AVX2, [CPU, Device("gpu", "GPU")], "float32", "not known"),
        (AVX2, [CPU, Device("tpu", "TPU v4")], "bfloat16", "TPUs"),
        (AVX2, [CPU, Device("metal")], "float32", "not known"),
        (AVX2, [], "float32", "not known"),
    ],
)
def test_auto_picks_what_the_hardware_runs_natively(
    flags, devices, expected, reason
):
    choice = choose_precision("auto", flags, devices)
    assert choice.precision == expected
    assert (
        choice.policy
        == {
            "float32": "float32",
            "bfloat16": "mixed_bfloat16",
            "float16": "mixed_float16",
        }[expected]
    )
    assert choice.native
    assert reason in choice.reason
    assert choice.message().startswith(f"Precision: {expected} (auto; ")
    assert precision.slow_precision_warning(choice, flags, devices) is None


def test_an_unknown_device_is_named_in_the_note():
    choice = choose_precision("auto", AVX2, [CPU, Device("metal")])
    assert choice.device == "unknown device metal"
    assert "unknown device metal" in choice.message()
    gpu_choice = choose_precision("auto", AVX2, [Device("gpu", "X")])
    assert gpu_choice.device == "GPU X, compute capability unknown"


@pytest.mark.parametrize(
    "requested, flags, devices, warned",
    [
        ("bfloat16", AVX2, [CPU], "11.2x slower than float32"),
        ("bfloat16", None, [CPU], "not measured"),
        ("float16", AVX512_BF16, [CPU], "not measured"),
        ("bfloat16", AVX2, [CPU, gpu(7, 5)], "not measured"),
        ("float16", AVX2, [CPU, gpu(6, 1)], "not measured"),
        ("bfloat16", AVX2, [CPU, Device("metal")], "not measured"),
        ("bfloat16", AVX512_BF16, [CPU], None),
        ("bfloat16", AVX2, [CPU, Device("tpu")], None),
        ("float16", AVX2, [CPU, gpu(8, 6)], None),
        ("float16", AVX2, [CPU, gpu(7, 0)], None),
        ("float32", AVX2, [CPU], None),
        ("float32", AVX2, [Device("metal")], None),
    ],
)
def test_an_explicit_precision_runs_and_says_when_it_is_emulated(
    requested, flags, devices, warned
):
    choice = choose_precision(requested, flags, devices)
    assert choice.precision == requested
    shown = "as set; " if warned is None else "as set, not native here; "
    assert choice.message().startswith(f"Precision: {requested} ({shown}")
    message = precision.slow_precision_warning(choice, flags, devices)
    assert choice.native == (warned is None)
    if warned is None:
        assert message is None
    else:
        assert warned in message and f"precision='{requested}'" in message
        auto = choose_precision("auto", flags, devices).precision
        assert f"precision='auto' uses {auto} here" in message


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision='float64'"):
        choose_precision("float64", AVX2, [CPU])


@pytest.fixture
def machine(monkeypatch):
    """Makes `precision.detect` see the CPU flags and devices given."""

    def fake(flags, devices):
        monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
        monkeypatch.setattr(precision, "tensorflow_devices", lambda: devices)

    return fake


def test_detect_warns_once_for_an_emulated_explicit_choice(machine):
    machine(AVX2, [CPU])
    with pytest.warns(SlowPrecisionWarning) as caught:
        choice = precision.detect("bfloat16")
    assert len(caught) == 1
    assert "11.2x slower than float32" in str(caught[0].message)
    assert choice.policy == "mixed_bfloat16" and not choice.native
    # `auto` and a native choice are silent (warnings are errors here).
    assert precision.detect("auto").precision == "float32"
    machine(AMX, [CPU])
    assert precision.detect("bfloat16").native


def test_this_machine_is_read_through_the_backend():
    devices = precision.tensorflow_devices()
    assert any(d.platform == "cpu" for d in devices)
    flags = precision.cpu_flags()
    choice = choose_precision("auto", flags, devices)
    assert choice.precision in ("float32", "bfloat16", "float16")


def test_jax_devices_are_read():
    pytest.importorskip("jax")
    devices = precision.jax_devices()
    assert devices and all(isinstance(d, Device) for d in devices)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(
        "processor\t: 0\nmodel name\t: Some CPU\n"
        "flags\t\t: fpu avx2 fma avx512f avx512_bf16\n\n"
        "processor\t: 1\nflags\t\t: fpu\n"
    )
    flags = precision.cpu_flags(str(path))
    assert flags == {"fpu", "avx2", "fma", "avx512f", "avx512_bf16"}
    assert precision.cpu_flags(str(tmp_path / "missing")) is None
    text = precision.instruction_flags(flags)
    assert text.startswith("flags avx2 fma avx512f avx512_bf16; not ")
    assert "amx_bf16" in text.split("; not ")[1]
    assert precision.instruction_flags(frozenset()).startswith("flags none")


@pytest.mark.parametrize("recipe", [simclrv2, paws, semppl])
def test_every_preset_defaults_to_auto(recipe):
    config_cls = next(
        getattr(recipe, name)
        for name in dir(recipe)
        if name.endswith("Config") and name != "RecipeConfig"
    )
    for preset in PRESETS:
        assert getattr(config_cls, preset)().precision == "auto"
    prog = recipe.__name__
    config = config_from_command_line(config_cls, prog, ["--precision", "auto"])
    assert config.precision == "auto"
    with pytest.raises(SystemExit):
        config_from_command_line(config_cls, prog, ["--precision", "fp8"])


def _run(output_dir, **settings):
    bunch = load_digits()
    images = bunch.images / 16.0
    settings = dict(TINY, verbose=1, memory_size=0, **settings)
    return simclrv2.fit(
        x=images[:40],
        y=bunch.target[:40],
        x_test=images[40:50],
        y_test=bunch.target[40:50],
        stages=("pretrain",),
        pretrain_steps=1,
        baselines=False,
        output_dir=str(output_dir),
        **settings,
    )


def _saved_precision(output_dir):
    with open(os.path.join(output_dir, "pretrain", "fingerprint.json")) as f:
        return json.load(f)["fields"]["precision"]


@pytest.mark.slow
def test_the_fingerprint_and_report_record_the_precision_used(
    machine, tmp_path, capsys
):
    machine(AVX2, [CPU])
    result = _run(tmp_path)
    assert result.config.precision == "auto"
    assert result.precision["requested"] == "auto"
    assert result.precision["precision"] == "float32"
    assert "11.2x" in result.precision["reason"]
    assert _saved_precision(tmp_path) == "float32"
    with open(tmp_path / "report.json") as f:
        assert json.load(f)["precision"] == result.precision
    printed = capsys.readouterr().out
    line = "Precision: float32 (auto; CPU: no avx512_bf16 or amx_bf16 flag"
    # Once at the start and once in the report's table.
    assert printed.count(line) == 2
    assert line in result.summary()
    # `auto` that came to float32 is the same stage as float32 set.
    again = _run(tmp_path, precision="float32")
    assert again.precision["requested"] == "float32"
    assert _saved_precision(tmp_path) == "float32"
    assert "reusing the finished stage" in capsys.readouterr().out
    # On a CPU with bfloat16, `auto` is another stage.
    machine(AMX, [CPU])
    with pytest.raises(StaleStageError, match="'float32' then, 'bfloat16'"):
        _run(tmp_path)
    assert keras.config.dtype_policy().name == "float32"
    done = _run(tmp_path / "amx")
    assert done.precision["precision"] == "bfloat16"
    assert _saved_precision(tmp_path / "amx") == "bfloat16"
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.slow
def test_float16_models_train_with_keras_loss_scaling():
    """What `auto` picks on a 7.x GPU: a model built under `mixed_float16`
    gets Keras's `LossScaleOptimizer` around LARS when it is compiled, as
    a stage compiles it, and its train step scales the loss through it
    (the custom steps of the pretrainers are checked with it in
    tests/models/test_mixed_precision.py)."""
    from keras_ssl.models import FineTuner
    from keras_ssl.optimizers import LARS
    from tests.models.conftest import tiny_encoder
    from tests.models.model_cases import make_images
    from tests.models.model_cases import make_model

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        pretrainer = make_model("simclrv2", fixed=True)
        model = FineTuner(tiny_encoder(), num_classes=4, ft_layer=0)
    finally:
        keras.config.set_dtype_policy(previous)
    for each in (pretrainer, model):
        each.compile(optimizer=LARS(0.01))
        optimizer = each.optimizer
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        assert isinstance(optimizer.inner_optimizer, LARS)
    scaled = []
    scale_loss = model.optimizer.scale_loss

    def counted(loss):
        scaled.append(loss)
        return scale_loss(loss)

    model.optimizer.scale_loss = counted
    logs = model.train_on_batch(
        make_images(8), np.arange(8) % 4, return_dict=True
    )
    assert scaled
    assert np.isfinite(logs["loss"])
