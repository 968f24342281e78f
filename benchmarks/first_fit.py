"""The first `fit` of a model: one trace of the training step, or two.

`tf.function` traces a function again when its first trace created
variables, and Keras creates the optimizer's slots (and a compiled loss's
and metrics' state) in the first trace of the training step. keras-ssl's
models create them before `fit` traces (`keras_ssl/models/_training_state.py`).
This times a model's first `fit` of one step, at the digits preset's
sizes (16-px images, a CIFAR-stem ResNet-18 at a quarter of the width,
LARS), both ways, each in a fresh process, in alternation:

- `FineTuner` (LP-FT's frozen BatchNorm, batch 50): as keras-ssl fits it,
  and through `keras.Model.fit` directly (Keras's own path);
- `SimCLRv2Pretrainer` (3-layer head to 128 dims, `simclr_cifar` views,
  batch 128): the same two ways.

    PYTHONPATH=. python benchmarks/first_fit.py --cycles 3

Prints a markdown table of wall and CPU seconds of the first `fit`
(medians and ranges over cycles), the traces of the training step, the
per-cycle ratios, the command and the machine.
"""

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

MODELS = ("fine_tuner", "pretrainer")
WAYS = ("keras_ssl", "keras")


def _model(name):
    from keras_ssl.backbones import ResNet
    from keras_ssl.layers import ProjectionHead
    from keras_ssl.layers import Views
    from keras_ssl.models import FineTuner
    from keras_ssl.models import SimCLRv2Pretrainer
    from keras_ssl.optimizers import LARS

    encoder = ResNet(
        depth=18, width_multiplier=0.25, stem="cifar", input_shape=(16, 16, 3)
    )
    if name == "fine_tuner":
        model = FineTuner(
            encoder,
            num_classes=10,
            image_size=16,
            crop_scale=(0.8, 1.0),
            seed=0,
            frozen_batch_norm=True,
        )
    else:
        model = SimCLRv2Pretrainer(
            encoder,
            head=ProjectionHead(num_layers=3, output_dim=128),
            views=Views.from_preset("simclr_cifar", size=16, seed=0),
            memory_size=0,
        )
    model.compile(optimizer=LARS(0.1, weight_decay=1e-6))
    return model


def worker(name, way):
    """One first `fit` in this process; prints its JSON."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    model = _model(name)
    traces = []
    step = model.train_step

    def counted(*args):
        traces.append(1)
        return step(*args)

    model.train_step = counted
    batch = 50 if name == "fine_tuner" else 128
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch, 16, 16, 3)).astype("uint8")
    args = (x, np.arange(batch) % 10) if name == "fine_tuner" else (x,)
    fit = (
        model.fit
        if way == "keras_ssl"
        else (lambda *a, **k: keras.Model.fit(model, *a, **k))
    )
    start, cpu = time.perf_counter(), time.process_time()
    fit(*args, batch_size=batch, epochs=1, verbose=0)
    print(
        json.dumps(
            {
                "wall": time.perf_counter() - start,
                "cpu": time.process_time() - cpu,
                "traces": len(traces),
            }
        )
    )


def _run(name, way):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [sys.executable, __file__, "--worker", name, way],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(*args.worker)
    if args.cycles < 1:
        raise ValueError(f"`--cycles` must be >= 1. Received: {args.cycles}")
    from alternate import machine

    results = {(n, w): [] for n in MODELS for w in WAYS}
    for _ in range(args.cycles):
        for name in MODELS:
            for way in WAYS:
                results[name, way].append(_run(name, way))
    print(machine() + "\n")
    print(
        "| model | fit | traces | wall s (median, range) | CPU s "
        "(median, range) | keras / keras_ssl wall per cycle |"
    )
    print("| --- | --- | ---: | --- | --- | --- |")
    for name in MODELS:
        for way in WAYS:
            rows = results[name, way]
            cells = []
            for key in ("wall", "cpu"):
                values = sorted(r[key] for r in rows)
                cells.append(
                    f"{values[len(values) // 2]:.1f} "
                    f"({values[0]:.1f}–{values[-1]:.1f})"
                )
            ratio = ""
            if way == "keras":
                ratio = ", ".join(
                    f"{k['wall'] / o['wall']:.2f}"
                    for k, o in zip(rows, results[name, "keras_ssl"])
                )
            print(
                f"| {name} | {way} | {rows[0]['traces']} | {cells[0]} | "
                f"{cells[1]} | {ratio} |"
            )


if __name__ == "__main__":
    main()
