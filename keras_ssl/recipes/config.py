"""Recipe configs and the one command line built from them.

Nothing here imports Keras or TensorFlow: a command line is parsed, and
`--help` answered, before either is loaded.
"""

import argparse
import dataclasses
import functools
import inspect
import math
import numbers
import os
import re
import types
import typing
from dataclasses import dataclass
from dataclasses import field

# The ResNet depths and stems `keras_ssl.backbones.ResNet` builds (a test
# keeps these in step with it without importing Keras here).
RESNET_DEPTHS = (18, 34, 50, 101, 152, 200)
RESNET_STEMS = ("imagenet", "cifar")
PRESETS = ("digits", "cifar10", "cifar10_cpu", "imagenet")
# Data sets the recipes stream instead of holding (`recipes/streams.py`).
STREAMED = ("imagenet2012", "folder")
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
# Fields that say where and how loudly a run goes, not what it computes:
# they are left out of the stages' fingerprints.
RUN_FIELDS = ("data_dir", "stages", "output_dir", "export", "overwrite")
RUN_FIELDS += ("strategy",)
RUN_FIELDS += ("verbose", "extra", "baselines", "knn_monitor_every")
# What every recipe's `cifar10()` preset shares: CIFAR-10 with 4,000
# labels (400 per class) on the CIFAR-stem ResNet-18.
CIFAR10 = {
    "dataset": "cifar10",
    "image_size": 32,
    "labeled_per_class": 400,
    "labeled_fraction": None,
    "depth": 18,
    "stem": "cifar",
}
# The small presets' fine-tuning (`digits()`, `cifar10_cpu()`): LP-FT at
# SimCLRv2's 0.005·√B on crops of at least 80% of the image, 30 epochs of
# the labeled images; chosen on a validation split of the digits'
# training images (docs/benchmarks.md, "How the fine-tuning settings were
# chosen").
SMALL_FINETUNING = {
    "finetune_epochs": 30,
    "finetune_learning_rate": 0.005,
    "finetune_crop_scale": (0.8, 1.0),
    # With 10-25 labels per class fine-tuning mostly costs accuracy (on a
    # validation split, every share of it below the probe): WiSE-FT's
    # share is chosen by 3-fold cross-validation on the labeled images.
    "interpolation_folds": 3,
}
# What every `cifar10_cpu()` preset shares with its `cifar10()`: 250
# labels (25 per class), a quarter of the width, the digits' pretraining
# rate and the small presets' fine-tuning.
CIFAR10_CPU = {
    "labeled_per_class": 25,
    "width_multiplier": 0.25,
    "learning_rate": 8.0,
    **SMALL_FINETUNING,
}
# What every `digits()` preset shares: scikit-learn's digits at 16 px,
# 10 labels per class, the CIFAR-stem ResNet-18 at a quarter of the
# width, batches of 128 at a learning rate far above the papers' (theirs
# are meant for 100k-step runs) and the small presets' fine-tuning.
DIGITS = {
    **CIFAR10,
    "dataset": "digits",
    "image_size": 16,
    "labeled_per_class": 10,
    "width_multiplier": 0.25,
    "batch_size": 128,
    "learning_rate": 8.0,
    **SMALL_FINETUNING,
}
# `precision` values and the Keras dtype policy each sets for a run.
PRECISIONS = {
    "float32": "float32",
    "bfloat16": "mixed_bfloat16",
    "float16": "mixed_float16",
}
# What the `precision` field accepts: `"auto"` picks one of `PRECISIONS`
# for the hardware (`recipes/precision.py`).
PRECISION_CHOICES = ("auto", *PRECISIONS)
_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")


