import keras
import numpy as np
import pytest

from keras_ssl.pretrained import load_paws
from keras_ssl.pretrained.__main__ import main
from keras_ssl.pretrained.__main__ import parse_args
from tests.pretrained import reference as ref
from tests.pretrained import torch_files
from tests.pretrained.test_paws_checkpoints import PAWSReference


@pytest.fixture
def paws_file(tmp_path, monkeypatch):
    reference = PAWSReference()
    features = reference.backbone(ref.images(1, 32), widen=0.25)
    projection = reference.projection(features, 16)
    reference.prediction(projection)
    path = tmp_path / "paws.pth.tar"
    torch_files.write(path, {"encoder": reference.params.values}, monkeypatch)
    monkeypatch.undo()
    return str(path)


def test_convert_to_keras_file(paws_file, tmp_path, capsys):
    dst = str(tmp_path / "paws.keras")
    assert main(["convert", paws_file, dst]) == 0
    assert '"depth": 50' in capsys.readouterr().out
    x = ref.images(2, 32)
    expected = load_paws(paws_file)(x)
    restored = keras.saving.load_model(dst)
    outputs = restored(x)
    assert restored.encoder.pool_padding == "symmetric"
    for key in ("features", "projection", "prediction"):
        np.testing.assert_allclose(outputs[key], expected[key], atol=1e-6)


def test_convert_to_weights_file(paws_file, tmp_path):
    dst = str(tmp_path / "paws.weights.h5")
    main(["convert", paws_file, dst, "--format", "paws"])
    model = load_paws(paws_file)
    x = ref.images(1, 32)
    expected = model(x)["projection"]
    for variable in model.weights:
        variable.assign(np.zeros(variable.shape, variable.dtype))
    model.load_weights(dst)
    np.testing.assert_allclose(model(x)["projection"], expected, atol=1e-6)


def test_bad_destination():
    with pytest.raises(SystemExit):
        parse_args(["convert", "a.pkl", "b.h5"])
