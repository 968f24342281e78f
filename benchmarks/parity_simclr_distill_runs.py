"""SimCLRv2's distillation on the digits: our step against the reference's.

The reference's distillation is google-research/simclr's colab
`tf2/colabs/distillation_self_training.ipynb`, read from a checkout the
user names; nothing of it is copied here. Its code cells that define
`LARSOptimizer` (its LARS), `add_kd_loss` (τ²·CE(softmax(teacher/τ),
student/τ)) and the distilling `Model` (its module-level settings:
learning rate 2.0, momentum 0.9, weight decay 1e-4, and its class, whose
`call` trains the student alone under a `GradientTape`, its optimizer on
`CosineDecay(learning_rate, total_steps)` with BatchNorm and biases out of
decay and adaptation) are executed, at run time, in a worker process
with `tf_keras` (see `benchmarks/vs_simclr_tf2.py` for the environment):

    PYTHONPATH=.:/path/to/tf_keras_site python \\
        benchmarks/parity_simclr_distill_runs.py --simclr-dir /path/to/simclr

Cells that download, use `tfds` or `hub` or hold shell lines are not run.
What the notebook's `Model.__init__` loads is given to it in place: the
teacher (`tf.saved_model.load`) is an object that returns the logits this
script feeds, and its `build_student_model()` (a small ConvNet at 224 px
with 1,000 classes) returns the student below. The notebook subclasses
`tf.keras.optimizers.Optimizer` with the Keras 2 API (`_set_hyper`,
slots), which `tf_keras` has kept as `tf.keras.optimizers.legacy`: the
cells see that class under the old name.

The teacher: our digits recipe's fine-tuned model
(`SimCLRv2Config.digits(stages=("pretrain", "finetune"),
precision="float32")` in `--output-dir`, reused when it is there). The
student, on both sides: a CIFAR-stem ResNet-18 at width 0.25 and a linear
classifier, the reference's from its own `tf2/resnet.py` and `model.py`
(`model.Model` in fine-tuning mode from the encoder's output,
`--global_bn=False`), ours as the recipe's distillation stage builds it
(`FineTuner(ResNet(...), ft_layer=0)`). Both start from the same weights
per seed: the reference's `model.Model` initialises them and writes a
checkpoint, which `keras_ssl.pretrained.load_simclr` reads into ours.
Each step this script makes the views once, on our side: the images of
the step (a fixed shuffle per seed, one pass an epoch, the last partial
batch dropped) through our student's `augment` (SimCLRv2 §3.1's random
crop and flip, seeded), and the teacher's logits of them
(`FineTuner.classify`). Both students learn from those same views and
logits: the reference's through its notebook's `Model.call` (in a
`tf.function`; the notebook calls it eagerly), ours through
`Distiller`'s train step (`Model.fit`) with its augmentation bypassed and
the optimizer of the recipe's distillation stage (LARS, 5% warm-up and
cosine decay to 0, `learning_rate` 8.0 scaled linearly to 4.0 at batch
128, weight decay 1e-6). Ours computes the same teacher logits again in
its step.

What differs by design (left as it is in the runs):

- the loss scale: the reference multiplies the loss by τ², ours (eq. 2 of
  the paper) does not; the same at τ = 1;
- the schedule: the reference's cosine from 2.0 with no warm-up, weight
  decay 1e-4; ours the recipe's, above;
- BatchNorm: the notebook calls its student without `training`, which in
  `tf_keras` runs BatchNorm in inference mode (the moving statistics, as
  initialised, normalise; they never update). The runs pass
  `training=True` on the reference side too (`--reference-bn train`);
  `--reference-bn as-written` keeps the notebook's call.

The one-step check (`--one-step`): from the same weights and batch, one
reference step and one of ours, with the differences above aligned: our
LARS at the reference's rate 2.0 and weight decay 1e-4 without warm-up
(the cosine's first step is its peak), and at τ ≠ 1 our loss multiplied
by τ² (a `Distiller` subclass here); then every weight, BatchNorm moving
statistic and LARS momentum slot is compared with the reference's
checkpoint: max |ours - reference| / max |reference| per tensor. Next
to it, the same measure between two of our steps from the same start,
with XLA and as the recipe compiles it (without, on a CPU): how far
float32's order of operations alone moves one step.

`--own-init MULTIPLES` adds our student from its own initial weights,
as the recipe builds it (our initialisers, the classifier at zero), on
the same views and logits at those multiples of the preset's budget and
τ = 1 (`--budgets none` runs only those). The reference's
`tf.random.set_seed` does not fix its initial weights (see
`parity_simclr_tf2.py`): a seed gives both sides the same start within
one invocation, not the same start in the next.

Prints the command, the machine, the one-step table and one table of
test accuracies (the digits' own test split, 359 images): per budget and
temperature, mean ± standard deviation over the seeds, per side, with
the teacher's and the pixel baselines'.
"""