@dataclass
class RecipeConfig:
    """The fields every recipe's config shares.

    `SimCLRv2Config`, `PAWSConfig` and `SemPPLConfig` subclass it with their
    own fields and the presets `imagenet()` (the defaults), `cifar10()` and
    `digits()`. Every field is checked when the config is made.

    Attributes:
        dataset: str. `"digits"`, `"cifar10"`, `"npz"` or `"tfds:NAME"`
            (held in memory); `"imagenet2012"` (a prepared tfds split) or
            `"folder"` (`data_dir/train/<class>/*`, `data_dir/val/...`),
            streamed; `"arrays"` when `fit()` is given the images.
        data_dir: str or `None`. Where the data set is (or is prepared).
        strategy: str. Where `fit()` runs when it is given no strategy:
            `"default"` (one device), `"mirrored"` (every local GPU),
            `"multi_worker"` (the workers of `TF_CONFIG`) or `"tpu"` (the
            TPU of `TPU_NAME`, or the local one).
        labels: str or `None`. The labeled subset of a streamed data set
            by name: `"1pct"` / `"10pct"` (SimCLR's ImageNet subsets) or
            the path of a file of training file names; `None` picks the
            subset from `labeled_fraction` / `labeled_per_class`.
        image_size: int. Side of the images, in pixels.
        labeled_per_class: int or `None`. Labeled training images per
            class; set this or `labeled_fraction`.
        labeled_fraction: float or `None`. Fraction of each class's
            training images that keep their label.
        seed: int. Seeds Keras, the labeled subset, the views and streams.
        depth: int. ResNet depth (18, 34, 50, 101, 152 or 200).
        width_multiplier: float. ResNet width; fractions give small nets.
        sk_ratio: float. Selective-kernel ratio in [0, 1); 0 for none.
        stem: str. `"imagenet"` or `"cifar"` (one 3x3 conv, no pooling).
        views: str. The `Views` preset of the pretraining augmentations.
        crop_scale: pair of floats or `None`. Area range of every view's
            random crop, when set.
        batch_size: int. Global batch of unlabeled images in pretraining.
        epochs: int. Pretraining epochs.
        learning_rate: float. Pretraining's base LARS learning rate.
        warmup_fraction: float. Share of pretraining's steps spent warming
            up the learning rate, in [0, 1].
        weight_decay: float. Pretraining's LARS weight decay.
        temperature: float. Softmax temperature of the pretraining loss.
        knn_monitor_every: int. Pretraining's k-NN monitor: every this many
            epochs (and after the last) the weighted k-NN accuracy of the
            encoder's features (k = 200, τ = 0.1, as the report's),
            cross-validated on the labeled images, is logged as
            `labeled_knn_accuracy` to the stage's history and TensorBoard
            log; 0 turns it off. It reads no test image, and changes
            nothing that trains (a stage is reused whatever its value).
        finetune_epochs: int. Fine-tuning epochs (0 skips fine-tuning).
        finetune_learning_rate: float. Fine-tuning's base LARS learning
            rate, scaled by the square root of the batch size.
        finetune_crop_scale: pair of floats or `None`. Area range of the
            fine-tuning crop (also the from-scratch baseline's); `None`
            for SimCLRv2's (0.08, 1).
        linear_probe_first: bool. LP-FT: fit the linear classifier on the
            frozen features first (logistic regression), then fine-tune
            the whole network from there with BatchNorm's pretrained
            statistics kept; otherwise the classifier starts at zero and
            BatchNorm normalises by batch statistics.
        finetune_interpolation: float in [0, 1]. With
            `linear_probe_first`, the share of the fine-tuned weights in
            the fine-tuned model: every weight becomes
            `(1 - a)·start + a·fine-tuned`, where the start is the
            pretrained network with the linear probe's head (WiSE-FT,
            Wortsman et al., 2022). 1 keeps the fine-tuned weights.
        interpolation_folds: int. With `linear_probe_first`, 0 uses
            `finetune_interpolation` as it is; K >= 2 chooses the share
            from 0, 0.25, 0.5, 0.75 and 1 by K-fold cross-validation on
            the labeled images (LP-FT on K-1 folds, every share scored on
            the fold left out; the smallest share within one standard
            error of the best), never on the test images. Costs K more
            fine-tunings.
        pretrain_steps: int or `None`. Pretraining's total steps, instead
            of `epochs` (0 skips the stage).
        finetune_steps: int or `None`. Fine-tuning's total steps, instead
            of `finetune_epochs`; also the budget of the from-scratch
            baseline.
        baselines: bool. Measure the baselines of the report: logistic
            regression and k-NN on the pixels, and the same network
            trained from scratch with fine-tuning's augmentation and
            step budget.
        baseline_learning_rate: float or `None`. The from-scratch
            network's base LARS rate, scaled by the square root of the
            batch size (`None`: fine-tuning's). The default 0.05 is ten
            times SimCLRv2's fine-tuning rate: a network from scratch
            needs to move far more than a pretrained one (on the digits,
            54.6% at 0.05 against 23.1% at 0.005, 43.7% at 0.3).
        precision: str. `"auto"`, `"float32"`, `"bfloat16"` or
            `"float16"`: the Keras dtype policy of the run (`"float32"`,
            `"mixed_bfloat16"`, `"mixed_float16"`), restored afterwards.
            `"auto"` uses low precision only where the hardware computes
            in it natively: bfloat16 on a TPU, on a GPU of compute
            capability 8.0 or above and on a CPU with AVX512-BF16 or
            AMX-BF16; float16 with loss scaling on a GPU of 7.x; float32
            elsewhere (emulated bfloat16 made a CPU step 11.2x slower).
            A precision set explicitly that the hardware only emulates
            still runs, with a `SlowPrecisionWarning`.
        stages: tuple of str. The stages to run. A chosen stage that
            starts from one left out loads that one's finished run from
            `output_dir` (and stops before training when there is none).
        steps_per_epoch: int or `None`. Steps per epoch of every stage;
            `None` for one pass over the stage's examples. A stage with a
            step budget (`pretrain_steps`, ...) splits it into epochs of
            about this length.
        output_dir: str. Where the stages keep weights, logs and backups;
            a rerun resumes from them.
        overwrite: bool. Retrain stages whose saved settings or data differ
            from this run's instead of stopping.
        export: bool. Export every trained model as a SavedModel, to
            `output_dir/export/<role>` (teacher, student, ...).
        verbose: int. `fit()`'s verbosity (0, 1 or 2).
        extra: dict. Free-form settings that the recipe ignores.
    """

    # The recipe's stage names; subclasses set it.
    STAGE_NAMES: typing.ClassVar[tuple] = ("pretrain", "finetune")

    # Data.
    dataset: str = "imagenet2012"
    data_dir: str | None = None
    labels: str | None = None
    strategy: str = "default"
    image_size: int = 224
    labeled_per_class: int | None = None
    labeled_fraction: float | None = 0.1
    seed: int = 0
    # Encoder.
    depth: int = 50
    width_multiplier: float = 1
    sk_ratio: float = 0.0
    stem: str = "imagenet"
    # Pretraining.
    views: str = "simclr_imagenet"
    crop_scale: tuple | None = None
    batch_size: int = 4096
    epochs: int = 100
    learning_rate: float = 0.3
    warmup_fraction: float = 0.1
    weight_decay: float = 1e-6
    temperature: float = 0.1
    knn_monitor_every: int = 1
    # Fine-tuning.
    finetune_epochs: int = 0
    finetune_learning_rate: float = 0.05
    finetune_crop_scale: tuple | None = None
    linear_probe_first: bool = True
    finetune_interpolation: float = 0.5
    interpolation_folds: int = 0
    # Step budgets (`None`: the epochs decide).
    pretrain_steps: int | None = None
    finetune_steps: int | None = None
    # Baselines and precision.
    baselines: bool = True
    baseline_learning_rate: float | None = 0.05
    precision: str = "auto"
    # Run.
    stages: tuple = ("pretrain", "finetune")
    steps_per_epoch: int | None = None
    output_dir: str = "runs"
    overwrite: bool = False
    export: bool = True
    verbose: int = 1
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.stages = tuple(self.stages)
        self.validate()

    def checks(self):
        """`(field, rule)` pairs that `validate` applies; see `_RULES`."""
        return (
            ("image_size", "int>=1"),
            ("labeled_per_class", "int>=1|None"),
            ("labeled_fraction", "(0,1]|None"),
            ("seed", "int>=0"),
            ("width_multiplier", ">0"),
            ("sk_ratio", "[0,1)"),
            ("batch_size", "int>=1"),
            ("epochs", "int>=0"),
            ("learning_rate", ">0"),
            ("warmup_fraction", "[0,1]"),
            ("weight_decay", ">=0"),
            ("temperature", ">0"),
            ("knn_monitor_every", "int>=0"),
            ("finetune_epochs", "int>=0"),
            ("finetune_learning_rate", ">0|None"),
            ("linear_probe_first", "bool"),
            ("finetune_interpolation", "[0,1]"),
            ("interpolation_folds", "int>=0"),
            ("pretrain_steps", "int>=0|None"),
            ("finetune_steps", "int>=0|None"),
            ("baselines", "bool"),
            ("baseline_learning_rate", ">0|None"),
            ("steps_per_epoch", "int>=1|None"),
            ("overwrite", "bool"),
            ("export", "bool"),
        )

    def validate(self):
        """Raises a `ValueError` naming the first field out of range."""
        for name, rule in self.checks():
            check(name, getattr(self, name), rule)
        check_choice("depth", self.depth, RESNET_DEPTHS)
        check_choice("stem", self.stem, RESNET_STEMS)
        check_choice("verbose", self.verbose, (0, 1, 2))
        if self.interpolation_folds == 1:
            raise ValueError(
                "`interpolation_folds` must be 0 (off) or >= 2. Received: "
                "interpolation_folds=1"
            )
        check_choice("precision", self.precision, PRECISION_CHOICES)
        _check_dataset(self.dataset)
        check_choice("strategy", self.strategy, STRATEGIES)
        if self.labels is not None and self.dataset not in STREAMED:
            raise ValueError(
                "`labels` selects the subset of a streamed data set "
                f"({', '.join(STREAMED)}); set `labeled_per_class` or "
                f"`labeled_fraction` for dataset={self.dataset!r}. "
                f"Received: labels={self.labels!r}"
            )
        if (self.labeled_per_class is None) == (self.labeled_fraction is None):
            raise ValueError(
                "Set exactly one of `labeled_per_class` and "
                "`labeled_fraction`. Received: labeled_per_class="
                f"{self.labeled_per_class}, labeled_fraction="
                f"{self.labeled_fraction}"
            )
        for name in ("crop_scale", "finetune_crop_scale"):
            _check_scale(name, getattr(self, name))
        unknown = set(self.stages) - set(self.STAGE_NAMES)
        if unknown:
            raise ValueError(
                f"Unknown `stages` {sorted(unknown)}; expected a subset of "
                f"{self.STAGE_NAMES}. Received: stages={self.stages}"
            )

    def global_batch_sizes(self):
        """Each global batch a replica count must divide, by name."""
        return {"batch_size": self.batch_size}


