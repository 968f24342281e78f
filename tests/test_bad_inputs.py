"""Bad inputs across the package: each fails at once, naming itself.

Every case is one bad input and what must happen: a `ValueError` (or,
for the command line, argparse's exit) whose message names the argument
and, where practical, the value, raised before anything trains. The
cases are data: `benchmarks/bad_inputs_table.py` runs the same list and
prints the table of docs/reliability.md ("Every bad input, as raised"),
so the table quotes what the code raises. A served SavedModel checks its
input in the graph; those cases are at the end.
"""

import contextlib
import dataclasses
import importlib
import io
import math
import os
import pickle
import re

import keras
import numpy as np
import pytest

NAN, INF = math.nan, math.inf


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        area: str. The table's section.
        given: str. The input, as the table shows it.
        call: callable without arguments that gives the input.
        names: tuple of str. What the message must contain: the argument
            and, where practical, the value.
        error: str. The exception's type name.
    """

    area: str
    given: str
    call: object
    names: tuple
    error: str = "ValueError"


def run_case(case):
    """`(exception type name, message)` of `case.call()`; `("accepted",
    "")` when it raises nothing. An argparse exit's message is the last
    line it printed."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            case.call()
    except SystemExit as exit:
        lines = stderr.getvalue().strip().splitlines() or [str(exit.code)]
        return "SystemExit", lines[-1]
    except Exception as error:
        return type(error).__name__, str(error)
    return "accepted", ""


@pytest.fixture(autouse=True)
def _fresh_session():
    # Overrides the suite's: its `clear_session()` (a full garbage
    # collection, about 1 s) after each of these calls would take most of
    # the module's time; the models built here are tiny and independent.
    keras.utils.set_random_seed(0)
    yield


@pytest.fixture(autouse=True, scope="module")
def _clear_session_after_the_module():
    yield
    keras.backend.clear_session()


def _images(n=8, size=16, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, channels)).astype("uint8")


