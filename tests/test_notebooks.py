"""The Colab notebooks are generated from their sources and they run."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_notebooks_are_up_to_date():
    result = subprocess.run(
        [sys.executable, str(ROOT / "colab" / "build_notebooks.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", ["simclrv2", "paws", "semppl", "pretrained"])
def test_notebook_executes(name, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("KERAS_SSL_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    notebook = nbformat.read(ROOT / "colab" / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
    assert os.path.exists(tmp_path / "runs" / f"notebook_{name}")


def _builder():
    spec = importlib.util.spec_from_file_location(
        "build_notebooks", ROOT / "colab" / "build_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _setup_cfg(tmp_path, metadata):
    path = tmp_path / "setup.cfg"
    path.write_text("[metadata]\nname = keras-ssl\n" + metadata)
    return path


@pytest.mark.parametrize(
    "metadata",
    [
        "url = https://github.com/someone/keras-ssl\n",
        "project_urls =\n    Source = https://github.com/someone/keras-ssl\n",
    ],
)
def test_first_cell_installs_from_the_repository_on_colab_only(
    metadata, tmp_path, monkeypatch
):
    builder = _builder()
    url = builder.repository_url(_setup_cfg(tmp_path, metadata))
    assert url == "https://github.com/someone/keras-ssl"
    notebook = builder.notebook(ROOT / "colab" / "paws.py", url)
    badge = "".join(notebook["cells"][0]["source"])
    assert (
        "(https://colab.research.google.com/github/someone/keras-ssl/blob/"
        "main/colab/paws.ipynb)" in badge
    )
    first = next(c for c in notebook["cells"] if c["cell_type"] == "code")
    code = "".join(first["source"])
    calls = []
    monkeypatch.setattr(subprocess, "check_call", calls.append)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(code, {})
    assert calls == []
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("colab"))
    exec(code, {})
    assert calls == [
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "keras-ssl @ git+https://github.com/someone/keras-ssl",
        ]
    ]


def test_without_a_repository_the_install_cell_asks_for_its_source(
    tmp_path, monkeypatch
):
    builder = _builder()
    assert builder.repository_url(_setup_cfg(tmp_path, "")) is None
    notebook = builder.notebook(ROOT / "colab" / "paws.py", None)
    assert "colab-badge" not in json.dumps(notebook)
    first = notebook["cells"][0]
    assert first["cell_type"] == "code"
    code = "".join(first["source"])
    assert 'SOURCE = ""  # @param {type:"string"}' in code
    calls = []
    monkeypatch.setattr(subprocess, "check_call", calls.append)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(code, {})  # Elsewhere: nothing.
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("colab"))
    with pytest.raises(ValueError, match="Set SOURCE"):
        exec(code, {})
    # The user fills the field (Colab rewrites the line), e.g. with a wheel.
    wheel = "https://example.org/keras_ssl-0.1.0-py3-none-any.whl"
    exec(code.replace('SOURCE = ""', f"SOURCE = {wheel!r}"), {})
    assert calls == [
        [sys.executable, "-m", "pip", "install", "-q", f"keras-ssl @ {wheel}"]
    ]
    # Another host than GitHub: its repository in the field, no badge.
    notebook = builder.notebook(
        ROOT / "colab" / "paws.py", "https://gitlab.com/someone/keras-ssl"
    )
    assert notebook["cells"][0]["cell_type"] == "code"
    assert '"git+https://gitlab.com/someone/keras-ssl"' in "".join(
        notebook["cells"][0]["source"]
    )
