"""`benchmarks/parity_simclr_distill_runs.py`'s checks of its input,
without the reference."""

import json
import time

import pytest


@pytest.fixture
def script(load_benchmark):
    return load_benchmark("parity_simclr_distill_runs")


# A notebook with the cells the script executes: shell lines, a download
# and the line that builds the model from Google Cloud Storage are left out.
CELLS = (
    "import tensorflow_hub as hub\n",
    "!wget https://example.com/labels.txt\nx = 1\n",
    "class LARSOptimizer:\n    pass\n",
    "def add_kd_loss(student_logits, teacher_logits, temperature):\n"
    "    return temperature\n\n"
    "def build_student_model():\n    return None\n",
    "learning_rate = 2.0\nweight_decay = 1e-4\n\n"
    "class Model:\n    def __init__(self, path):\n        self.path = path\n\n"
    'model = Model("gs://bucket/saved_model/")\n',
)


def _checkout(path, files, cells=CELLS):
    (path / "tf2" / "colabs").mkdir(parents=True)
    for name in files:
        target = path / "tf2" / name
        if name.endswith(".ipynb"):
            notebook = {
                "cells": [
                    {"cell_type": "code", "source": source} for source in cells
                ]
            }
            target.write_text(json.dumps(notebook))
        else:
            target.write_text("")
    return str(path)


def test_a_checkout_without_the_notebook_is_named(script, tmp_path):
    checkout = _checkout(tmp_path, ("model.py", "resnet.py"))
    start = time.perf_counter()
    with pytest.raises(ValueError) as error:
        script.main(["--simclr-dir", checkout])
    assert time.perf_counter() - start < 1.0
    message = str(error.value).split("lacks")[1]
    for name in (script.NOTEBOOK, "lars_optimizer.py", "data_util.py"):
        assert name in message
    assert "resnet.py" not in message
    with pytest.raises(ValueError, match="--simclr-dir"):
        script.main([])


def test_a_notebook_without_a_cell_it_runs_is_named(script, tmp_path):
    checkout = _checkout(
        tmp_path, script.REFERENCE_FILES, cells=CELLS[:3] + CELLS[4:]
    )
    start = time.perf_counter()
    with pytest.raises(
        ValueError, match="must define add_kd_loss in its code cells"
    ):
        script.main(["--simclr-dir", checkout])
    assert time.perf_counter() - start < 1.0


def test_a_notebook_that_is_not_json_is_named(script, tmp_path):
    checkout = _checkout(tmp_path, script.REFERENCE_FILES)
    (tmp_path / "tf2" / script.NOTEBOOK).write_text("{not json")
    with pytest.raises(ValueError, match="must be a notebook"):
        script.main(["--simclr-dir", checkout])


def test_the_cells_run_leave_out_downloads_and_the_cloud_model(
    script, tmp_path
):
    checkout = _checkout(tmp_path, script.REFERENCE_FILES)
    sources = script.notebook_cells(str(tmp_path / "tf2" / script.NOTEBOOK))
    namespace = {}
    for source in sources:
        exec(source, namespace)
    assert {"LARSOptimizer", "add_kd_loss", "build_student_model"} <= set(
        namespace
    )
    assert namespace["learning_rate"] == 2.0
    assert namespace["weight_decay"] == 1e-4
    # The class is defined, and not built from the cloud path.
    assert "Model" in namespace and "model" not in namespace
    joined = "\n".join(sources)
    assert "wget" not in joined and "hub" not in joined
    assert checkout


def test_a_reference_python_without_tf_keras_is_named(
    script, tmp_path, monkeypatch, python_without_site_packages
):
    checkout = _checkout(tmp_path, script.REFERENCE_FILES)
    python = python_without_site_packages
    empty = tmp_path / "site"
    empty.mkdir()
    monkeypatch.setenv("PYTHONPATH", str(empty))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"`tf_keras`.*--reference-python"):
        script.main(["--simclr-dir", checkout, "--reference-python", python])
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    "argv, name",
    [
        (["--seeds", "x"], "--seeds"),
        (["--seeds", "-1"], "--seeds"),
        (["--budgets", "0,3"], "--budgets"),
        (["--temperatures", "0"], "--temperatures"),
        (["--temperatures", ""], "--temperatures"),
        (["--preset-steps", "0"], "--preset-steps"),
        (["--chunk", "0"], "--chunk"),
        (["--own-init", "0"], "--own-init"),
        (["--own-init", "x"], "--own-init"),
    ],
)
def test_bad_arguments_are_named(script, tmp_path, argv, name):
    checkout = _checkout(tmp_path, script.REFERENCE_FILES)
    with pytest.raises(ValueError, match=name):
        script.parse_args(["--simclr-dir", checkout, *argv])


def test_arguments_of_a_checkout(script, tmp_path):
    checkout = _checkout(tmp_path, script.REFERENCE_FILES)
    args = script.parse_args(
        ["--simclr-dir", checkout, "--seeds", "0,2", "--budgets", "1,10"]
    )
    assert args.seed_list == [0, 2]
    assert args.budget_list == [1, 10]
    assert args.temperature_list == [1.0, 0.1]
    assert args.own_init_list == []
    args = script.parse_args(
        ["--simclr-dir", checkout, "--budgets", "none", "--own-init", "3"]
    )
    assert (args.budget_list, args.own_init_list) == ([], [3])


def test_each_step_reads_a_full_batch_of_distinct_images(script):
    import numpy as np

    images = np.zeros((300, 2))
    rows = script.step_images(images, 5, seed=0)
    # Two batches of 128 a pass: the third step starts a new shuffle.
    assert rows.shape == (5, script.BATCH)
    assert len(np.unique(rows[:2])) == 2 * script.BATCH
    assert np.array_equal(rows, script.step_images(images, 5, seed=0))
    assert not np.array_equal(rows, script.step_images(images, 5, seed=1))