import argparse
import ast
import json
import os
import sys
import tempfile
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from alternate import machine  # noqa: E402
from parity_simclr_tf2 import _compare  # noqa: E402
from parity_simclr_tf2 import _difference  # noqa: E402
from parity_simclr_tf2 import _group  # noqa: E402
from parity_simclr_tf2 import mean_std  # noqa: E402
from vs_simclr_tf2 import Worker  # noqa: E402
from vs_simclr_tf2 import _define_reference_flags  # noqa: E402
from vs_simclr_tf2 import add_reference_arguments  # noqa: E402
from vs_simclr_tf2 import check_reference_python  # noqa: E402
from vs_simclr_tf2 import check_simclr_dir  # noqa: E402
from vs_simclr_tf2 import serve  # noqa: E402

NOTEBOOK = "colabs/distillation_self_training.ipynb"
# The notebook, and every file of the checkout's `tf2/` that the reference
# worker imports for the student (`model.py` imports the other three).
REFERENCE_FILES = (
    NOTEBOOK,
    "model.py",
    "resnet.py",
    "lars_optimizer.py",
    "data_util.py",
)
# What the worker executes of the notebook: the cells defining these.
NOTEBOOK_NAMES = ("LARSOptimizer", "add_kd_loss", "Model")
NUM_CLASSES = 10
SIZE = 16
BATCH = 128
WIDTH = 0.25


def notebook_cells(path):
    """The sources of the notebook's code cells that define
    `NOTEBOOK_NAMES`, without shell lines, and the module-level settings
    of the cell defining `Model` (its assignments of constants).

    Raises:
        ValueError: naming the notebook and what it lacks.
    """
    try:
        with open(path) as f:
            cells = json.load(f)["cells"]
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(
            f"`--simclr-dir`'s {NOTEBOOK} must be a notebook ({error}). "
            f"Received: {path}"
        ) from None
    found = {}
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        source = "".join(cell.get("source", ()))
        lines = [
            x for x in source.splitlines() if not x.lstrip().startswith("!")
        ]
        try:
            tree = ast.parse("\n".join(lines))
        except SyntaxError:
            continue
        defined = {
            node.name
            for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef))
        }
        for name in NOTEBOOK_NAMES:
            if name in defined and name not in found:
                found[name] = tree
    missing = [name for name in NOTEBOOK_NAMES if name not in found]
    if missing:
        raise ValueError(
            f"`--simclr-dir`'s {NOTEBOOK} must define "
            f"{', '.join(missing)} in its code cells. Received: {path}"
        )
    sources = []
    for tree in {id(t): t for t in found.values()}.values():
        if found["Model"] is tree:
            # Its class and its settings; not the line that builds the
            # model from a teacher in Google Cloud Storage.
            body = [
                node
                for node in tree.body
                if isinstance(node, ast.ClassDef)
                or isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
            ]
            tree = ast.Module(body=body, type_ignores=[])
        sources.append(ast.unparse(tree))
    return sources


