import csv
import io
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet
import pytest
from PIL import Image

from keras_ssl import inference
from keras_ssl.export import export_saved_model
from keras_ssl.export import serving_outputs
from keras_ssl.models import FineTuner
from tests.models.conftest import tiny_encoder

# Good images, by the name a run gives them; `bad.png` does not decode,
# `notes.txt` is not an image file and is not read.
GOOD = ("a/0.png", "a/1.png", "b/deep/2.png", "c.png", "wide.png")
SAME_SIZE = GOOD[:4]  # 16x16, the model's size: no resizing


def classifier():
    model = FineTuner(tiny_encoder(), num_classes=3, ft_layer=0)
    model.classifier.kernel.assign(
        np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    )
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    model = classifier()
    export_saved_model(model, str(root / "finetuned"))
    export_saved_model(tiny_encoder(), str(root / "encoder"))
    model.save(str(root / "finetuned.keras"))
    return {
        "model": model,
        "saved": str(root / "finetuned"),
        "encoder": str(root / "encoder"),
        "keras": str(root / "finetuned.keras"),
    }


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    images = {}
    for name in GOOD:
        shape = (20, 24, 3) if name == "wide.png" else (16, 16, 3)
        image = rng.integers(0, 256, shape).astype("uint8")
        if name == "b/deep/2.png":  # gray: read as RGB
            image = np.repeat(image[..., :1], 3, axis=-1)
        images[name] = image
        os.makedirs(root / os.path.dirname(name), exist_ok=True)
        mode = "L" if name == "b/deep/2.png" else "RGB"
        pixels = image[..., 0] if mode == "L" else image
        Image.fromarray(pixels, mode).save(root / name)
    (root / "bad.png").write_bytes(b"\x89PNG not an image")
    (root / "notes.txt").write_text("not an image")
    return str(root), images


def expected(model, images, key):
    return np.concatenate(
        [
            np.asarray(serving_outputs(model, image[None])[key])
            for image in images
        ]
    )


def read_csv(text):
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], rows[1:]


@pytest.mark.slow
@pytest.mark.parametrize("source", ["saved", "keras"])
def test_embed_folder_rows_names_and_values(models, folder, tmp_path, source):
    path, images = folder
    out = str(tmp_path / "embeddings.npz")
    result = inference.embed_images(
        models[source], path, out, batch_size=4, progress=False
    )
    assert result.corrupt == ["bad.png"]
    assert result.rows == len(GOOD)
    data = np.load(out)
    assert list(data["name"]) == sorted(GOOD)
    assert data["embedding"].shape == (len(GOOD), 8)
    rows = [list(data["name"]).index(n) for n in SAME_SIZE]
    own = expected(models["model"], [images[n] for n in SAME_SIZE], "embedding")
    np.testing.assert_allclose(data["embedding"][rows], own, atol=1e-5)


