"""Fixtures of the recipe tests."""

import pytest

from tests.data.streaming_fixtures import write_folder


@pytest.fixture(scope="session")
def folder(tmp_path_factory):
    """An ImageNet-like folder (`train/<synset>/*`, `val/<synset>/*`, a
    PNG and a corrupt file) with a generated `1percent.txt` of 3 training
    file names per class."""
    root = tmp_path_factory.mktemp("imagenet_folder")
    names = write_folder(str(root))
    chosen = [n for n in names if n.split("_")[1][:2] in ("1.", "2.", "3.")]
    (root / "1percent.txt").write_text("\n".join(chosen) + "\n")
    return str(root)
