"""Fine-tuning at the digits preset's budget: SimCLR's own program and ours.

Does whole-network fine-tuning do worse than linear evaluation at the
budget of `SimCLRv2Config.digits()` in google-research/simclr's own TF2
code too, or does the reference's fine-tuning beat its linear evaluation
where ours does not? Per seed, from one network pretrained by the
reference's program:

1. Data: scikit-learn's digits as the preset loads them
   (`keras_ssl.recipes.runner.load_data(SimCLRv2Config.digits())`: the
   preset's 80/20 train/test split, 16 px, its 100 labeled images, 10 per
   class), written once to `--out/data.npz` for every worker. The data
   are the preset's (seed 0, `--data-seed`) for every run; the runs' seed
   changes the training only.
2. Pretraining (a reference worker): the reference's `model.Model`, its
   `run.py` `single_step` (`vs_simclr_tf2.ReferenceStep`), its warm-up +
   cosine schedule and LARS (`model.py`) and its pretraining views
   (`data_util.preprocess_image(..., is_training=True,
   color_jitter_strength=0.5, test_crop=False)` twice per image, no blur,
   in `data.py`'s pipeline: shuffle, repeat, map, batch) at the preset's
   settings: CIFAR-stem ResNet-18 at width 0.25, 16 px, the 3-layer head
   with 128 outputs, batch `batch_size`, `epochs` passes of
   `num_train // batch_size` steps, LARS at `learning_rate` scaled
   `learning_rate_scaling` with `warmup_fraction` of the steps warming up
   (`--warmup_epochs` chosen to give the same step count,
   `parity_simclr_tf2.run_settings`), weight decay `weight_decay`,
   temperature `temperature`, every crop of `crop_scale` of the area (the
   reference's `crop_and_resize` hard-codes (0.08, 1): the worker gives
   its `distorted_bounding_box_crop` the preset's `area_range`; the
   checkout is not modified). Not mirrored: the preset's online probe (32
   labeled images added to each batch; the reference's
   `--lineareval_while_pretraining` would label every image, so it is
   off: it trains on a stop-gradient and does not change the encoder).
   The network is written as the reference's `run.py` writes it,
   `tf.train.Checkpoint(model=..., global_step=..., optimizer=...)`
   through a `CheckpointManager` (as `parity_simclr_tf2._reference_start`).
3. From that checkpoint, on the 100 labeled images, the preset's
   fine-tuning budget (`finetune_epochs` passes of `100 //
   finetune_batch_size` steps of `finetune_batch_size` images), rows
   (`--rows`):

   - `reference-linear`: the reference's linear evaluation,
     `--train_mode=finetune --fine_tune_after_block=4
     --zero_init_logits_layer=True --ft_proj_selector=0` with its
     README's linear-eval settings (`--optimizer=momentum
     --learning_rate=0.1 --learning_rate_scaling=linear --weight_decay=0
     --warmup_epochs=0 --global_bn=False`): only the supervised head
     trains.
   - `reference-finetune`: its whole-network fine-tuning,
     `--fine_tune_after_block=-1 --zero_init_logits_layer=True
     --ft_proj_selector=0` (the preset's `ft_layer`), LARS at
     `finetune_learning_rate`·√B (`--learning_rate_scaling=sqrt`),
     `--weight_decay=0 --warmup_epochs=0 --global_bn=True`, as the
     parity cases `finetune-ft0/ft1`.
   - `reference-linear-crop`, `reference-finetune-crop`: the same with
     its crop at the preset's `finetune_crop_scale` instead of its own
     (0.08, 1) (the same `area_range` patch as in pretraining).
   - `ours-finetune`: the recipe's fine-tuning stage
     (`keras_ssl.recipes.simclrv2.STAGES`' `finetune`) with
     `linear_probe_first=False`: a `FineTuner` on the encoder
     `keras_ssl.pretrained.load_simclr` reads from the checkpoint, the
     classifier at zero, BatchNorm in training mode, no WiSE-FT; the
     parity case's fine-tuning with the FineTuner's own crop.
   - `ours-recipe`: that stage as the preset ships it: LP-FT (the
     logistic-regression head first, BatchNorm's statistics kept), then
     WiSE-FT with the share that 3-fold cross-validation on the labeled
     images chooses; also its test accuracy before the interpolation
     (share 1) and at the LP-FT start (share 0).

   The reference's rows train with its own fine-tuning augmentation
   (`preprocess_image(is_training=True)` with no colour: crop and flip),
   ours with the FineTuner's crop (`finetune_crop_scale`) and flip.
   The reference's pipeline draws its crops without a global seed, as
   `run.py` does (see `parity_simclr_tf2._reference_run`); its initial
   weights are seeded, but not reproducibly (ibid.).
4. Test accuracy on the preset's 359 test images for each, and the
   representation report of the recipe (`reports.probe_accuracies`: k-NN,
   k = 200, τ = 0.1, and the logistic-regression probe, both from the
   100 labeled images) for the pretrained encoder. Ours runs in float32
   (the reference's precision; the preset's `precision="auto"` would pick
   bfloat16 on a CPU with AVX512-BF16).

    PYTHONPATH=.:/path/to/tf_keras_site python \\
        benchmarks/parity_simclr_finetune_runs.py --simclr-dir \\
        /path/to/simclr --out runs/simclr_finetune_runs --seeds 0,1,2

Each job (a seed's pretraining, a row) runs in a fresh worker process and
writes `--out/seed{S}/{job}.json`; jobs already there are skipped, and the
table is printed from every file there. Prints the command, the machine,
the settings, per job one line, then the table (mean ± population
standard deviation over the seeds, and each seed's value) and the
cross-validation scores of `ours-recipe`.
"""