def _number_list(text, name, kind=int):
    """Comma-separated numbers: ints >= 0, or floats > 0."""
    try:
        values = [kind(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        values = []
    least = 0 if kind is int else 1e-300
    if not values or min(values) < least:
        allowed = "integers >= 0" if kind is int else "numbers > 0"
        raise ValueError(
            f"`--{name}` must be comma-separated {allowed}. Received: "
            f"{name}={text!r}"
        )
    return values


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_reference_arguments(parser)
    parser.add_argument(
        "--output-dir",
        default="runs/parity_simclr_distill",
        help="the teacher's recipe run (reused when it is there)",
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--budgets",
        default="1,3,10",
        help="multiples of the preset's distillation steps, at τ = 1 "
        "('none': no pairs)",
    )
    parser.add_argument(
        "--temperatures",
        default="1.0,0.1",
        help="temperatures at the preset's budget (when `--budgets` has 1) "
        "and of the one-step checks",
    )
    parser.add_argument(
        "--own-init",
        default="",
        help="multiples of the preset's steps at which to run our student "
        "from its own initial weights too (as the recipe builds it), at "
        "τ = 1 (default: none)",
    )
    parser.add_argument(
        "--reference-bn",
        choices=("train", "as-written"),
        default="train",
        help="the reference student's BatchNorm: training mode, or the "
        "notebook's call as written (inference mode)",
    )
    parser.add_argument(
        "--one-step",
        action="store_true",
        help="only the one-step check",
    )
    parser.add_argument(
        "--chunk", type=int, default=110, help="steps of views a file"
    )
    parser.add_argument(
        "--preset-steps",
        type=int,
        help="the budget `--budgets` multiplies (default: the digits "
        "preset's distillation steps)",
    )
    parser.add_argument("--worker", choices=("reference",))
    args = parser.parse_args(argv)
    args.simclr_tf2 = check_simclr_dir(args.simclr_dir, REFERENCE_FILES)
    args.seed_list = _number_list(args.seeds, "seeds")
    # "none": only `--own-init`'s runs.
    args.budget_list = []
    if args.budgets != "none":
        args.budget_list = _number_list(args.budgets, "budgets")
    args.own_init_list = []
    if args.own_init:
        args.own_init_list = _number_list(args.own_init, "own-init")
    for name, text, values in (
        ("budgets", args.budgets, args.budget_list),
        ("own-init", args.own_init, args.own_init_list),
    ):
        if 0 in values:
            raise ValueError(
                f"`--{name}` must be multiples >= 1. Received: {name}={text!r}"
            )
    args.temperature_list = _number_list(
        args.temperatures, "temperatures", float
    )
    if args.preset_steps is not None and args.preset_steps < 1:
        raise ValueError(
            "`--preset-steps` must be >= 1. Received: "
            f"preset_steps={args.preset_steps}"
        )
    if args.chunk < 1:
        raise ValueError(
            f"`--chunk` must be >= 1. Received: chunk={args.chunk}"
        )
    return args


# === Reference worker ===


def _student_class(tf):
    """A `tf_keras` model of the reference's encoder and supervised head
    (of a `model.Model` in fine-tuning mode from the encoder's output)."""

    class Student(tf.keras.Model):
        def __init__(self, model, bn_training):
            super().__init__()
            self.resnet_model = model.resnet_model
            self.supervised_head = model.supervised_head
            self.bn_training = bn_training

        def call(self, images, training=None):
            if training is None:
                # The notebook calls its student without `training`.
                training = self.bn_training
            hiddens = self.resnet_model(images, training=training)
            return self.supervised_head(hiddens, training)

    return Student


class _Teacher:
    """Stands for the notebook's `tf.saved_model.load(path)`: returns the
    logits last fed, from a variable read in the traced step."""

    def __init__(self, tf, shape=(BATCH, NUM_CLASSES)):
        self.logits = tf.Variable(tf.zeros(shape))

    def __call__(self, images, trainable=False):
        return {"logits_sup": self.logits.value()}


class _TensorFlow:
    """`tensorflow` as the notebook's cells see it: the Keras 2 optimizer
    under `tf.keras.optimizers.Optimizer`, and `tf.saved_model.load`
    answering with the teacher given."""

    def __init__(self, tf, teacher):
        self._tf = tf
        keras = types.SimpleNamespace(
            optimizers=types.SimpleNamespace(
                Optimizer=tf.keras.optimizers.legacy.Optimizer
            )
        )
        self._overrides = {
            "keras": _Overlay(tf.keras, keras),
            "saved_model": types.SimpleNamespace(load=lambda path: teacher),
        }

    def __getattr__(self, name):
        if name in self._overrides:
            return self._overrides[name]
        return getattr(self._tf, name)


class _Overlay:
    def __init__(self, base, over):
        self._base, self._over = base, over

    def __getattr__(self, name):
        if hasattr(self._over, name):
            value = getattr(self._over, name)
            if isinstance(value, types.SimpleNamespace):
                return _Overlay(getattr(self._base, name), value)
            return value
        return getattr(self._base, name)


def _reference_start(args):
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, args.simclr_tf2)
    settings = types.SimpleNamespace(
        width=WIDTH,
        weight_decay=1e-4,
        temperature=1.0,
        batch=BATCH,
        learning_rate=2.0,
    )
    _define_reference_flags(
        settings,
        train_mode="finetune",
        fine_tune_after_block=-1,
        ft_proj_selector=0,
        image_size=SIZE,
        global_bn=False,
    )
    import model as model_lib

    cells = notebook_cells(os.path.join(args.simclr_tf2, NOTEBOOK))
    state = {}

    def build(seed, prefix=None):
        tf.random.set_seed(seed)
        model = model_lib.Model(NUM_CLASSES)
        model(tf.zeros((2, SIZE, SIZE, 3)), training=False)
        if prefix:
            tf.train.Checkpoint(model=model).read(prefix).expect_partial()
        return model

    def notebook(teacher):
        """The notebook's cells, executed in a namespace of their own."""
        namespace = {"tf": _TensorFlow(tf, teacher), "re": __import__("re")}
        namespace["np"] = np
        for source in cells:
            exec(compile(source, NOTEBOOK, "exec"), namespace)
        return namespace

    def notebook_batch_norm():
        """Whether one step of the notebook's own `Model` on its own
        student (`build_student_model`, 224 px, 1,000 classes), called as
        its training loop calls it, moves the student's BatchNorm moving
        means (training mode) or not (inference mode)."""
        namespace = notebook(_Teacher(tf, (2, 1000)))
        namespace.update(num_classes=NUM_CLASSES, temperature=1.0)
        model = namespace["Model"]("teacher")
        images = tf.random.uniform((2, 224, 224, 3), seed=0)
        model({"image": images})
        means = [
            v.numpy()
            for v in model.student_model.variables
            if "moving_mean" in v.name
        ]
        return bool(any(np.any(m != 0) for m in means))

    def start(request):
        teacher = _Teacher(tf)
        namespace = notebook(teacher)
        model = build(request["seed"], request["prefix"])
        student = _student_class(tf)(model, args.reference_bn == "train")
        namespace.update(
            num_classes=NUM_CLASSES,
            total_steps=request["total_steps"],
            temperature=request["temperature"],
            build_student_model=lambda: student,
        )
        if request.get("learning_rate"):
            namespace["learning_rate"] = request["learning_rate"]
        distiller = namespace["Model"]("teacher")
        step = tf.function(distiller.call)
        state.clear()
        state.update(
            model=model,
            student=student,
            teacher=teacher,
            distiller=distiller,
            step=step,
            optimizer=distiller.optimizer,
            settings={
                k: namespace[k]
                for k in ("learning_rate", "momentum", "weight_decay")
            },
        )
        # What the notebook's LARS leaves out of decay and adaptation.
        excluded = [
            v.name
            for v in student.trainable_variables
            if not distiller.optimizer._do_layer_adaptation(v.name)
        ]
        return {"settings": state["settings"], "excluded": excluded}

    def train(request):
        views = np.load(request["views"])
        logits = np.load(request["logits"])
        losses = []
        for i in range(len(views)):
            state["teacher"].logits.assign(logits[i])
            loss = state["step"]({"image": tf.constant(views[i])})[0]
            losses.append(float(loss.numpy()))
        return {"loss": float(np.mean(losses))}

    def handle(request):
        command = request["command"]
        if command == "init":
            model = build(request["seed"])
            prefix = tf.train.Checkpoint(model=model).write(
                os.path.join(request["directory"], "init")
            )
            return {"prefix": prefix}
        if command == "start":
            return start(request)
        if command == "train":
            return train(request)
        if command == "save":
            checkpoint = tf.train.Checkpoint(
                model=state["model"],
                global_step=state["optimizer"].iterations,
                optimizer=state["optimizer"],
            )
            return {"prefix": checkpoint.write(request["path"])}
        if command == "notebook_batch_norm":
            return {"moved": notebook_batch_norm()}
        if command == "moving_mean_moved":
            # BatchNorm in training mode updates its moving statistics.
            means = [
                v.numpy()
                for v in state["student"].variables
                if "moving_mean" in v.name
            ]
            return {"moved": bool(any(np.any(m != 0) for m in means))}
        # "evaluate": test accuracy on the images, in [0, 1].
        images = np.load(request["images"])
        labels = np.load(request["labels"])
        logits = state["student"](tf.constant(images), training=False)
        accuracy = np.mean(np.argmax(logits.numpy(), -1) == labels)
        return {"accuracy": float(accuracy)}

    return {"ready": True}, handle


# === Ours (the parent) ===


def teacher_run(args):
    """Our digits recipe's fine-tuned teacher, its test split and report."""
    from keras_ssl.recipes import runner
    from keras_ssl.recipes import simclrv2

    config = simclrv2.SimCLRv2Config.digits(
        output_dir=args.output_dir,
        stages=("pretrain", "finetune"),
        precision="float32",
    )
    start = time.perf_counter()
    result = simclrv2.fit(config)
    splits, _ = runner.load_data(config)
    return {
        "config": config,
        "teacher": result.models["teacher"],
        "splits": splits,
        "teacher_accuracy": result.stages["finetune"].metrics["test_accuracy"],
        "baselines": dict(result.baselines),
        "minutes": (time.perf_counter() - start) / 60,
    }


def preset_steps(config, num_train):
    """The digits preset's distillation steps: `distill_epochs` passes of
    `num_train // batch_size` steps (the runner's schedule)."""
    return config.distill_epochs * max(1, num_train // config.batch_size)


def _student(config, seed):
    """Our student as the recipe's distillation stage builds it."""
    from keras_ssl.backbones import ResNet
    from keras_ssl.models import FineTuner

    encoder = ResNet(
        depth=config.depth,
        width_multiplier=config.width_multiplier,
        sk_ratio=config.sk_ratio,
        stem=config.stem,
        input_shape=(SIZE, SIZE, 3),
    )
    return FineTuner(encoder, num_classes=NUM_CLASSES, ft_layer=0, seed=seed)


def _pairs(student):
    """`(group, name, our variable, reference object path)` of every
    weight of the student."""
    from keras_ssl.pretrained.pretrained_model import relative_path
    from keras_ssl.pretrained.simclr import BN_VARIABLES
    from keras_ssl.pretrained.simclr import _units

    encoder = student.network
    paths = {}
    for kind, target, path in _units(18, "cifar", False, False):
        for name in ("kernel",) if kind == "conv" else BN_VARIABLES:
            paths[f"encoder/{target}/{name}"] = f"{path}/{name}"
    for name in ("kernel", "bias"):
        paths[f"classifier/{name}"] = (
            f"supervised_head/linear_layer/dense/{name}"
        )
    ours = {f"encoder/{relative_path(encoder, v)}": v for v in encoder.weights}
    ours.update({f"classifier/{v.name}": v for v in student.classifier.weights})
    missing = sorted(set(ours) - set(paths))
    if missing:
        raise RuntimeError(f"Weights without a reference path: {missing}")
    return [(_group(n), n, ours[n], paths[n]) for n in sorted(ours)]


def load_reference_weights(student, prefix):
    """Our student with the weights of the reference's checkpoint."""
    from keras import ops

    from keras_ssl.pretrained import load_simclr
    from keras_ssl.pretrained.pretrained_model import relative_path

    loaded = load_simclr(prefix, ft_layer=0)
    for ours, theirs in (
        (student.network, loaded.encoder),
        (student.classifier, loaded.classifier),
    ):
        values = {relative_path(theirs, v): v for v in theirs.weights}
        for variable in ours.weights:
            variable.assign(
                ops.convert_to_numpy(values[relative_path(ours, variable)])
            )


def _given_views(layer, images, training=True):
    # The views come made, the same for both students.
    return images


def distiller(teacher, student, temperature, optimizer, scale_loss=False):
    """Our `Distiller`, compiled; with `scale_loss` its loss times τ², as
    the reference's `add_kd_loss`."""
    from keras_ssl.models import Distiller
    from keras_ssl.models import distiller as distiller_module

    distiller_module.compiled_call = _given_views

    class Scaled(Distiller):
        def compute_ssl_loss(self, data, training=True):
            loss, logs = super().compute_ssl_loss(data, training)
            return loss * self.temperature**2, logs

    cls = Scaled if scale_loss else Distiller
    model = cls(teacher, student, temperature=temperature)
    model.compile(optimizer=optimizer)
    return model


def recipe_optimizer(config, total_steps):
    """The recipe's distillation-stage optimizer for `total_steps`."""
    from keras_ssl.recipes import simclrv2

    stage = next(s for s in simclrv2.STAGES if s.name == "distill")
    return stage.optimizer(types.SimpleNamespace(config=config), total_steps)


def step_images(x_train, steps, seed):
    """Indices of each step's images: a fresh shuffle a pass, the last
    partial batch dropped."""
    import numpy as np

    rng = np.random.default_rng(1000 + seed)
    per_pass = len(x_train) // BATCH
    rows = []
    while len(rows) < steps:
        order = rng.permutation(len(x_train))
        rows.extend(order[i * BATCH : (i + 1) * BATCH] for i in range(per_pass))
    return np.stack(rows[:steps])


class Views:
    """Each step's views (our student's `augment`, seeded) and the
    teacher's logits of them, in files of `chunk` steps."""

    def __init__(self, teacher, x_train, steps, seed, chunk, directory):
        from keras_ssl.layers import RandomResizedCrop

        # FineTuner's augmentation of the recipe's student: crop and flip.
        self.augment = RandomResizedCrop(
            SIZE, scale=(0.08, 1.0), flip=True, seed=seed
        )
        self.teacher = teacher
        self.x_train = x_train
        self.rows = step_images(x_train, steps, seed)
        self.chunk = chunk
        self.directory = directory

    def chunks(self):
        import numpy as np
        from keras import ops

        for start in range(0, len(self.rows), self.chunk):
            views, logits = [], []
            for rows in self.rows[start : start + self.chunk]:
                images = self.x_train[rows].astype("float32") / 255.0
                view = self.augment(images, training=True)
                logits.append(
                    ops.convert_to_numpy(
                        self.teacher.classify(view, training=False)
                    )
                )
                views.append(ops.convert_to_numpy(view))
            paths = {}
            for name, array in (("views", views), ("logits", logits)):
                paths[name] = os.path.join(self.directory, f"{name}.npy")
                np.save(paths[name], np.stack(array).astype("float32"))
            yield paths


def _fit_chunk(model, views_path):
    import numpy as np
    import tensorflow as tf

    views = np.load(views_path)
    dataset = tf.data.Dataset.from_tensor_slices(
        views.reshape(-1, SIZE, SIZE, 3)
    ).batch(BATCH)
    history = model.fit(dataset, epochs=1, verbose=0)
    return float(history.history["loss"][0])


def _accuracy(student, splits):
    return splits.evaluate_classifier(student)["top1"]


def _distil(args, state, student, seed, steps, temperature, directory, step):
    """Our student distilled for `steps` with the recipe's optimizer, on
    the views and logits of `seed`; `step(paths)` runs first on each
    file of them (the reference's steps). Returns the minutes of each."""
    config, teacher = state["config"], state["teacher"]
    ours = distiller(
        teacher, student, temperature, recipe_optimizer(config, steps)
    )
    views = Views(
        teacher, state["splits"].x_train, steps, seed, args.chunk, directory
    )
    times = {"reference": 0.0, "ours": 0.0}
    for paths in views.chunks():
        for side, run in (("reference", step), ("ours", None)):
            begin = time.perf_counter()
            if run is None:
                _fit_chunk(ours, paths["views"])
            else:
                run(paths)
            times[side] += time.perf_counter() - begin
    return {k: v / 60 for k, v in times.items()}


def run_pair(args, worker, state, seed, total_steps, temperature, directory):
    """One seed of one cell: both students from the same weights, the
    same views and logits; returns their test accuracies and minutes."""
    prefix = worker.ask("init", "", seed=seed, directory=directory)["prefix"]
    worker.ask(
        "start",
        "",
        seed=seed,
        prefix=prefix,
        total_steps=total_steps,
        temperature=temperature,
    )
    student = _student(state["config"], seed)
    load_reference_weights(student, prefix)
    minutes = _distil(
        args,
        state,
        student,
        seed,
        total_steps,
        temperature,
        directory,
        lambda paths: worker.ask("train", "", **paths),
    )
    reference = worker.ask("evaluate", "", **state["test_files"])
    return {
        "reference": reference["accuracy"],
        "ours": _accuracy(student, state["splits"]),
        "minutes": minutes,
    }


def run_own_init(args, state, seed, total_steps, directory):
    """Our student from its own initial weights, as the recipe builds it
    (its classifier starts at zero), on the same views and logits."""
    import keras

    keras.utils.set_random_seed(seed)
    student = _student(state["config"], seed)
    _distil(
        args,
        state,
        student,
        seed,
        total_steps,
        1.0,
        directory,
        lambda paths: None,
    )
    return _accuracy(student, state["splits"])


def one_step(args, worker, state, temperature, directory):
    """Rows `[group, name, difference]` after one step of each side from
    the same weights and batch, with the differences by design aligned;
    and the same rows of ours with XLA against ours as the recipe
    compiles it (float32's own spread)."""

    from keras_ssl.recipes import stages

    seed = args.seed_list[0]
    prefix = worker.ask("init", "", seed=seed, directory=directory)["prefix"]
    started = worker.ask(
        "start",
        "",
        seed=seed,
        prefix=prefix,
        total_steps=1,
        temperature=temperature,
    )
    reference = started["settings"]
    state["excluded"] = started["excluded"]
    paths = next(
        Views(
            state["teacher"], state["splits"].x_train, 1, seed, 1, directory
        ).chunks()
    )
    worker.ask("train", "", **paths)
    saved = worker.ask("save", "", path=os.path.join(directory, "after"))
    trained = {}
    # Ours as the recipe compiles it (Keras's `jit_compile="auto"`, which
    # on a CPU runs without XLA), then with XLA: how far float32's order
    # of operations alone moves one step.
    for jit_compile in ("auto", True):
        student = _student(state["config"], seed)
        load_reference_weights(student, prefix)
        # The reference's rate and decay, no warm-up: `lars` decays over
        # the steps given, and the first step of a cosine is its peak;
        # it scales the rate linearly in the batch: undone here.
        optimizer = stages.lars(
            reference["learning_rate"] * 256 / BATCH,
            BATCH,
            "linear",
            1,
            weight_decay=reference["weight_decay"],
            momentum=reference["momentum"],
        )
        model = distiller(
            state["teacher"], student, temperature, optimizer, scale_loss=True
        )
        model.compile(optimizer=optimizer, jit_compile=jit_compile)
        _fit_chunk(model, paths["views"])
        trained[jit_compile] = (model, _pairs(student))
    state["rank_1"] = sum(len(v.shape) <= 1 for v in student.trainable_weights)
    model, pairs = trained["auto"]
    rows = _compare({"model": model, "pairs": pairs}, saved["prefix"])
    ours = _state_arrays(*trained["auto"])
    xla = _state_arrays(*trained[True])
    spread = [[*key, _difference(xla[key], ours[key])] for key in ours]
    return rows, spread


def _state_arrays(model, pairs):
    """`{(group, name): array}` of every weight and LARS momentum slot."""
    from keras import ops

    arrays = {}
    for group, name, variable, _ in pairs:
        arrays[(group, name)] = ops.convert_to_numpy(variable)
        if variable.trainable:
            index = model.optimizer._get_variable_index(variable)
            momentum = model.optimizer._momentums[index]
            key = (f"{group} momentum", f"{name} momentum")
            arrays[key] = ops.convert_to_numpy(momentum)
    return arrays


def grouped(rows):
    """`{group: max difference}` in first-seen order."""
    groups = {}
    for group, _, difference in rows:
        groups[group] = max(groups.get(group, 0.0), difference)
    return groups


def _cell(values):
    mean, std = mean_std(values)
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        serve(lambda: _reference_start(args))
        return None
    notebook_cells(os.path.join(args.simclr_tf2, NOTEBOOK))
    check_reference_python(args.reference_python)
    import numpy as np

    argv = list(sys.argv[1:] if argv is None else argv)
    print(
        "command: python benchmarks/parity_simclr_distill_runs.py "
        + " ".join(argv)
    )
    print(machine())
    state = teacher_run(args)
    splits = state["splits"]
    directory = tempfile.mkdtemp(prefix="parity_simclr_distill_")
    state["test_files"] = {}
    for name, array in (
        ("images", splits.x_test.astype("float32") / 255.0),
        ("labels", splits.y_test),
    ):
        state["test_files"][name] = os.path.join(directory, f"test_{name}.npy")
        np.save(state["test_files"][name], array)
    print(
        f"teacher: {state['teacher_accuracy']:.1%} test accuracy "
        f"({len(splits.y_test)} images), {state['minutes']:.1f} minutes; "
        f"pixel baselines: {state['baselines']}"
    )
    worker = Worker("reference", args, [*argv], script=__file__)
    try:
        for temperature in args.temperature_list:
            rows, spread = one_step(args, worker, state, temperature, directory)
            print(f"\none step, τ = {temperature:g}: max relative difference")
            print(
                "| weights | ours vs reference | ours with XLA vs ours |\n"
                "| --- | ---: | ---: |"
            )
            spread = grouped(spread)
            for group, value in grouped(rows).items():
                other = spread.get(group)
                other = "—" if other is None else f"{other:.2g}"
                print(f"| {group} | {value:.2g} | {other} |")
            for group, name, value in sorted(rows, key=lambda r: -r[2])[:3]:
                print(f"largest: {name} ({group}) {value:.2g}")
            moved = worker.ask("moving_mean_moved", "")["moved"]
            print(
                f"reference BatchNorm moving means moved: {moved}; the "
                f"reference's LARS excludes {len(state['excluded'])} "
                f"variables by name, ours {state['rank_1']} by rank"
            )
        moved = worker.ask("notebook_batch_norm", "")["moved"]
        print(
            "the notebook's own Model and student, called as its loop "
            f"calls them: BatchNorm moving means moved: {moved}"
        )
        if args.one_step:
            return None
        base = args.preset_steps or preset_steps(
            state["config"], len(splits.x_train)
        )
        cells = [(m * base, 1.0) for m in args.budget_list]
        if 1 in args.budget_list:
            cells += [
                (base, t)
                for t in args.temperature_list
                if (base, t) not in cells
            ]
        results = {}
        for steps, temperature in cells:
            for seed in args.seed_list:
                result = run_pair(
                    args, worker, state, seed, steps, temperature, directory
                )
                results.setdefault((steps, temperature), []).append(result)
                print(
                    f"steps {steps} τ {temperature:g} seed {seed}: reference "
                    f"{result['reference']:.1%}, ours {result['ours']:.1%}, "
                    f"minutes {result['minutes']}",
                    flush=True,
                )
        own = {}
        for multiple in args.own_init_list:
            steps = multiple * base
            for seed in args.seed_list:
                accuracy = run_own_init(args, state, seed, steps, directory)
                own.setdefault(steps, []).append(accuracy)
                print(
                    f"own init steps {steps} seed {seed}: ours {accuracy:.1%}",
                    flush=True,
                )
    finally:
        worker.close()
    print(
        f"\nStudent test accuracy (%, {len(splits.y_test)} test images), "
        f"mean ± std over seeds {args.seeds}:\n"
    )
    print(
        "| steps | τ | reference's step | ours | minutes a run (ref / ours) |"
    )
    print("| ---: | ---: | ---: | ---: | ---: |")
    for (steps, temperature), runs in results.items():
        minutes = [
            np.mean([r["minutes"][k] for r in runs])
            for k in ("reference", "ours")
        ]
        print(
            f"| {steps} | {temperature:g} | "
            f"{_cell([r['reference'] for r in runs])} | "
            f"{_cell([r['ours'] for r in runs])} | "
            f"{minutes[0]:.1f} / {minutes[1]:.1f} |"
        )
    for steps, accuracies in own.items():
        print(f"| {steps} | 1 | — | {_cell(accuracies)} (own init) | |")
    print(f"| teacher | | {100 * state['teacher_accuracy']:.1f} | | |")
    for name, value in state["baselines"].items():
        print(f"| {name} | | {100 * value:.1f} | | |")
    return results


if __name__ == "__main__":
    main()
