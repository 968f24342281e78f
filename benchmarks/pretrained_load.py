"""Imported checkpoints: agreement with the reference networks, load time.

For each format, writes checkpoints with the references' variable names
(the NumPy reference networks of tests/pretrained define them), loads them
with keras_ssl.pretrained and reports the max absolute difference of
features / projections / logits against the NumPy forward pass on the
test inputs (tiny networks, 2 images of 32x32), and the time to load a
ResNet-50 1x checkpoint written locally. SemPPL's file is written with
dill in SemPPL's pretraining layout (JAX arrays with a device axis of 2:
`tests/pretrained/semppl_files.py`); `benchmarks/semppl_checkpoint.py`
checks the reader on files written by SemPPL's own code.

    PYTHONPATH=. python benchmarks/pretrained_load.py [--formats "SemPPL .pkl"]
"""

import os
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_ssl import pretrained  # noqa: E402
from tests.pretrained import reference as ref  # noqa: E402
from tests.pretrained import semppl_files  # noqa: E402
from tests.pretrained import torch_files  # noqa: E402
from tests.pretrained.test_paws_checkpoints import PAWSReference  # noqa: E402
from tests.pretrained.test_semppl_checkpoints import SemPPLReference  # noqa: E402
from tests.pretrained.test_simclr_checkpoints import SimCLRReference  # noqa: E402
from tests.pretrained.test_simclr_checkpoints import write_tf1  # noqa: E402
from tests.pretrained.test_simclr_checkpoints import write_tf2  # noqa: E402


def simclr(naming, depth, base, sk, directory, x):
    r = SimCLRReference("tf1" if naming == "tf1" else "tf2")
    features = r.resnet(x, depth, base, sk)
    projection, logits = r.heads(features, 3, 128 if base == 64 else 8, 10, 1)
    if naming == "tf1":
        path = write_tf1(r.params.values, directory)
    else:
        path = write_tf2(r.params.values, directory, naming == "savedmodel")
    return path, {
        "features": features,
        "projection": projection,
        "logits": logits,
    }


def paws(base, directory, x):
    r = PAWSReference()
    features = r.backbone(x, widen=base / 64)
    projection = r.projection(features, 128 if base == 64 else 16)
    expected = {
        "features": features,
        "projection": projection,
        "prediction": r.prediction(projection),
    }
    path = os.path.join(directory, "paws.pth.tar")
    with pytest.MonkeyPatch.context() as monkeypatch:
        torch_files.write(path, {"encoder": r.params.values}, monkeypatch)
    return path, expected


def semppl(base, directory, x):
    r = SemPPLReference()
    features = r.torso(x, 50, base / 64)
    projection = r.mlp(features, "projector", 64, 32)
    expected = {
        "features": features,
        "projection": projection,
        "prediction": r.mlp(projection, "predictor", 64, 32),
    }
    # dill, SemPPL's layout: JAX arrays with a device axis (2 devices).
    path = semppl_files.write_pretraining(
        os.path.join(directory, "semppl.pkl"), {"online": (r.params, r.state)}
    )
    return path, expected


CASES = {
    "SimCLR TF1 checkpoint": (
        lambda *a: simclr("tf1", 50, *a),
        "simclr",
        0.0625,
    ),
    "SimCLR TF2 checkpoint": (lambda *a: simclr("tf2", 50, *a), "simclr", 0.0),
    "SimCLR TF2 SavedModel": (
        lambda *a: simclr("savedmodel", 50, *a),
        "simclr",
        0.0625,
    ),
    "PAWS .pth.tar": (lambda b, sk, d, x: paws(b, d, x), "paws", None),
    "SemPPL .pkl": (lambda b, sk, d, x: semppl(b, d, x), "semppl", None),
}
READERS = {
    "simclr": lambda p: pretrained.load_simclr(p, ft_layer=1),
    "paws": pretrained.load_paws,
    "semppl": pretrained.load_semppl,
}


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--formats",
        default=",".join(CASES),
        help=f"comma-separated, of {list(CASES)}",
    )
    names = parser.parse_args(argv).formats.split(",")
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise ValueError(
            f"`--formats` must name formats of {list(CASES)}. Received: "
            f"{unknown}"
        )
    x = ref.images(2, 32)
    print("| format | max abs diff (tiny R50, 0.25x) | R50 1x load (s) |")
    print("|---|---|---|")
    for name in names:
        write, reader, sk = CASES[name]
        with tempfile.TemporaryDirectory() as d:
            path, expected = write(16, sk, __import__("pathlib").Path(d), x)
            outputs = READERS[reader](path)(x, training=False)
            diffs = ", ".join(
                f"{k} {np.abs(np.asarray(outputs[k]) - v).max():.1e}"
                for k, v in expected.items()
            )
        with tempfile.TemporaryDirectory() as d:
            path, _ = write(64, sk, __import__("pathlib").Path(d), x[:1])
            start = time.perf_counter()
            READERS[reader](path)
            seconds = time.perf_counter() - start
        print(f"| {name} | {diffs} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