import argparse
import functools
import json
import os
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from alternate import machine  # noqa: E402
from parity_simclr_tf2 import REFERENCE_FILES  # noqa: E402
from parity_simclr_tf2 import _strategy  # noqa: E402
from parity_simclr_tf2 import mean_std  # noqa: E402
from parity_simclr_tf2 import run_settings  # noqa: E402
from vs_simclr_tf2 import ReferenceStep  # noqa: E402
from vs_simclr_tf2 import Worker  # noqa: E402
from vs_simclr_tf2 import _define_reference_flags  # noqa: E402
from vs_simclr_tf2 import add_reference_arguments  # noqa: E402
from vs_simclr_tf2 import check_reference_python  # noqa: E402
from vs_simclr_tf2 import check_simclr_dir  # noqa: E402
from vs_simclr_tf2 import serve  # noqa: E402

REFERENCE_ROWS = (
    "reference-linear",
    "reference-linear-crop",
    "reference-finetune",
    "reference-finetune-crop",
)
OURS_ROWS = ("ours-finetune", "ours-recipe")
ROWS = REFERENCE_ROWS + OURS_ROWS


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_reference_arguments(parser)
    parser.add_argument(
        "--out",
        default="runs/simclr_finetune_runs",
        help="folder of the data, checkpoints and each job's result",
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument(
        "--data-seed",
        type=int,
        default=0,
        help="the preset's seed for the split and the labeled images",
    )
    parser.add_argument(
        "--pretrain-steps",
        type=int,
        help="instead of the preset's budget (for a quick check)",
    )
    parser.add_argument(
        "--finetune-steps",
        type=int,
        help="instead of the preset's budget (for a quick check)",
    )
    parser.add_argument(
        "--linear-learning-rate",
        type=float,
        default=0.1,
        help="the reference's linear evaluation: momentum at this·B/256",
    )
    parser.add_argument("--worker", choices=("ours", "reference"))
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds):
        raise ValueError(
            "`--seeds` must list integers >= 0, e.g. 0,1,2. Received: "
            f"seeds={args.seeds!r}"
        )
    rows = [r for r in args.rows.split(",") if r]
    if not rows or any(r not in ROWS for r in rows):
        raise ValueError(
            f"`--rows` must be among {', '.join(ROWS)}. Received: "
            f"rows={args.rows!r}"
        )
    for name in ("pretrain_steps", "finetune_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(
                f"`--{name.replace('_', '-')}` must be >= 1. Received: "
                f"{name}={value}"
            )
    args.seed_list, args.row_list = seeds, rows
    if args.worker != "ours":
        args.simclr_tf2 = check_simclr_dir(args.simclr_dir, REFERENCE_FILES)
    return args