def preset(make):
    """A preset of a recipe's config: `make(cls)` builds it, and the
    classmethod's keyword arguments replace its fields
    (`SimCLRv2Config.digits(epochs=5)`)."""

    @functools.wraps(make)
    def with_overrides(cls, **overrides):
        return dataclasses.replace(make(cls), **overrides)

    return classmethod(with_overrides)


# Rules: "int>=N" (an int, not a bool), ">0", ">=0", interval notation
# "[a,b)", "bool"; "|None" also allows `None`.
_INTERVAL = re.compile(r"([\[(])([-\d.e]+),([-\d.e]+)([\])])")


def check(name, value, rule):
    """Raises a `ValueError` unless `value` of field `name` obeys `rule`."""
    if rule.endswith("|None"):
        if value is None:
            return
        rule = rule[: -len("|None")]
    if rule == "bool":
        ok = isinstance(value, bool)
        requirement = "True or False"
    elif rule.startswith("int>="):
        low = int(rule[len("int>=") :])
        ok = _is_int(value) and value >= low
        requirement = f"an int >= {low}"
    else:
        ok, requirement = _check_real(value, rule)
    if not ok:
        raise ValueError(
            f"`{name}` must be {requirement}. Received: {name}={value!r}"
        )


def _check_real(value, rule):
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    # NaN and infinities fail every rule (inf compares as > 0).
    real = real and -math.inf < value < math.inf
    if rule in (">0", ">=0"):
        requirement = rule.replace(">", "> ").replace("> =", ">= ")
        ok = real and (value > 0 if rule == ">0" else value >= 0)
        return ok, requirement + " and finite"
    match = _INTERVAL.fullmatch(rule)
    if not match:
        raise ValueError(f"Unknown rule {rule!r}")
    left, low, high, right = match.groups()
    low, high = float(low), float(high)
    ok = real and (low <= value if left == "[" else low < value)
    ok = ok and (value <= high if right == "]" else value < high)
    return ok, f"in {rule.replace(',', ', ')}"


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_choice(name, value, choices):
    """Raises a `ValueError` unless `value` is one of `choices`."""
    if value not in choices or isinstance(value, bool):
        raise ValueError(
            f"`{name}` must be one of {choices}. Received: {name}={value!r}"
        )