def _encoder():
    """A tiny encoder whose layers have fixed names (the messages that
    name a weight then read the same in every run)."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, x, name="encoder")


def _fine_tuner(num_classes=3, encoder=None, name="fine_tuner"):
    from keras_ssl.models import FineTuner

    model = FineTuner(encoder or _encoder(), num_classes, ft_layer=0, name=name)
    model.compile(optimizer="sgd")
    return model


# === Recipe configs ===


def _config_class(recipe):
    from keras_ssl.recipes import paws
    from keras_ssl.recipes import semppl
    from keras_ssl.recipes import simclrv2

    return {
        "SimCLRv2": simclrv2.SimCLRv2Config,
        "PAWS": paws.PAWSConfig,
        "SemPPL": semppl.SemPPLConfig,
    }[recipe]


def _config(recipe, **overrides):
    return lambda: _config_class(recipe).digits(**overrides)


def _config_case(recipe, name, value, *names):
    given = f"`{recipe}Config.digits({name}={value!r})`"
    names = names or (f"{name}={value!r}",)
    return Case(
        "Recipe configs", given, _config(recipe, **{name: value}), names
    )


CONFIG_CASES = [
    _config_case("SimCLRv2", "batch_size", -5),
    _config_case("SimCLRv2", "batch_size", 0),
    _config_case("SimCLRv2", "batch_size", 2.5),
    _config_case("SimCLRv2", "epochs", -1),
    _config_case("SimCLRv2", "steps_per_epoch", 0),
    _config_case("SimCLRv2", "steps_per_epoch", -3),
    _config_case("SimCLRv2", "seed", -1),
    _config_case("SimCLRv2", "learning_rate", 0.0),
    _config_case("SimCLRv2", "learning_rate", NAN),
    _config_case("SimCLRv2", "learning_rate", INF),
    _config_case("SimCLRv2", "weight_decay", -1e-4),
    _config_case("SimCLRv2", "weight_decay", INF),
    _config_case("SimCLRv2", "finetune_learning_rate", INF),
    _config_case("SimCLRv2", "finetune_learning_rate", -1.0),
    _config_case("SimCLRv2", "baseline_learning_rate", NAN),
    _config_case("SimCLRv2", "temperature", INF),
    _config_case("SimCLRv2", "temperature", 0.0),
    _config_case("SimCLRv2", "width_multiplier", INF),
    _config_case("SimCLRv2", "width_multiplier", 0),
    _config_case("SimCLRv2", "student_width_multiplier", INF),
    _config_case("SimCLRv2", "warmup_fraction", 1.5),
    _config_case("SimCLRv2", "warmup_fraction", NAN),
    _config_case("SimCLRv2", "labeled_fraction", 0.0, "labeled_fraction=0.0"),
    _config_case("SimCLRv2", "memory_momentum", 1.0),
    _config_case("SimCLRv2", "memory_momentum", 1.5),
    _config_case("SimCLRv2", "memory_size", -1),
    _config_case("SimCLRv2", "memory_views", 3),
    _config_case("SimCLRv2", "depth", 17),
    _config_case("SimCLRv2", "student_depth", 17, "depth=17"),
    _config_case("SimCLRv2", "stem", "foo"),
    _config_case("SimCLRv2", "sk_ratio", 1.0),
    _config_case("SimCLRv2", "image_size", 0),
    _config_case("SimCLRv2", "distill_temperature", INF),
    _config_case("SimCLRv2", "distill_temperature", -1.0),
    _config_case("SimCLRv2", "distill_alpha", 1.5),
    Case(
        "Recipe configs",
        "`SimCLRv2Config.cifar10_cpu(distill_alpha=0.5)` (no labeled batch)",
        lambda: _config_class("SimCLRv2").cifar10_cpu(distill_alpha=0.5),
        ("distill_alpha=0.5", "labeled_batch_size=0"),
    ),
    _config_case("SimCLRv2", "labeled_per_class", 0),
    _config_case(
        "SimCLRv2", "labeled_per_class", None, "labeled_per_class=None"
    ),
    _config_case("SimCLRv2", "crop_scale", (0.5, 0.2)),
    _config_case("SimCLRv2", "crop_scale", (0.2, INF), "crop_scale="),
    _config_case("SimCLRv2", "learning_rate_scaling", "cubic"),
    _config_case("SimCLRv2", "export", "on"),
    _config_case("SimCLRv2", "verbose", 5),
    _config_case("SimCLRv2", "dataset", "mnist"),
    _config_case("SimCLRv2", "stages", ("pretrain", "linear"), "'linear'"),
    _config_case("SimCLRv2", "ft_layer", -1),
    _config_case("SimCLRv2", "ft_layer", 4),
    _config_case("SimCLRv2", "precision", "float64"),
    _config_case("SimCLRv2", "interpolation_folds", 1),
    _config_case("SimCLRv2", "pretrain_steps", -1),
    _config_case("PAWS", "label_smoothing", 1.0),
    _config_case("PAWS", "images_per_class", 0),
    _config_case("PAWS", "me_max", "yes"),
    _config_case("PAWS", "sharpen_temperature", INF),
    _config_case("PAWS", "sharpen_temperature", 0.0),
    _config_case("PAWS", "learning_rate", INF),
    _config_case("SemPPL", "momentum", 1.0),
    _config_case("SemPPL", "queue_multiplier", 0),
    _config_case("SemPPL", "k", 0),
    _config_case("SemPPL", "labeled_batch_size", 0),
    _config_case("SemPPL", "alpha", NAN),
    _config_case("SemPPL", "invariance_scale", INF),
    _config_case("SemPPL", "contrastive_scale", NAN),
]


def _command_line(*argv):
    from keras_ssl.recipes import simclrv2
    from keras_ssl.recipes.config import config_from_command_line

    return lambda: config_from_command_line(
        simclrv2.SimCLRv2Config, "simclrv2", list(argv)
    )


def _cli_case(flag, value, *names):
    return Case(
        "Command line (`python -m keras_ssl.recipes.simclrv2 ...`)",
        f"`{flag} {value}`",
        _command_line(flag, value),
        names or (f"{flag[2:]}={value}",),
        error="SystemExit",
    )


CLI_CASES = [
    _cli_case("--learning_rate", "inf"),
    _cli_case("--learning_rate", "nan"),
    _cli_case("--weight_decay", "inf"),
    _cli_case("--distill_temperature", "inf"),
    _cli_case("--batch_size", "-5"),
    _cli_case("--memory_momentum", "1.5"),
    _cli_case("--depth", "17"),
    _cli_case("--epochs", "three", "--epochs", "'three'"),
    _cli_case("--export", "maybe", "--export", "'maybe'"),
    _cli_case("--stages", "linear", "--stages", "'linear'"),
]

# === Your own images: `fit(x=..., y=..., x_test=..., y_test=...)` ===


def _user(**changes):
    """`datasets.from_user`, where a recipe's `fit(x=...)` checks the
    arrays, on 40 images of 4 classes with `changes`."""
    from keras_ssl.recipes.datasets import from_user

    y = np.arange(40) % 4
    arrays = dict(x=_images(40, 8), y=y, x_test=_images(12, 8), y_test=y[:12])
    return lambda: from_user(image_size=8, **{**arrays, **changes})


def _with(array, index, value):
    array = np.array(array)
    array[index] = value
    return array


_Y = np.arange(40) % 4
_USER = "Your own images (`fit(x=..., y=..., x_test=..., y_test=...)`)"
USER_CASES = [
    Case(
        _USER,
        "`x` with no image",
        _user(x=_images(0, 8), y=_Y[:0]),
        ("`x`", "x.shape=(0, 8, 8, 3)"),
    ),
    Case(
        _USER,
        "`x_test` with no image",
        _user(x_test=_images(0, 8), y_test=_Y[:0]),
        ("`x_test`", "x_test.shape=(0, 8, 8, 3)"),
    ),
    Case(
        _USER,
        "`unlabeled` with no image",
        _user(unlabeled=_images(0, 8)),
        ("`unlabeled`", "unlabeled.shape=(0, 8, 8, 3)"),
    ),
    Case(
        _USER,
        "a label 100000 in `y` (classes 0-3 otherwise)",
        _user(y=_with(_Y, 0, 100000)),
        ("`y`", "100000"),
    ),
    Case(
        _USER,
        "`y` of classes 0, 1, 3 (no 2)",
        _user(y=np.where(_Y == 2, 3, _Y), y_test=np.zeros(12, int)),
        ("`y`", "[2]"),
    ),
    Case(
        _USER,
        "a class 9 in `y_test` that `y` never has",
        _user(y_test=_with(_Y[:12], 0, 9)),
        ("`y_test`", "[9]"),
    ),
    Case(
        _USER,
        "every labeled image of one class",
        _user(y=np.zeros(40, int), y_test=np.zeros(12, int)),
        ("`y`", "[0]"),
    ),
    Case(
        _USER,
        "`labeled_indices=[0, 500]` for 40 images",
        _user(labeled_indices=[0, 500]),
        ("labeled_indices=[0, 500]",),
    ),
    Case(
        _USER,
        "`labeled_indices=[]`",
        _user(labeled_indices=[]),
        ("labeled_indices=[]",),
    ),
    Case(
        _USER,
        "`labeled_indices=[3, 3]`",
        _user(labeled_indices=[3, 3]),
        ("labeled_indices=[3, 3]",),
    ),
    Case(_USER, "`x_test=None`", _user(x_test=None), ("x_test=None",)),
    Case(
        _USER,
        "`y` of 7 labels for 40 images",
        _user(y=np.zeros(7, int)),
        ("`y`", "shape=(7,)"),
    ),
    Case(
        _USER,
        "`y` of floats",
        _user(y=_Y.astype("float32")),
        ("`y`", "dtype=float32"),
    ),
    Case(
        _USER,
        "`x` of shape (40, 8, 8, 2)",
        _user(x=_images(40, 8, channels=2)),
        ("`x`", "x.shape=(40, 8, 8, 2)"),
    ),
    Case(
        _USER,
        "`unlabeled` floats in [0, 255]",
        _user(unlabeled=np.full((3, 8, 8), 200.0)),
        ("`unlabeled`", "max=200.0"),
    ),
    Case(
        _USER,
        "`y = -1` at a labeled position",
        _user(y=_with(_Y, 5, -1)),
        ("`y`", "min=-1"),
    ),
]

# === Optimizers ===


def _constructor(module, name):
    """`build(**kwargs)`: a call that makes `module.name(**kwargs)`."""

    def build(**kwargs):
        return lambda: getattr(importlib.import_module(module), name)(**kwargs)

    return build


_lars = _constructor("keras_ssl.optimizers", "LARS")


def _call_case(area, call, builder, name, value, *names):
    shown = "nan" if value is NAN else repr(value)
    given = f"`{call}({name}={shown})`"
    names = names or (f"{name}={value if isinstance(value, float) else shown}",)
    return Case(area, given, builder(**{name: value}), names)


def _optimizer_case(name, value, *names):
    return _call_case("Optimizers", "LARS", _lars, name, value, *names)


OPTIMIZER_CASES = [
    _optimizer_case("learning_rate", INF),
    _optimizer_case("learning_rate", NAN),
    _optimizer_case("learning_rate", 0.0),
    _optimizer_case("learning_rate", -1.0),
    _optimizer_case("weight_decay", INF),
    _optimizer_case("weight_decay", -1e-4),
    _optimizer_case("momentum", 1.0),
    _optimizer_case("momentum", NAN),
    _optimizer_case("momentum", "0.9", "momentum=0.9"),
    _optimizer_case("eeta", 0.0),
    _optimizer_case("eeta", INF),
    _optimizer_case("exclude_from_weight_decay", 5),
    _optimizer_case(
        "exclude_from_weight_decay", [1], "exclude_from_weight_decay=[1]"
    ),
    _optimizer_case(
        "exclude_from_layer_adaptation",
        ["("],
        "exclude_from_layer_adaptation=['(']",
    ),
]

# === Losses ===


def _distillation(teacher=(2, 3), student=(2, 3), **kwargs):
    from keras_ssl.losses import distillation

    return lambda: distillation(np.zeros(teacher), np.zeros(student), **kwargs)


def _paws(labels, **kwargs):
    from keras_ssl.losses import paws

    rng = np.random.default_rng(0)
    views = [rng.normal(size=(4, 5)).astype("float32") for _ in range(2)]
    support = rng.normal(size=(len(labels), 5)).astype("float32")
    return lambda: paws(views, support, np.array(labels), **kwargs)


_LOSS_MODULE = "keras_ssl.losses"


_LOSSES = "Losses"
LOSS_CASES = [
    Case(
        _LOSSES,
        "`distillation(teacher_logits (2, 3), student_logits (2, 4))`",
        _distillation(student=(2, 4)),
        ("teacher_logits.shape=(2, 3)", "student_logits.shape=(2, 4)"),
    ),
    Case(
        _LOSSES,
        "`distillation(..., alpha=0.5)` without labels",
        _distillation(alpha=0.5),
        ("alpha=0.5", "labels=None"),
    ),
    Case(
        _LOSSES,
        "`distillation(..., labels (3,), alpha=0.5)` without `labeled_logits`",
        _distillation(labels=np.array([0, 1, 2]), alpha=0.5),
        ("`labeled_logits`",),
    ),
    Case(
        _LOSSES,
        "`distillation(..., labels (3,), labeled_logits (2, 3))`",
        _distillation(
            labels=np.array([0, 1, 2]),
            labeled_logits=np.zeros((2, 3)),
            alpha=0.5,
        ),
        ("labels.shape=(3,)", "labeled_logits.shape=(2, 3)"),
    ),
    Case(
        _LOSSES,
        "`distillation(..., alpha=1.5)`",
        _distillation(alpha=1.5),
        ("alpha=1.5",),
    ),
    Case(
        _LOSSES,
        "`distillation(..., temperature=inf)`",
        _distillation(temperature=INF),
        ("temperature=inf",),
    ),
    _call_case(
        _LOSSES,
        "Distillation",
        _constructor(_LOSS_MODULE, "Distillation"),
        "temperature",
        0.0,
    ),
    Case(
        _LOSSES,
        "`paws(..., support_labels=[0, 1, 7], num_classes=3)`",
        _paws([0, 1, 7], num_classes=3),
        ("`support_labels`", "num_classes=3", "7]"),
    ),
    Case(
        _LOSSES,
        "`paws(..., support_labels=[-1, 0, 1], num_classes=3)`",
        _paws([-1, 0, 1], num_classes=3),
        ("`support_labels`", "[-1"),
    ),
    Case(
        _LOSSES,
        "`paws(..., support_labels=[0, 1, 2])` without `num_classes`",
        _paws([0, 1, 2]),
        ("num_classes=None",),
    ),
    _call_case(
        _LOSSES,
        "PAWS",
        _constructor(_LOSS_MODULE, "PAWS"),
        "label_smoothing",
        1.0,
    ),
    _call_case(
        _LOSSES,
        "PAWS",
        _constructor(_LOSS_MODULE, "PAWS"),
        "sharpen_temperature",
        INF,
    ),
    _call_case(
        _LOSSES, "PAWS", _constructor(_LOSS_MODULE, "PAWS"), "num_classes", 0
    ),
    _call_case(
        _LOSSES,
        "NTXent",
        _constructor(_LOSS_MODULE, "NTXent"),
        "temperature",
        INF,
    ),
    _call_case(
        _LOSSES,
        "NTXent",
        _constructor(_LOSS_MODULE, "NTXent"),
        "temperature",
        0,
    ),
    _call_case(
        _LOSSES, "SemPPL", _constructor(_LOSS_MODULE, "SemPPL"), "alpha", -1.0
    ),
]

# === Models ===


def _predict(x):
    return lambda: _fine_tuner().predict(x, verbose=0)


def _evaluate(x):
    return lambda: _fine_tuner().evaluate(x, np.arange(len(x)) % 3, verbose=0)


def _linear_head(x, labels):
    return lambda: _fine_tuner().fit_linear_head(x, np.asarray(labels))


def _fit(x):
    return lambda: _fine_tuner().fit(x, np.arange(len(x)) % 3, verbose=0)


def _distiller(same=False, shared=False, classes=3, **kwargs):
    from keras_ssl.models import Distiller

    def make():
        teacher = _fine_tuner(name="teacher")
        if same:
            return Distiller(teacher, teacher, **kwargs)
        encoder = teacher.network if shared else None
        student = _fine_tuner(classes, encoder, name="student")
        return Distiller(teacher, student, **kwargs)

    return make


def _distiller_fit(**kwargs):
    def fit():
        distiller = _distiller(**kwargs)()
        distiller.compile(optimizer="sgd")
        try:
            distiller.fit(_images(), epochs=1, verbose=0)
        finally:
            # Refused before the first step.
            assert int(distiller.optimizer.iterations) == 0

    return fit


def _fine_tuner_args(**kwargs):
    from keras_ssl.models import FineTuner

    return lambda: FineTuner(_encoder(), **kwargs)


_FLOAT_255 = _images().astype("float32")
_NAN_IMAGES = np.full((8, 16, 16, 3), NAN, "float32")
_MODELS = "Models"
MODEL_CASES = [
    Case(
        _MODELS,
        "`FineTuner.predict(x)`, x float32 in [0, 255]",
        _predict(_FLOAT_255),
        ("FineTuner.predict", "x with dtype=float32", "max=25"),
    ),
    Case(
        _MODELS,
        "`FineTuner.predict(x)`, x of shape (0, 16, 16, 3)",
        _predict(_images(0)),
        ("FineTuner.predict", "x.shape=(0, 16, 16, 3)"),
    ),
    Case(
        _MODELS,
        "`FineTuner.predict(x)`, x of shape (8, 16, 16, 1)",
        _predict(_images(channels=1)),
        ("FineTuner.predict", "x.shape=(8, 16, 16, 1)"),
    ),
    Case(
        _MODELS,
        "`FineTuner.evaluate(x, y)`, x float32 in [0, 255]",
        _evaluate(_FLOAT_255),
        ("FineTuner.evaluate", "x with dtype=float32", "max=25"),
    ),
    Case(
        _MODELS,
        "`FineTuner.evaluate(x, y)`, x all NaN",
        _evaluate(_NAN_IMAGES),
        ("FineTuner.evaluate", "in x, every value is NaN"),
    ),
    Case(
        _MODELS,
        "`FineTuner.fit_linear_head(images, labels)`, images float32 in "
        "[0, 255]",
        _linear_head(_FLOAT_255, np.arange(8) % 3),
        ("FineTuner.fit_linear_head", "images with dtype=float32", "max=25"),
    ),
    Case(
        _MODELS,
        "`FineTuner(num_classes=3).fit_linear_head(images, labels)`, a label 5",
        _linear_head(_images(), _with(np.arange(8) % 3, 2, 5)),
        ("`labels`", "num_classes=3", "label 5"),
    ),
    Case(
        _MODELS,
        "`FineTuner.fit_linear_head(images, labels)`, 5 labels for 8 images",
        _linear_head(_images(), np.arange(5) % 3),
        ("`labels`", "labels.shape=(5,)"),
    ),
    Case(
        _MODELS,
        "`FineTuner.fit_linear_head(images, labels)`, float labels",
        _linear_head(_images(), np.arange(8) / 8),
        ("`labels`", "labels.dtype=float64"),
    ),
    Case(
        _MODELS,
        "`FineTuner.fit(x, y)`, x float32 in [0, 255]",
        _fit(_FLOAT_255),
        ("x with dtype=float32", "max=25"),
    ),
    Case(
        _MODELS,
        "`FineTuner.fit(x, y)`, x all NaN",
        _fit(_NAN_IMAGES),
        ("in x, every value is NaN",),
    ),
    Case(
        _MODELS,
        "`FineTuner.fit(x, y)`, x of shape (0, 16, 16, 3)",
        _fit(_images(0)),
        ("x.shape=(0, 16, 16, 3)",),
    ),
    Case(
        _MODELS,
        "`FineTuner.fit(x, y)`, x of shape (8, 16, 16)",
        _fit(_images()[..., 0]),
        ("x.shape=(8, 16, 16)",),
    ),
    Case(
        _MODELS,
        "`FineTuner.fit(x, y)`, x channels first (8, 3, 16, 16)",
        _fit(_images().transpose(0, 3, 1, 2)),
        ("x.shape=(8, 3, 16, 16)", "channels-first"),
    ),
    Case(
        _MODELS,
        "`FineTuner(encoder, num_classes=1)`",
        _fine_tuner_args(num_classes=1),
        ("num_classes=1",),
    ),
    Case(
        _MODELS,
        "`FineTuner(encoder, num_classes=3, ft_layer=2)` without a head",
        _fine_tuner_args(num_classes=3, ft_layer=2),
        ("ft_layer=2",),
    ),
    Case(
        _MODELS,
        "`Distiller(fine_tuner, fine_tuner)` (one model as both)",
        _distiller(same=True),
        ("`teacher`", "`student`", "the same model 'teacher'"),
    ),
    Case(
        _MODELS,
        "`Distiller(teacher, student)`, the student built on the teacher's "
        "encoder",
        _distiller(shared=True),
        ("`student`", "`teacher`", "shared weights, e.g. conv/kernel"),
    ),
    Case(
        _MODELS,
        "`Distiller(teacher, student)`, 3 classes and 4",
        _distiller(classes=4),
        ("teacher.num_classes=3", "student.num_classes=4"),
    ),
    Case(
        _MODELS,
        "`Distiller(teacher, student, alpha=nan)`",
        _distiller(alpha=NAN),
        ("alpha=nan",),
    ),
    Case(
        _MODELS,
        "`Distiller(teacher, student, alpha=0.5).fit(x)`, x without labels",
        _distiller_fit(alpha=0.5),
        ("alpha=0.5", "labels=None"),
    ),
    Case(
        _MODELS,
        "`Distiller(teacher, student, temperature=0.0)`",
        _distiller(temperature=0.0),
        ("temperature=0.0",),
    ),
]

# === Evaluation ===


def _knn_fit(embeddings, labels, **kwargs):
    from keras_ssl.evaluation import KNNClassifier

    return lambda: KNNClassifier(k=2, **kwargs).fit(
        np.asarray(embeddings), np.asarray(labels)
    )


def _knn_scores(queries):
    from keras_ssl.evaluation import KNNClassifier

    def scores():
        knn = KNNClassifier(k=2).fit(np.eye(4), np.arange(4) % 2)
        return knn.scores(np.asarray(queries))

    return scores


def _evaluation_builder(name):
    return _constructor("keras_ssl.evaluation", name)


_EVAL = "Evaluation (k-NN, soft nearest neighbour)"
_E = np.eye(4)
EVALUATION_CASES = [
    Case(
        _EVAL,
        "`KNNClassifier().fit(embeddings, labels)`, one NaN in embeddings",
        _knn_fit(_with(_E, (0, 0), NAN), [0, 1, 0, 1]),
        ("`embeddings`", "1 NaN or infinite"),
    ),
    Case(
        _EVAL,
        "`KNNClassifier().fit(embeddings, labels)`, embeddings all inf",
        _knn_fit(np.full((4, 4), INF), [0, 1, 0, 1]),
        ("`embeddings`", "16 NaN or infinite"),
    ),
    Case(
        _EVAL,
        "`KNNClassifier().scores(queries)`, NaN queries",
        _knn_scores(np.full((2, 4), NAN)),
        ("`queries`", "8 NaN or infinite"),
    ),
    Case(
        _EVAL,
        "`KNNClassifier().scores(queries)`, queries of dim 3 for 4",
        _knn_scores(np.ones((2, 3))),
        ("`queries`", "queries.shape=(2, 3)"),
    ),
    Case(
        _EVAL,
        "`KNNClassifier().fit(embeddings, labels)`, 3 labels for 4",
        _knn_fit(_E, [0, 1, 0]),
        ("labels.shape=(3,)",),
    ),
    Case(
        _EVAL,
        "`KNNClassifier().fit(embeddings, labels)`, no embedding",
        _knn_fit(np.zeros((0, 4)), np.zeros(0, int)),
        ("`embeddings`", "embeddings.shape[0]=0"),
    ),
    Case(
        _EVAL,
        "`KNNClassifier(num_classes=2).fit(embeddings, labels)`, a label 5",
        _knn_fit(_E, [0, 1, 5, 1], num_classes=2),
        ("`labels`", "num_classes=2", "5]"),
    ),
    Case(
        _EVAL,
        "`KNNClassifier().fit(embeddings, labels)`, float labels",
        _knn_fit(_E, [0.0, 1.0, 0.0, 1.0]),
        ("labels.dtype=float64",),
    ),
    Case(
        _EVAL,
        "`KNNClassifier().fit(embeddings, labels)`, embeddings of rank 1",
        _knn_fit(np.ones(4), [0, 1, 0, 1]),
        ("embeddings.shape=(4,)",),
    ),
    _call_case(
        _EVAL, "KNNClassifier", _evaluation_builder("KNNClassifier"), "k", 0
    ),
    _call_case(
        _EVAL,
        "KNNClassifier",
        _evaluation_builder("KNNClassifier"),
        "temperature",
        INF,
    ),
    _call_case(
        _EVAL,
        "SoftNearestNeighbour",
        _evaluation_builder("SoftNearestNeighbour"),
        "temperature",
        0.0,
    ),
]

# === Data ===


def _prepare(images, **kwargs):
    from keras_ssl.data import prepare_images

    return lambda: prepare_images(images, **{"image_size": 8, **kwargs})


_DATA = "Images (`keras_ssl.data.prepare_images`)"
DATA_CASES = [
    Case(
        _DATA,
        "`prepare_images(x, image_size=0)`",
        _prepare(_images(2, 8), image_size=0),
        ("image_size=0",),
    ),
    Case(
        _DATA,
        "`prepare_images(x, 8, method='nearest')`",
        _prepare(_images(2, 8), method="nearest"),
        ("method='nearest'",),
    ),
    Case(
        _DATA,
        "`prepare_images(x, 8)`, x of shape (2, 8, 8, 2)",
        _prepare(_images(2, 8, channels=2)),
        ("images.shape=(2, 8, 8, 2)",),
    ),
    Case(
        _DATA,
        "`prepare_images(x, 8)`, x float in [0, 255]",
        _prepare(_images(2, 8).astype("float32")),
        ("`images`", "dtype=float32"),
    ),
    Case(
        _DATA,
        "`prepare_images(x, 8, method='pad')`, x of 16 x 16 px",
        _prepare(_images(2, 16), method="pad"),
        ("image_size=8", "16x16"),
    ),
]

# === Export and files ===


def _export(model_fn, **kwargs):
    import tempfile

    from keras_ssl.export import export_saved_model

    def export():
        with tempfile.TemporaryDirectory() as folder:
            export_saved_model(model_fn(), f"{folder}/model", **kwargs)

    return export


def _embed(images):
    return images


def _nan_weight_model():
    model = _fine_tuner()
    kernel = model.classifier.kernel
    kernel.assign(np.full(kernel.shape, NAN, "float32"))
    return model


def _load_file(loader, name, content=b""):
    """A call of `keras_ssl.pretrained.<loader>` on a file `name` holding
    `content`, in a temporary folder."""
    import tempfile

    def load():
        from keras_ssl import pretrained

        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, name)
            with open(path, "wb") as f:
                f.write(content)
            getattr(pretrained, loader)(path)

    return load


_CUT_PICKLE = pickle.dumps({"w": np.ones(3, "float32")})[:-5]
_FILES = "Export and files"
EXPORT_CASES = [
    Case(
        _FILES,
        "`load_pickle(path)`, an empty file",
        _load_file("load_pickle", "empty.pkl"),
        ("`path`", "empty.pkl", "an empty file"),
    ),
    Case(
        _FILES,
        "`load_pickle(path)`, a pickle cut short",
        _load_file("load_pickle", "cut.pkl", _CUT_PICKLE),
        ("`path`", "cut.pkl", f"cut at {len(_CUT_PICKLE)} bytes"),
    ),
    Case(
        _FILES,
        "`load_semppl(path)`, an empty file",
        _load_file("load_semppl", "empty.pkl"),
        ("`path`", "empty.pkl", "an empty file"),
    ),
    Case(
        _FILES,
        "`load_torch(path)`, an empty file",
        _load_file("load_torch", "empty.pth.tar"),
        ("empty.pth.tar", "zip format"),
    ),
    Case(
        _FILES,
        "`export_saved_model(a_function, path)`",
        _export(lambda: lambda images: images),
        ("`model`", "of type function"),
    ),
    Case(
        _FILES,
        "`export_saved_model(model, path)`, a model never built, without "
        "`image_size`",
        _export(lambda: keras.Sequential([keras.layers.Dense(2)], name="mlp")),
        ("`model`", "model='mlp'"),
    ),
    Case(
        _FILES,
        "`export_saved_model(a_model_with_a_nan_weight, path)`",
        _export(_nan_weight_model),
        ("non-finite weights", "classifier/kernel"),
    ),
]

CASES = (
    CONFIG_CASES
    + CLI_CASES
    + USER_CASES
    + OPTIMIZER_CASES
    + LOSS_CASES
    + MODEL_CASES
    + EVALUATION_CASES
    + DATA_CASES
    + EXPORT_CASES
)


@pytest.mark.parametrize("case", CASES, ids=[c.given for c in CASES])
def test_bad_input_fails_naming_it(case):
    error, message = run_case(case)
    assert error == case.error, message
    for name in case.names:
        assert name in message, (name, message)


def test_fine_tuner_checks_come_before_any_step():
    model = _fine_tuner()
    with pytest.raises(ValueError):
        model.fit_linear_head(_FLOAT_255, np.arange(8) % 3)
    with pytest.raises(ValueError):
        model.fit(_FLOAT_255, np.arange(8) % 3, verbose=0)
    assert int(model.optimizer.iterations) == 0
    np.testing.assert_array_equal(model.classifier.kernel.numpy(), 0.0)


def _float_fields(config_cls):
    hints = {f.name: f.type for f in dataclasses.fields(config_cls) if f.init}
    return [name for name, kind in hints.items() if "float" in str(kind)]


@pytest.mark.parametrize("recipe", ["SimCLRv2", "PAWS", "SemPPL"])
def test_every_float_field_refuses_non_finite_values(recipe):
    config_cls = _config_class(recipe)
    fields = _float_fields(config_cls)
    assert {"learning_rate", "weight_decay", "temperature"} <= set(fields)
    for name in fields:
        for value in (INF, -INF, NAN):
            with pytest.raises(ValueError, match=f"{name}={value}"):
                config_cls.digits(**{name: value})


def test_a_float_field_left_unchecked_would_be_found():
    # The test above finds fields by their annotation: one without a
    # rule would be made with inf and fail it.
    from keras_ssl.recipes import simclrv2

    assert "distill_temperature" in _float_fields(simclrv2.SimCLRv2Config)
    assert "batch_size" not in _float_fields(simclrv2.SimCLRv2Config)


def test_paws_support_labels_in_range_still_give_the_loss():
    from keras_ssl.losses import paws

    rng = np.random.default_rng(0)
    views = [rng.normal(size=(4, 5)).astype("float32") for _ in range(2)]
    support = rng.normal(size=(3, 5)).astype("float32")
    loss = paws(views, support, np.array([0, 1, 2]), num_classes=3)
    assert np.isfinite(float(loss))


# === The served SavedModel ===

# (given, images): inputs `serving_default` refuses in the graph.
SERVED_CASES = [
    ("an RGBA batch (2, 16, 16, 4)", _images(2, channels=4)),
    ("a batch of 0x0 images (2, 0, 0, 3)", _images(2, size=0)),
    ("one image without a batch axis (16, 16, 3)", _images(1)[0]),
    ("an empty batch (0, 16, 16, 3)", _images(0)),
    ("a batch of 2-channel images (2, 16, 16, 2)", _images(2, channels=2)),
]
SERVED_MESSAGE = "`images` must be a batch of uint8 images (B, H, W, 3)"
# Gray images are served as RGB ones (as `serve_encoded` decodes them).
SERVED_GRAY = ("gray images (2, 16, 16, 1)", _images(2, channels=1))


def served_error(served, images):
    """`(exception type name, the check's message)` of serving `images`."""
    import tensorflow as tf

    try:
        served.signatures["serving_default"](images=tf.constant(images))
    except tf.errors.InvalidArgumentError as error:
        # "... assertion failed: [message] [shape] ...": the check's data.
        data = error.message.partition("assertion failed: ")[2]
        parts = re.findall(r"\[([^\[\]]*)\]", data.split("\n")[0])
        message = f"{parts[0]} [{parts[1]}]" if len(parts) > 1 else data
        return type(error).__name__, message
    return "accepted", ""


def export_tiny(path):
    """A tiny `FineTuner` exported to `path`, loaded back."""
    import tensorflow as tf

    from keras_ssl.export import export_saved_model

    export_saved_model(_fine_tuner(), str(path))
    return tf.saved_model.load(str(path))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    return export_tiny(tmp_path_factory.mktemp("served") / "model")


@pytest.mark.parametrize(
    "images", [c[1] for c in SERVED_CASES], ids=[c[0] for c in SERVED_CASES]
)
def test_served_model_refuses_a_bad_batch_naming_it(served, images):
    error, message = served_error(served, images)
    assert error == "InvalidArgumentError"
    assert SERVED_MESSAGE in message
    assert f"images.shape = [{' '.join(map(str, images.shape))}]" in message


def test_served_model_takes_gray_images_as_rgb(served):
    import tensorflow as tf

    serve = served.signatures["serving_default"]
    gray = SERVED_GRAY[1]
    assert served_error(served, gray) == ("accepted", "")
    outputs = serve(images=tf.constant(gray))
    rgb = serve(images=tf.constant(np.repeat(gray, 3, axis=-1)))
    assert outputs["logits"].shape == (2, 3)
    np.testing.assert_allclose(outputs["embedding"], rgb["embedding"])


def test_served_model_refuses_an_empty_encoded_batch(served):
    import tensorflow as tf

    serve = served.signatures["serve_encoded"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="`encoded`"):
        serve(encoded=tf.constant([], tf.string))


def test_the_reliability_table_is_what_the_cases_raise(load_benchmark):
    import pathlib

    table = load_benchmark("bad_inputs_table")
    doc = pathlib.Path(__file__).resolve().parents[1] / "docs"
    text = (doc / "reliability.md").read_text()
    written = text.split(table.BEGIN)[1].split(table.END)[0].strip()
    expected = table.markdown(table.results(table.load_cases()))
    assert written == expected.strip()