def preset(args, num_train, num_labeled):
    """The digits preset's settings for both sides, read off
    `SimCLRv2Config.digits()`: the pretraining and fine-tuning budgets,
    and the reference's flags for each."""
    from keras_ssl.recipes.simclrv2 import SimCLRv2Config

    config = SimCLRv2Config.digits()
    steps = args.pretrain_steps or config.epochs * max(
        1, num_train // config.batch_size
    )
    batch = min(config.finetune_batch_size, num_labeled)
    finetune_steps = args.finetune_steps or config.finetune_epochs * max(
        1, num_labeled // batch
    )
    pretrain = run_settings(
        types.SimpleNamespace(
            warmup_fraction=config.warmup_fraction,
            steps=steps,
            batch=config.batch_size,
            images=num_train,
            width=config.width_multiplier,
            image_size=config.image_size,
            learning_rate=config.learning_rate,
            weight_decay=config.weight_decay,
            temperature=config.temperature,
            color_strength=0.5,
        )
    )
    pretrain["flags"].update(
        lineareval_while_pretraining=False,
        learning_rate_scaling=config.learning_rate_scaling,
        resnet_depth=config.depth,
        num_proj_layers=config.head_layers,
        proj_out_dim=config.projection_dim,
        train_batch_size=config.batch_size,
    )
    finetune = {
        "train_mode": "finetune",
        "lineareval_while_pretraining": False,
        "zero_init_logits_layer": True,
        "ft_proj_selector": config.ft_layer,
        "width_multiplier": config.width_multiplier,
        "image_size": config.image_size,
        "resnet_depth": config.depth,
        "num_proj_layers": config.head_layers,
        "proj_out_dim": config.projection_dim,
        "train_batch_size": batch,
        "train_steps": finetune_steps,
        "train_epochs": 1,
        "warmup_epochs": 0.0,
        "weight_decay": 0.0,
    }
    return {
        "config": config,
        "pretrain_steps": steps,
        "warmup_steps": pretrain["warmup_steps"],
        "pretrain_flags": pretrain["flags"],
        "finetune_batch": batch,
        "finetune_steps": finetune_steps,
        "finetune_flags": finetune,
        "reference_rows": {
            "reference-linear": {
                **finetune,
                "fine_tune_after_block": 4,
                "global_bn": False,
                "optimizer": "momentum",
                "learning_rate": args.linear_learning_rate,
                "learning_rate_scaling": "linear",
            },
            "reference-finetune": {
                **finetune,
                "fine_tune_after_block": -1,
                "global_bn": True,
                "optimizer": "lars",
                "learning_rate": config.finetune_learning_rate,
                "learning_rate_scaling": "sqrt",
            },
        },
    }


def reference_flags(settings, row):
    """The reference's flags for `row` (a `-crop` row runs its row's
    flags)."""
    return settings["reference_rows"][row.removesuffix("-crop")]


def write_data(args, path):
    """The preset's digits split and labeled subset, as `runner.load_data`
    makes them, to `path` (an `.npz`)."""
    import dataclasses

    import numpy as np

    from keras_ssl.recipes import runner
    from keras_ssl.recipes.simclrv2 import SimCLRv2Config

    config = dataclasses.replace(SimCLRv2Config.digits(), seed=args.data_seed)
    splits, labeled = runner.load_data(config)
    np.savez(
        path,
        x_train=splits.x_train,
        y_train=splits.y_train,
        x_test=splits.x_test,
        y_test=splits.y_test,
        labeled_indices=labeled.indices,
    )


def load_data(path):
    """The arrays `write_data` wrote, with the labeled images and labels."""
    import numpy as np

    with np.load(path) as arrays:
        data = {key: arrays[key] for key in arrays.files}
    indices = data["labeled_indices"]
    data["labeled_x"] = data["x_train"][indices]
    data["labeled_y"] = data["y_train"][indices]
    return data


def _area_range(data_util, scale):
    """Makes the reference's `crop_and_resize` crop `scale` of the area
    (it passes (0.08, 1) to `distorted_bounding_box_crop`)."""
    crop = data_util.distorted_bounding_box_crop

    @functools.wraps(crop)
    def cropped(image, bbox, **kwargs):
        kwargs["area_range"] = tuple(scale)
        return crop(image, bbox, **kwargs)

    data_util.distorted_bounding_box_crop = cropped