def _check_dataset(name):
    if name in ("digits", "cifar10", "npz", "arrays") + STREAMED or (
        isinstance(name, str) and name.startswith("tfds:") and name[5:]
    ):
        return
    raise ValueError(
        "Unknown `dataset`. Expected 'digits', 'cifar10', 'npz', "
        "'imagenet2012', 'folder', 'arrays' or 'tfds:NAME'. Received: "
        f"dataset={name!r}"
    )


def _check_scale(name, value):
    if value is None:
        return
    low, high = _pair(name, value)
    if not 0 < low <= high <= 1:
        raise ValueError(
            f"`{name}` must be (min, max) with 0 < min <= max <= 1. "
            f"Received: {name}={value}"
        )


def _pair(name, value):
    try:
        low, high = value
        return float(low), float(high)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be a pair of floats. Received: {name}={value!r}"
        ) from None


def field_docs(config_cls):
    """Each field's sentence from the `Attributes:` sections of the class
    and its bases (the subclass's text wins)."""
    docs = {}
    for cls in reversed(config_cls.__mro__):
        text = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
        if "Attributes:" not in text:
            continue
        section = text.split("Attributes:", 1)[1]
        name = None
        for line in section.splitlines():
            entry = re.match(r"    (\w+): (.*)", line)
            if entry:
                name = entry.group(1)
                docs[name] = entry.group(2).strip()
            elif line.startswith("        ") and name:
                docs[name] += " " + line.strip()
            elif line.strip():
                name = None
    return docs


