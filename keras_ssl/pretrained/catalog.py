"""The published checkpoints, by name, and `load()`.

Every URL and accuracy below is taken from the README of the method's
reference repository (google-research/simclr, its `tf2/README.md`,
facebookresearch/suncet, google-deepmind/semppl), except: the SimCLRv1
files, which the README links on `storage.cloud.google.com` (a browser
address that asks to sign in), are fetched from the same bucket's public
address, `storage.googleapis.com`; and the distilled SimCLRv2 networks,
whose directories the README lists without their contents, are the three
of the SimCLRv2 paper's Table 3 (ResNet-50 and ResNet-50 2x + SK distilled
from ResNet-152 3x + SK, and ResNet-152 3x + SK self-distilled), with that
table's top-1. SimCLR publishes Cloud Storage directories (`gs://`), one
per stage, not files: those checkpoints are copied with `gsutil` and then
found by `load()` in the cache.
"""

import dataclasses
import os

import keras

from keras_ssl.pretrained.paws import load_paws
from keras_ssl.pretrained.semppl import load_semppl
from keras_ssl.pretrained.simclr import load_simclr

SIMCLR_TF2 = "gs://simclr-checkpoints-tf2/simclrv2"
# SimCLRv2 README, Table 1 rows: (depth, width, SK, F-T 1%, F-T 10%,
# F-T 100%, linear eval, supervised).
SIMCLRV2_TABLE = (
    (50, 1, False, 57.9, 68.4, 76.3, 71.7, 76.6),
    (50, 1, True, 64.5, 72.1, 78.7, 74.6, 78.5),
    (50, 2, False, 66.3, 73.9, 79.1, 75.6, 77.8),
    (50, 2, True, 70.6, 77.0, 81.3, 77.7, 79.3),
    (101, 1, False, 62.1, 71.4, 78.2, 73.6, 78.0),
    (101, 1, True, 68.3, 75.1, 80.6, 76.3, 79.6),
    (101, 2, False, 69.1, 75.8, 80.7, 77.0, 78.9),
    (101, 2, True, 73.2, 78.8, 82.4, 79.0, 80.1),
    (152, 1, False, 64.0, 73.0, 79.3, 74.5, 78.3),
    (152, 1, True, 70.0, 76.5, 81.3, 77.2, 79.9),
    (152, 2, False, 70.2, 76.6, 81.1, 77.4, 79.1),
    (152, 2, True, 74.2, 79.4, 82.9, 79.4, 80.4),
    (152, 3, True, 74.9, 80.1, 83.1, 79.8, 80.5),
)
# SimCLRv2 paper, Table 3: the distilled networks, (depth, width, SK,
# top-1 with 1% labels, with 10%).
SIMCLRV2_DISTILLED = (
    (50, 1, False, 73.9, 77.5),
    (50, 2, True, 75.9, 80.2),
    (152, 3, True, 76.6, 80.9),
)
PAWS_URL = "https://dl.fbaipublicfiles.com/paws/"
# suncet README: (epochs, labels, pretrained NN top-1, fine-tuned top-1,
# whether the fine-tuned file is published).
PAWS_TABLE = (
    (300, 1, 64.2, 66.5, True),
    (300, 10, 73.1, 75.5, True),
    (200, 1, 63.2, 66.1, False),
    (200, 10, 71.9, 75.0, False),
    (100, 1, 61.5, 63.8, False),
    (100, 10, 71.0, 73.9, False),
)
SEMPPL_URL = "https://storage.googleapis.com/dm-semppl/"
# semppl README: (architecture, file for 1%, file for 10%).
SEMPPL_FILES = (
    ("r50_1x", "resnet_50_1x_1_pct.pkl", "resnet_50_1x_10_pct.pkl"),
    ("r50_2x", "resnet_50_2x_1pct.pkl", "resnet_50_2x_10pct.pkl"),
    ("r50_4x", "resnet_50_4x_1pct.pkl", "resnet_50_4x_10pct.pkl"),
    ("r200_2x", "resnet_200_2x_1pct.pkl", "resnet_200_2x_10pct.pkl"),
    ("r50_1x_sk", "sk_resnet_50_1x_1_pct.pkl", "sk_resnet_50_1x_10_pct.pkl"),
    ("r50_2x_sk", "sk_resnet_50_2x_1pct.pkl", "sk_resnet_50_2x_10pct.pkl"),
    ("r200_2x_sk", "sk_resnet_200_2x_1pct.pkl", "sk_resnet_200_2x_10pct.pkl"),
)
SIMCLRV1_URL = "https://storage.googleapis.com/simclr-gcs/checkpoints/"
# SimCLR README: (width, file, top-1).
SIMCLRV1 = (
    ("1x", "ResNet50_1x.zip", 69.1),
    ("2x", "ResNet50_2x.zip", 74.2),
    ("4x", "ResNet50_4x.zip", 76.6),
)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One published checkpoint.

    Attributes:
        name: str. The key of `CHECKPOINTS`, e.g.
            `"simclrv2/r50_1x_sk0/pretrained"`.
        method: str. `"simclrv1"`, `"simclrv2"`, `"paws"` or `"semppl"`.
        architecture: str. E.g. `"ResNet-50 2x + SK"`.
        stage: str. `"pretrained"`, `"finetuned"`, `"supervised"` or
            `"distilled"`.
        label_fraction: float or `None`. Fraction of ImageNet labels used
            (`None` where labels played no part).
        url: str. Where the authors publish it (`gs://` directories for
            SimCLRv2).
        top1: float or `None`. ImageNet top-1 (%) as the README reports it
            (SimCLRv2 pretrained: linear evaluation; SimCLRv2 distilled:
            the paper's Table 3; PAWS pretrained: nearest neighbour);
            `None` where the README gives none.
        ft_layer: int. The projection-head activation the classifier
            reads (SimCLRv2 fine-tuned on 1% or 10%: 1).
        supported: bool. Whether `load()` can read it.
    """

    name: str
    method: str
    architecture: str
    stage: str
    label_fraction: float
    url: str
    top1: float
    ft_layer: int = 0
    supported: bool = True

    @property
    def filename(self):
        """Where the checkpoint lives under the cache directory."""
        if self.url.startswith("gs://"):
            return os.path.join(*self.name.split("/"), "saved_model")
        return os.path.join(self.method, os.path.basename(self.url))


def _simclrv2():
    stages = (
        # stage directory, stage, label fraction, table column, ft_layer
        ("finetuned_1pct", "finetuned", 0.01, 3, 1),
        ("finetuned_10pct", "finetuned", 0.1, 4, 1),
        ("finetuned_100pct", "finetuned", 1.0, 5, 0),
        ("pretrained", "pretrained", None, 6, 0),
        ("supervised", "supervised", 1.0, 7, 0),
    )
    distilled = (
        ("distill_1pct", "distilled", 0.01, 3, 0),
        ("distill_10pct", "distilled", 0.1, 4, 0),
    )
    rows = [(row, stages) for row in SIMCLRV2_TABLE]
    rows += [(row, distilled) for row in SIMCLRV2_DISTILLED]
    for row, row_stages in rows:
        depth, width, sk = row[:3]
        arch = f"r{depth}_{width}x_sk{int(sk)}"
        for directory, stage, fraction, column, ft_layer in row_stages:
            name = f"simclrv2/{arch}/{directory}"
            yield Checkpoint(
                name=name,
                method="simclrv2",
                architecture=f"ResNet-{depth} {width}x"
                + (" + SK" if sk else ""),
                stage=stage,
                label_fraction=fraction,
                url=f"{SIMCLR_TF2}/{directory}/{arch}/saved_model/",
                top1=row[column],
                ft_layer=ft_layer,
            )


def _others():
    for width, filename, top1 in SIMCLRV1:
        yield Checkpoint(
            name=f"simclrv1/r50_{width}/pretrained",
            method="simclrv1",
            architecture=f"ResNet-50 {width}",
            stage="pretrained",
            label_fraction=None,
            url=SIMCLRV1_URL + filename,
            top1=top1,
        )
    for epochs, labels, nn_top1, ft_top1, finetuned in PAWS_TABLE:
        base = f"{PAWS_URL}paws_imgnt_{labels}percent_{epochs}ep"
        stages = [("pretrained", f"{base}.pth.tar", nn_top1)]
        if finetuned:
            stages.append(("finetuned", f"{base}_finetuned.pth.tar", ft_top1))
        for stage, url, top1 in stages:
            yield Checkpoint(
                name=f"paws/r50_{labels}pct_{epochs}ep/{stage}",
                method="paws",
                architecture="ResNet-50 1x",
                stage=stage,
                label_fraction=labels / 100,
                url=url,
                top1=top1,
            )
    for arch, *files in SEMPPL_FILES:
        for labels, filename in zip((1, 10), files):
            depth, width = arch.split("_")[:2]
            yield Checkpoint(
                name=f"semppl/{arch}_{labels}pct/pretrained",
                method="semppl",
                architecture=f"ResNet-{depth[1:]} {width}"
                + (" + SK" if arch.endswith("_sk") else ""),
                stage="pretrained",
                label_fraction=labels / 100,
                url=SEMPPL_URL + filename,
                top1=None,
                # The SK network is not in SemPPL's released code.
                supported=not arch.endswith("_sk"),
            )


CHECKPOINTS = {c.name: c for c in (*_simclrv2(), *_others())}


def default_cache_dir():
    """`$KERAS_HOME/models/keras_ssl` (`~/.keras/...` by default)."""
    home = os.environ.get(
        "KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras")
    )
    return os.path.join(home, "models", "keras_ssl")


def load(name, cache_dir=None):
    """Loads a published checkpoint by name, downloading it if needed.

    The checkpoint is looked for under `cache_dir` first. PAWS, SemPPL and
    SimCLRv1 files are downloaded there with `keras.utils.get_file`;
    SimCLRv2's `gs://` directories must be copied there (the error says
    the command and the place).

    Args:
        name: str. A key of `keras_ssl.pretrained.CHECKPOINTS`, e.g.
            `"simclrv2/r50_1x_sk0/pretrained"` or
            `"paws/r50_10pct_300ep/finetuned"`.
        cache_dir: optional str. Defaults to `$KERAS_HOME/models/keras_ssl`.

    Returns:
        A `keras_ssl.pretrained.PretrainedModel`.

    Example:

    ```python
    model = keras_ssl.pretrained.load("simclrv2/r50_1x_sk0/pretrained")
    ```
    """
    if name not in CHECKPOINTS:
        close = [n for n in CHECKPOINTS if name.split("/")[0] in n][:5]
        raise ValueError(
            f"`name` must be one of `keras_ssl.pretrained.CHECKPOINTS`, e.g. "
            f"{close or list(CHECKPOINTS)[:5]}. Received: name={name!r}"
        )
    entry = CHECKPOINTS[name]
    if not entry.supported:
        raise ValueError(
            f"{name} uses a network that SemPPL's released code does not "
            "define, so keras_ssl cannot rebuild it."
        )
    directory = cache_dir or default_cache_dir()
    local = os.path.join(directory, entry.filename)
    # `get_file` finds a downloaded zip's unpacked copy itself.
    if entry.url.endswith(".zip") or not os.path.exists(local):
        local = _download(entry, directory, local)
    return read(entry.method, local, ft_layer=entry.ft_layer)


def read(method, path, ft_layer=0):
    """Reads a local checkpoint of `method` (see `CHECKPOINTS`)."""
    if method in ("simclrv1", "simclrv2"):
        return load_simclr(path, ft_layer=ft_layer)
    if method == "paws":
        return load_paws(path)
    return load_semppl(path)


def _download(entry, directory, local):
    if entry.url.startswith("gs://"):
        raise FileNotFoundError(
            f"{entry.name} is not in the cache. Copy it there with\n"
            f"  gsutil -m cp -r {entry.url} {os.path.dirname(local)}/\n"
            f"so that {local}/saved_model.pb exists, or pass the directory "
            "to keras_ssl.pretrained.load_simclr()."
        )
    archive = entry.url.endswith(".zip")
    try:
        return keras.utils.get_file(
            fname=os.path.basename(entry.url),
            origin=entry.url,
            cache_dir=directory,
            cache_subdir=entry.method,
            extract=archive,
        )
    except Exception as error:
        raise FileNotFoundError(
            f"Could not download {entry.name} ({error}). Download\n"
            f"  {entry.url}\nand put it at\n  {local}"
            + ("\n(unpacked)" if archive else "")
            + "\nthen call keras_ssl.pretrained.load() again."
        ) from error