def job_path(args, seed, job):
    return os.path.join(args.out, f"seed{seed}", f"{job}.json")


# === The reference ===


def _reference_flags(settings, flags):
    """`vs_simclr_tf2._define_reference_flags` with `flags`."""
    config = settings["config"]
    base = types.SimpleNamespace(
        width=config.width_multiplier,
        weight_decay=flags.get("weight_decay", config.weight_decay),
        temperature=config.temperature,
        batch=flags["train_batch_size"],
        learning_rate=flags.get("learning_rate", config.learning_rate),
    )
    return _define_reference_flags(base, use_blur=False, **flags)


def _reference_model(args, settings, flags, examples, channels, scale):
    """The reference's `model.Model`, schedule, optimizer and `run.py`
    step on one replica, with `flags`; its crops take `scale` of the area
    where given.

    Returns:
        `(tf, FLAGS, data_util, model, optimizer, step)`, `step(tensors,
        prepare, batch, output)` making the function that runs one
        training step on the next batch of `data.py`'s pipeline over
        `tensors` (shuffle, repeat, `prepare` map, batch) and returns
        `run.py` `single_step`'s result `output`.
    """
    import tensorflow as tf

    config = settings["config"]
    strategy = _strategy(tf, 1)
    sys.path.insert(0, args.simclr_tf2)
    FLAGS = _reference_flags(settings, flags)
    import data_util
    import model as model_lib

    if scale is not None:
        _area_range(data_util, scale)
    size = config.image_size
    tf.random.set_seed(args.seed)
    with strategy.scope():
        model = model_lib.Model(10)
        schedule = model_lib.WarmUpAndCosineDecay(FLAGS.learning_rate, examples)
        optimizer = model_lib.build_optimizer(schedule)
        # Keras 2 builds the variables on the first call.
        model(tf.zeros((2, size, size, channels)), training=False)
    single_step = ReferenceStep(model, optimizer, strategy)

    def step(tensors, prepare, batch, output):
        # run.py sets no global seed for its input pipeline (see
        # parity_simclr_tf2._reference_run).
        tf.random.set_seed(None)
        dataset = (
            tf.data.Dataset.from_tensor_slices(tensors)
            .shuffle(batch * 50)
            .repeat(-1)
            .map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch, drop_remainder=True)
            .prefetch(2)
        )
        iterator = iter(strategy.experimental_distribute_dataset(dataset))

        @tf.function
        def train_step(iterator):
            def replica_step(*batch):
                return single_step(*batch)[output]

            batch = next(iterator)
            batch = batch if isinstance(batch, tuple) else (batch,)
            return strategy.run(replica_step, batch)

        return lambda: float(train_step(iterator).numpy())

    return tf, FLAGS, data_util, model, optimizer, step