@pytest.mark.slow
def test_embed_and_predict_from_the_command_line(models, folder, tmp_path):
    path, images = folder
    out = str(tmp_path / "embeddings.csv")
    command = [sys.executable, "-m", "keras_ssl"]
    run = subprocess.run(
        [*command, "embed", models["saved"], path, "--out", out],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "1 corrupt file(s)" in run.stderr and "bad.png" in run.stderr
    assert f"{len(GOOD) + 1}/{len(GOOD) + 1} images" in run.stderr
    with open(out) as f:
        header, rows = read_csv(f.read())
    assert header == ["name"] + [f"embedding_{j}" for j in range(8)]
    assert [row[0] for row in rows] == sorted(GOOD)
    values = np.array([row[1:] for row in rows], "float32")
    own = expected(
        models["model"], [images[n] for n in sorted(GOOD)], "embedding"
    )
    index = [sorted(GOOD).index(n) for n in SAME_SIZE]
    np.testing.assert_allclose(values[index], own[index], atol=1e-5)

    run = subprocess.run(
        [*command, "predict", models["keras"], path, "--quiet"],
        capture_output=True,
        text=True,
        check=True,
    )
    header, rows = read_csv(run.stdout)
    assert header[:3] == ["name", "class", "probability"]
    assert [row[0] for row in rows] == sorted(GOOD)
    probabilities = np.array([row[3:] for row in rows], "float64")
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    classes = np.array([int(row[1]) for row in rows])
    np.testing.assert_array_equal(classes, probabilities.argmax(-1))
    np.testing.assert_allclose(
        [float(row[2]) for row in rows], probabilities.max(-1), atol=1e-6
    )
    own = expected(
        models["model"], [images[n] for n in SAME_SIZE], "probabilities"
    )
    index = [sorted(GOOD).index(n) for n in SAME_SIZE]
    np.testing.assert_allclose(probabilities[index], own, atol=1e-5)
    assert "1 corrupt file(s)" in run.stderr


@pytest.mark.slow
def test_predict_an_array_file_to_parquet(models, tmp_path):
    images = np.random.default_rng(2).integers(0, 256, (5, 16, 16, 3))
    images = images.astype("uint8")
    np.save(tmp_path / "images.npy", images)
    out = str(tmp_path / "predictions.parquet")
    result = inference.predict_images(
        models["saved"],
        str(tmp_path / "images.npy"),
        out,
        batch_size=2,
        progress=False,
    )
    assert (result.rows, result.corrupt) == (5, [])
    table = pyarrow.parquet.read_table(out).to_pydict()
    assert table["name"] == ["0", "1", "2", "3", "4"]
    probabilities = np.stack(
        [table[f"probabilities_{j}"] for j in range(3)], axis=-1
    )
    own = np.asarray(serving_outputs(models["model"], images)["probabilities"])
    np.testing.assert_allclose(probabilities, own, atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    assert table["class"] == list(own.argmax(-1))


@pytest.mark.slow
def test_predict_refuses_a_model_without_classifier(models, folder, tmp_path):
    with pytest.raises(ValueError, match="no classification output"):
        inference.predict_images(
            models["encoder"], folder[0], str(tmp_path / "p.csv")
        )
    assert not os.path.exists(tmp_path / "p.csv")


def test_a_catalogue_name_is_loaded_with_pretrained_load(
    folder, tmp_path, monkeypatch
):
    from keras_ssl.pretrained import catalog

    model = classifier()
    loaded = []
    monkeypatch.setattr(
        catalog, "load", lambda name: loaded.append(name) or model
    )
    name = "paws/r50_10pct_300ep/finetuned"
    result = inference.predict_images(
        name, folder[0], str(tmp_path / "p.npz"), progress=False
    )
    assert loaded == [name]
    data = np.load(tmp_path / "p.npz")
    assert list(data["name"]) == sorted(GOOD)
    np.testing.assert_allclose(data["probabilities"].sum(-1), 1.0, atol=1e-5)
    assert result.corrupt == ["bad.png"]


def test_a_catalogue_name_offline_says_how_to_get_it(folder, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(folder[0]))
    with pytest.raises(FileNotFoundError, match="gsutil"):
        inference.embed_images(
            "simclrv2/r50_1x_sk0/pretrained", folder[0], "e.npz"
        )


@pytest.mark.parametrize(
    "arguments, match",
    [
        ({"model": "missing/model.keras"}, "model='missing/model.keras'"),
        ({"model": "simclrv9/nothing"}, "model='simclrv9/nothing'"),
        ({"images": "EMPTY"}, "images="),
        ({"images": "missing.npy"}, "images='missing.npy'"),
        ({"out": "embeddings.json"}, "out='embeddings.json'"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(
    arguments, match, folder, tmp_path
):
    (tmp_path / "empty").mkdir()
    (tmp_path / "model").mkdir()
    kwargs = {
        "model": str(tmp_path / "model.keras"),
        "images": folder[0],
        "out": str(tmp_path / "e.csv"),
        **arguments,
    }
    if kwargs["images"] == "EMPTY":
        kwargs["images"] = str(tmp_path / "empty")
    # A model that would load: a bad later argument is found first.
    classifier().save(str(tmp_path / "model.keras"))
    with pytest.raises(ValueError, match=match):
        inference.embed_images(**kwargs)
    assert not os.path.exists(tmp_path / "e.csv")


def test_parquet_without_pyarrow_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ValueError, match="pyarrow.*out='e.parquet'"):
        inference.TableWriter("e.parquet")


def test_command_line_errors_name_the_argument(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_ssl",
            "embed",
            "no/such/model.keras",
            str(tmp_path),
            "--out",
            "e.csv",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert "model='no/such/model.keras'" in run.stderr


def test_files_are_read_batch_by_batch(folder, monkeypatch):
    path, _ = folder
    source = inference.ImageSource(path)
    opened = []
    real_open = open
    monkeypatch.setattr(
        "builtins.open",
        lambda name, *a, **k: opened.append(name) or real_open(name, *a, **k),
    )
    batches = source.batches(2)
    names, contents = next(batches)
    assert names == sorted([*GOOD, "bad.png"])[:2]
    assert len(opened) == 2 and len(contents) == 2
    next(batches)
    assert len(opened) == 4


def test_csv_rows_are_written_as_the_batches_come(tmp_path):
    out = tmp_path / "e.csv"
    writer = inference.TableWriter(str(out))
    writer.write(["a.png", "b.png"], {"embedding": np.eye(2, 3, dtype="f4")})
    header, rows = read_csv(out.read_text())
    assert header == ["name", "embedding_0", "embedding_1", "embedding_2"]
    assert rows == [
        ["a.png", "1.0", "0.0", "0.0"],
        ["b.png", "0.0", "1.0", "0.0"],
    ]
    writer.write(["c.png"], {"embedding": np.ones((1, 3), "f4")})
    writer.close()
    assert len(read_csv(out.read_text())[1]) == 3