def build_parser(config_cls, prog):
    """An `argparse` parser with `--preset` and one flag per field.

    Each flag's help is the field's sentence of the config's docstring,
    with its value in each preset. A flag that is not given keeps the
    preset's value; `none` sets an optional field to `None`.
    """
    docs = field_docs(config_cls)
    presets = {name: getattr(config_cls, name)() for name in PRESETS}
    parser = argparse.ArgumentParser(
        prog=prog,
        usage="%(prog)s [-h] [--preset PRESET] [--FIELD VALUE ...]",
        description=inspect.cleandoc(config_cls.__doc__ or "").split("\n")[0],
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--preset",
        default=PRESETS[0],
        choices=PRESETS,
        help="The settings every other flag starts from. Default: digits.",
    )
    for f in dataclasses.fields(config_cls):
        if f.name == "extra":
            continue
        values = {p: getattr(c, f.name) for p, c in presets.items()}
        text = docs.get(f.name, "")
        if len(set(map(repr, values.values()))) == 1:
            text += f" Default: {_show(values['digits'])}."
        else:
            shown = ", ".join(f"{p} {_show(v)}" for p, v in values.items())
            text += f" Default: {shown}."
        # argparse formats help with `%`: a literal one is written `%%`.
        text = text.replace("%", "%%")
        parser.add_argument(f"--{f.name}", help=text, **_flag(config_cls, f))
    return parser


def _show(value):
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return str(value)


def _flag(config_cls, f):
    if f.name == "stages":
        return dict(nargs="+", choices=config_cls.STAGE_NAMES, metavar="STAGE")
    if f.name in ("crop_scale", "finetune_crop_scale"):
        return dict(nargs=2, type=_optional(float), metavar=("MIN", "MAX"))
    kinds = [t for t in typing.get_args(f.type) if t is not type(None)]
    kind = kinds[0] if isinstance(f.type, types.UnionType) else f.type
    optional = isinstance(f.type, types.UnionType)
    if kind is bool:
        return dict(type=parse_bool, metavar="BOOL")
    if f.name == "precision":
        return dict(choices=PRECISION_CHOICES)
    if kind in (int, float, str):
        return dict(type=_optional(kind) if optional else kind)
    return dict(type=str)


def parse_bool(text):
    """`true/false/yes/no/1/0/on/off` (any case) as a bool."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(
        f"expected one of {'/'.join(_TRUE + _FALSE)}, got {text!r}"
    )


def _optional(kind):
    def convert(text):
        return None if text.strip().lower() == "none" else kind(text)

    convert.__name__ = kind.__name__
    return convert


def config_from_command_line(config_cls, prog, argv=None):
    """The preset named by `--preset` with the other flags applied.

    Setting one of `labeled_per_class` and `labeled_fraction` clears the
    other, unless both are given. A value out of range exits with the
    config's message, as argparse does for a malformed flag.
    """
    parser = build_parser(config_cls, prog)
    args = vars(parser.parse_args(argv))
    preset = args.pop("preset")
    if "stages" in args:
        args["stages"] = tuple(args["stages"])
    for name in ("crop_scale", "finetune_crop_scale"):
        if name in args:
            given = args[name]
            args[name] = None if None in given else tuple(given)
    pair = ("labeled_per_class", "labeled_fraction")
    for given, other in (pair, pair[::-1]):
        if given in args and other not in args and args[given] is not None:
            args[other] = None
    try:
        return getattr(config_cls, preset)(**args)
    except ValueError as error:
        parser.error(str(error))


def main(config_cls, fit, prog, argv=None):
    """Runs `fit` on the config of the command line, then prints each
    stage's metrics and where the report was written. The report's table
    is printed once: by the run itself, or here when `--verbose 0` kept
    the run quiet."""
    result = fit(config_from_command_line(config_cls, prog, argv))
    print(f"\n{result.summary(table=not result.config.verbose)}")
    report = os.path.join(result.config.output_dir, "report.json")
    print(f"\nThe report: {report}")
    return result


def data_description(config):
    """The data a run trained on, in words, for report headers."""
    if config.dataset == "arrays":
        return "the given arrays"
    if config.dataset == "npz" or (
        config.dataset == "cifar10" and config.data_dir
    ):
        return f"{config.dataset} ({config.data_dir})"
    return config.dataset