def _reference_pretrain(args, settings, data):
    """The reference's pretraining of `--seed`; writes its checkpoint."""
    import numpy as np

    config = settings["config"]
    tf, FLAGS, data_util, model, optimizer, step = _reference_model(
        args,
        settings,
        settings["pretrain_flags"],
        len(data["y_train"]),
        6,
        config.crop_scale,
    )
    size = config.image_size

    def views(image):
        # data.py's map_fn for pretraining.
        pair = [
            data_util.preprocess_image(
                image,
                size,
                size,
                is_training=True,
                color_jitter_strength=FLAGS.color_jitter_strength,
                test_crop=False,
            )
            for _ in range(2)
        ]
        return tf.concat(pair, -1)

    train_step = step(data["x_train"], views, config.batch_size, 0)
    start, losses = time.perf_counter(), []
    for i in range(settings["pretrain_steps"]):
        # SimCLR's code sums the two directions: eq. (1) is half of it.
        losses.append(train_step() / 2)
        if (i + 1) % 55 == 0:
            print(
                f"step {i + 1}: NT-Xent {np.mean(losses[-55:]):.4f} "
                f"({time.perf_counter() - start:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    checkpoint = tf.train.Checkpoint(
        model=model, global_step=optimizer.iterations, optimizer=optimizer
    )
    directory = os.path.join(args.out, f"seed{args.seed}", "pretrain")
    manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=1)
    tenth = max(1, len(losses) // 10)
    return {
        "prefix": manager.save(int(optimizer.iterations.numpy())),
        "loss_first": float(np.mean(losses[:tenth])),
        "loss_last": float(np.mean(losses[-tenth:])),
        "seconds": time.perf_counter() - start,
    }


def _reference_finetune(args, settings, data, row):
    """The reference's fine-tuning `row` from `--seed`'s checkpoint."""
    import numpy as np

    config = settings["config"]
    crop_row = row.endswith("-crop")
    tf, _, data_util, model, _, step = _reference_model(
        args,
        settings,
        reference_flags(settings, row),
        len(data["labeled_y"]),
        3,
        config.finetune_crop_scale if crop_row else None,
    )
    prefix = _read_job(args, args.seed, "pretrain")["prefix"]
    before = [w.numpy() for w in model.resnet_model.weights]
    # run.py's try_restore_from_checkpoint with --checkpoint: the model's
    # weights only, then the supervised head at zero.
    tf.train.Checkpoint(model=model).restore(prefix).expect_partial()
    after = [w.numpy() for w in model.resnet_model.weights]
    if all(np.array_equal(a, b) for a, b in zip(before, after)):
        raise RuntimeError(f"Nothing of the encoder was restored: {prefix}")
    for x in model.supervised_head.trainable_weights:
        x.assign(tf.zeros_like(x))
    size = config.image_size

    def crop(image, label):
        # data.py's map_fn for fine-tuning: no colour, test_crop off.
        image = data_util.preprocess_image(
            image, size, size, is_training=True, test_crop=False
        )
        return image, tf.one_hot(label, 10)

    train_step = step(
        (data["labeled_x"], data["labeled_y"]),
        crop,
        settings["finetune_batch"],
        1,
    )
    start = time.perf_counter()
    losses = [train_step() for _ in range(settings["finetune_steps"])]
    # preprocess_for_eval without its crop (16 px): the images in [0, 1].
    x = data["x_test"].astype("float32") / 255.0
    logits = np.concatenate(
        [
            model(tf.constant(x[i : i + 128]), training=False)[1].numpy()
            for i in range(0, len(x), 128)
        ]
    )
    return {
        "test_accuracy": float(np.mean(logits.argmax(-1) == data["y_test"])),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "seconds": time.perf_counter() - start,
    }


# === Ours ===


def _ours_finetune(args, settings, data, row):
    """The recipe's fine-tuning stage on the encoder and head read from
    `--seed`'s reference checkpoint."""
    import dataclasses

    import keras

    from keras_ssl.data import LabeledSubset
    from keras_ssl.models import fine_tuning
    from keras_ssl.pretrained import load_simclr
    from keras_ssl.recipes import reports
    from keras_ssl.recipes import runner
    from keras_ssl.recipes import simclrv2
    from keras_ssl.recipes import stages
    from keras_ssl.recipes.datasets import ArraySplits

    prefix = _read_job(args, args.seed, "pretrain")["prefix"]
    labeled = LabeledSubset(
        indices=data["labeled_indices"],
        y=data["labeled_y"],
        x=data["labeled_x"],
    )
    splits = ArraySplits(
        data["x_train"],
        data["y_train"],
        data["x_test"],
        data["y_test"],
        10,
        labeled=labeled,
        seed=args.seed,
    )
    recipe = row == "ours-recipe"
    config = dataclasses.replace(
        settings["config"],
        seed=args.seed,
        linear_probe_first=recipe,
        finetune_steps=args.finetune_steps,
        verbose=0,
    )
    keras.utils.set_random_seed(args.seed)
    loaded = load_simclr(prefix, ft_layer=config.ft_layer)
    result = {}
    if recipe:
        # The recipe's representation report: its images in [0, 1], as
        # the pretrainer's call makes them.
        result.update(
            reports.probe_accuracies(
                loaded.encoder,
                types.SimpleNamespace(
                    x=(labeled.x / 255.0).astype("float32"), y=labeled.y
                ),
                types.SimpleNamespace(
                    x_test=(splits.x_test / 255.0).astype("float32"),
                    y_test=splits.y_test,
                    num_classes=10,
                ),
                output=None,
            )
        )
    run = runner.Run(
        config, splits, labeled, False, reports.RecipeResult(config=config)
    )
    run.models["pretrainer"] = types.SimpleNamespace(
        encoder=loaded.encoder, head=loaded.head
    )
    run.stage = "finetune"
    stage = next(s for s in simclrv2.STAGES if s.name == "finetune")
    model = stage.build(run)
    run.models[stage.role] = model
    batch = stage.batch(run)
    total = settings["finetune_steps"]
    run.current, run.total_steps = stage, total
    model.compile(optimizer=stage.optimizer(run, total))
    start = time.perf_counter()
    stage.init(run, model)
    if recipe:
        result["start_accuracy"] = stages.test_accuracy(run, model)[
            "test_accuracy"
        ]
    history = model.fit(
        stage.data(run), epochs=1, steps_per_epoch=total, verbose=0
    )
    result["loss_first"] = float(history.history["loss"][0])
    if recipe:
        result["share_1_accuracy"] = stages.test_accuracy(run, model)[
            "test_accuracy"
        ]
        run.result.stages[stage.name] = types.SimpleNamespace(metrics={})
        scores = {}
        chosen = fine_tuning.cross_validated_share

        def recorded(*a, **kw):
            share, values = chosen(*a, **kw)
            scores.update(values)
            return share, values

        fine_tuning.cross_validated_share = recorded
        try:
            stage.finish(run, model)
        finally:
            fine_tuning.cross_validated_share = chosen
        result["share"] = run.result.stages[stage.name].metrics[
            "finetune_interpolation"
        ]
        result["cv_scores"] = {f"{k:g}": v for k, v in scores.items()}
    result["test_accuracy"] = stages.test_accuracy(run, model)["test_accuracy"]
    result["batch"] = batch
    result["seconds"] = time.perf_counter() - start
    return result


# === Workers and parent ===


def _read_job(args, seed, job):
    with open(job_path(args, seed, job)) as file:
        return json.load(file)


def _serve(args):
    data = load_data(os.path.join(args.out, "data.npz"))
    settings = preset(args, len(data["y_train"]), len(data["labeled_y"]))

    def handle(request):
        job = request["name"]
        if job == "pretrain":
            return _reference_pretrain(args, settings, data)
        if job in REFERENCE_ROWS:
            return _reference_finetune(args, settings, data, job)
        return _ours_finetune(args, settings, data, job)

    return serve(lambda: ({"ready": True}, handle))


def run_job(args, argv, seed, job):
    """Runs `job` of `seed` in a fresh worker unless its result is there;
    returns the result."""
    path = job_path(args, seed, job)
    if os.path.exists(path):
        return _read_job(args, seed, job)
    side = "ours" if job in OURS_ROWS else "reference"
    started = time.perf_counter()
    worker = Worker(
        side,
        args,
        [*argv, "--seed", str(seed)],
        script=os.path.abspath(__file__),
    )
    try:
        result = worker.ask("run", job)
    finally:
        worker.close()
    result["wall_seconds"] = time.perf_counter() - started
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as file:
        json.dump(result, file, indent=1)
    return result


def describe(job, result):
    """One line for a finished job."""
    if job == "pretrain":
        return (
            f"NT-Xent {result['loss_first']:.3f} (first tenth) -> "
            f"{result['loss_last']:.3f} (last tenth)"
        )
    line = f"test accuracy {result['test_accuracy']:.1%}"
    if "share" in result:
        line += (
            f" (start {result['start_accuracy']:.1%}, share 1 "
            f"{result['share_1_accuracy']:.1%}, share {result['share']:g} "
            "chosen); probe k-NN "
            f"{result['knn_accuracy']:.1%}, linear "
            f"{result['linear_probe_accuracy']:.1%}"
        )
    return line


# Table rows: (label, job, key).
TABLE = (
    (
        "pretrained encoder: k-NN (k = 200, τ = 0.1)",
        "ours-recipe",
        "knn_accuracy",
    ),
    (
        "pretrained encoder: linear probe (logistic regression)",
        "ours-recipe",
        "linear_probe_accuracy",
    ),
    ("reference: linear evaluation", "reference-linear", "test_accuracy"),
    (
        "reference: linear evaluation, the preset's crop",
        "reference-linear-crop",
        "test_accuracy",
    ),
    (
        "reference: whole-network fine-tuning, its crop (0.08, 1)",
        "reference-finetune",
        "test_accuracy",
    ),
    (
        "reference: whole-network fine-tuning, the preset's crop",
        "reference-finetune-crop",
        "test_accuracy",
    ),
    (
        "ours: whole-network fine-tuning (no LP-FT, no WiSE-FT)",
        "ours-finetune",
        "test_accuracy",
    ),
    ("ours, recipe: LP-FT start (share 0)", "ours-recipe", "start_accuracy"),
    ("ours, recipe: LP-FT (share 1)", "ours-recipe", "share_1_accuracy"),
    (
        "ours, recipe as shipped: WiSE-FT at the chosen share",
        "ours-recipe",
        "test_accuracy",
    ),
    ("ours, recipe: the share chosen", "ours-recipe", "share"),
)


def table(results, seeds):
    """The markdown table: each row's mean ± std over the seeds, and each
    seed's value."""
    lines = [
        "| model | mean ± std | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " |",
        "| --- | ---: |" + " ---: |" * len(seeds),
    ]
    for label, job, key in TABLE:
        values = [results.get((s, job), {}).get(key) for s in seeds]
        if any(v is None for v in values):
            continue
        share = key == "share"
        show = "{:g}".format if share else "{:.1%}".format
        mean, std = mean_std(values)
        spread = (
            f"{mean:.2f} ± {std:.2f}" if share else (f"{mean:.1%} ± {std:.1%}")
        )
        lines.append(
            f"| {label} | {spread} | "
            + " | ".join(show(v) for v in values)
            + " |"
        )
    return "\n".join(lines)


def cv_lines(results, seeds):
    """`ours-recipe`'s cross-validated accuracy by share, per seed."""
    lines = []
    for s in seeds:
        result = results.get((s, "ours-recipe"))
        if result:
            lines.append(
                f"seed {s}: "
                + ", ".join(
                    f"{k}: {v:.1%}" for k, v in result["cv_scores"].items()
                )
                + f" -> share {result['share']:g}"
            )
    return lines


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.worker:
        return _serve(args)
    if any(r in REFERENCE_ROWS for r in args.row_list) or not all(
        os.path.exists(job_path(args, s, "pretrain")) for s in args.seed_list
    ):
        check_reference_python(args.reference_python)
    print("python " + " ".join([os.path.relpath(__file__), *argv]))
    os.makedirs(args.out, exist_ok=True)
    data_file = os.path.join(args.out, "data.npz")
    if not os.path.exists(data_file):
        write_data(args, data_file)
    data = load_data(data_file)
    settings = preset(args, len(data["y_train"]), len(data["labeled_y"]))
    config = settings["config"]
    print(
        f"digits: {len(data['y_train'])} training images, "
        f"{len(data['labeled_y'])} labeled, {len(data['y_test'])} test, "
        f"{config.image_size} px. Pretraining (the reference's): CIFAR "
        f"ResNet-18 width {config.width_multiplier:g}, batch "
        f"{config.batch_size}, {settings['pretrain_steps']} steps, LARS "
        f"{config.learning_rate:g} ({config.learning_rate_scaling}) with "
        f"{settings['warmup_steps']} warm-up steps and cosine decay, "
        f"weight decay {config.weight_decay:g}, temperature "
        f"{config.temperature:g}, crops {config.crop_scale}. Fine-tuning: "
        f"{settings['finetune_steps']} steps of {settings['finetune_batch']}"
        f" images; LARS {config.finetune_learning_rate:g}·√B (reference, "
        f"ours), momentum {args.linear_learning_rate:g}·B/256 (reference's "
        f"linear evaluation); our crop {config.finetune_crop_scale}"
    )
    results = {}
    for seed in args.seed_list:
        for job in ("pretrain", *args.row_list):
            started = time.perf_counter()
            results[(seed, job)] = run_job(args, argv, seed, job)
            print(
                f"seed {seed} {job}: {describe(job, results[(seed, job)])} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    print(machine())
    print()
    print(table(results, args.seed_list))
    lines = cv_lines(results, args.seed_list)
    if lines:
        print("\nours-recipe, 3-fold cross-validated accuracy by share:")
        print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
