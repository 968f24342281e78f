import urllib.error

import keras
import numpy as np
import pytest

from keras_ssl.pretrained import CHECKPOINTS
from keras_ssl.pretrained import PretrainedModel
from keras_ssl.pretrained import load
from tests.pretrained import torch_files
from tests.pretrained.test_paws_checkpoints import PAWSReference


def test_table():
    simclrv2 = [n for n in CHECKPOINTS if n.startswith("simclrv2/")]
    # Five stages of the 13 networks of the README's table; the distilled
    # networks are the three of the paper's Table 3, on 1% and 10%.
    assert len(simclrv2) == 13 * 5 + 3 * 2
    distilled = sorted(n for n in simclrv2 if "/distill_" in n)
    assert distilled == sorted(
        f"simclrv2/{arch}/distill_{pct}pct"
        for arch in ("r50_1x_sk0", "r50_2x_sk1", "r152_3x_sk1")
        for pct in (1, 10)
    )
    entry = CHECKPOINTS["simclrv2/r50_1x_sk0/distill_1pct"]
    assert entry.top1 == 73.9 and entry.stage == "distilled"
    assert entry.url == (
        "gs://simclr-checkpoints-tf2/simclrv2/distill_1pct/r50_1x_sk0/"
        "saved_model/"
    )
    assert CHECKPOINTS["simclrv2/r152_3x_sk1/distill_10pct"].top1 == 80.9
    assert "simclrv2/r101_2x_sk1/distill_1pct" not in CHECKPOINTS
    # SimCLRv1: the bucket's public address, which needs no sign-in.
    for width in ("1x", "2x", "4x"):
        url = CHECKPOINTS[f"simclrv1/r50_{width}/pretrained"].url
        assert url == (
            "https://storage.googleapis.com/simclr-gcs/checkpoints/"
            f"ResNet50_{width}.zip"
        )
    entry = CHECKPOINTS["simclrv2/r50_1x_sk0/pretrained"]
    assert entry.top1 == 71.7 and entry.url.startswith("gs://")
    assert CHECKPOINTS["simclrv2/r152_3x_sk1/finetuned_1pct"].ft_layer == 1
    paws = CHECKPOINTS["paws/r50_10pct_300ep/finetuned"]
    assert paws.url.endswith("paws_imgnt_10percent_300ep_finetuned.pth.tar")
    assert paws.top1 == 75.5 and paws.label_fraction == 0.1
    assert "paws/r50_1pct_100ep/finetuned" not in CHECKPOINTS  # no file
    assert not CHECKPOINTS["semppl/r50_1x_sk_10pct/pretrained"].supported
    for entry in CHECKPOINTS.values():
        assert entry.url.startswith(("gs://", "https://"))
        assert "storage.cloud.google.com" not in entry.url


def _offline(*args, **kwargs):
    raise urllib.error.URLError("no network")


def test_offline_error_names_url_and_place(tmp_path, monkeypatch):
    monkeypatch.setattr(keras.utils, "get_file", _offline)
    name = "semppl/r50_1x_10pct/pretrained"
    with pytest.raises(FileNotFoundError) as error:
        load(name, cache_dir=str(tmp_path))
    message = str(error.value)
    assert CHECKPOINTS[name].url in message
    assert str(tmp_path / "semppl" / "resnet_50_1x_10_pct.pkl") in message


def test_gcs_checkpoint_error_says_how_to_copy(tmp_path):
    with pytest.raises(FileNotFoundError, match="gsutil -m cp -r gs://"):
        load("simclrv2/r50_1x_sk0/pretrained", cache_dir=str(tmp_path))


def test_unknown_and_unsupported_names(tmp_path):
    with pytest.raises(ValueError, match="Received: name='simclrv2/r999'"):
        load("simclrv2/r999", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="does not"):
        load("semppl/r50_2x_sk_1pct/pretrained", cache_dir=str(tmp_path))


def test_cached_file_loads_without_network(tmp_path, monkeypatch):
    reference = PAWSReference()
    x = np.random.default_rng(0).uniform(size=(1, 32, 32, 3))
    features = reference.backbone(x, widen=0.25)
    reference.fine_tuned(features, 3)
    (tmp_path / "paws").mkdir()
    path = tmp_path / "paws" / "paws_imgnt_10percent_300ep_finetuned.pth.tar"
    torch_files.write(path, {"encoder": reference.params.values}, monkeypatch)
    monkeypatch.undo()
    monkeypatch.setattr(keras.utils, "get_file", _offline)
    model = load("paws/r50_10pct_300ep/finetuned", cache_dir=str(tmp_path))
    assert isinstance(model, PretrainedModel)
    np.testing.assert_allclose(
        model(x.astype("float32"))["features"], features, rtol=1e-4, atol=1e-4
    )
