"""Generates the notebooks in colab/ from their `.py` sources.

Sources use the "percent" cell format: a line `# %%` starts a code cell and
`# %% [markdown]` a markdown cell whose lines are comments. Notebooks are
never edited by hand: edit the source and run

    python colab/build_notebooks.py

Every notebook starts with an "Open in Colab" badge and a code cell that,
on Colab only, installs keras-ssl from its repository: the `url` of
`setup.cfg`'s `[metadata]` (or its `project_urls` entry `Source`), read
here so that the address is written down once. Without one, the notebooks
have no badge, and the install cell's SOURCE field is left for the user to
fill (on Colab the cell says so; the build says so too).
"""

import configparser
import json
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
SETUP_CFG = HERE.parent / "setup.cfg"
SOURCES = ("simclrv2.py", "paws.py", "semppl.py", "pretrained.py")
GITHUB = re.compile(r"https?://github\.com/([^/\s]+)/([^/\s]+?)(?:\.git)?/?$")
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
# Colab brings TensorFlow (with its GPU support): the core package only.
# SOURCE is a Colab form field: where pip gets keras-ssl from.
INSTALL = """import subprocess
import sys

# On Colab, install keras-ssl from SOURCE; elsewhere nothing. SOURCE is
# what pip takes after "keras-ssl @": the repository this notebook came
# from ("git+https://github.com/OWNER/keras-ssl") or a wheel's URL.
SOURCE = {source}  # @param {{type:"string"}}
if "google.colab" in sys.modules:
    if not SOURCE.strip():
        raise ValueError(
            "Set SOURCE to where keras-ssl comes from: the repository this "
            "notebook came from (git+https://...) or a wheel's URL. "
            f"Received: SOURCE={{SOURCE!r}}"
        )
    subprocess.check_call(
        [sys.executable, "-m", "pip", "install", "-q",
         f"keras-ssl @ {{SOURCE.strip()}}"]
    )"""


def repository_url(setup_cfg=SETUP_CFG):
    """The repository address in `setup.cfg`'s `[metadata]`, or `None`."""
    parser = configparser.ConfigParser()
    parser.read(setup_cfg)
    if not parser.has_section("metadata"):
        return None
    metadata = parser["metadata"]
    url = metadata.get("url", "").strip()
    for line in metadata.get("project_urls", "").splitlines():
        key, _, value = line.partition("=")
        if not url and key.strip().lower() == "source":
            url = value.strip()
    return url or None


def colab_link(url, name):
    """The Colab address of `colab/<name>.ipynb` on the main branch of a
    GitHub repository `url`, or `None` for another host."""
    match = GITHUB.match(url)
    if match is None:
        return None
    owner, repo = match.groups()
    return (
        f"https://colab.research.google.com/github/{owner}/{repo}/blob/main/"
        f"colab/{name}.ipynb"
    )


def _header_cells(url, name):
    """The badge (for a GitHub `url`) and the install cell of a notebook,
    its SOURCE the repository at `url`, or empty for the user to fill."""
    cells = []
    link = colab_link(url, name) if url else None
    if link is not None:
        cells.append(("markdown", f"[![Open in Colab]({BADGE})]({link})"))
    source = f"git+{url}" if url else ""
    cells.append(("code", INSTALL.format(source=json.dumps(source))))
    return cells


def _cells(text):
    cells, kind, lines = [], None, []

    def flush():
        body = "\n".join(lines).strip("\n")
        if kind is not None and body:
            cells.append((kind, body))

    for line in text.splitlines():
        if line.startswith("# %%"):
            flush()
            kind = "markdown" if "[markdown]" in line else "code"
            lines = []
        elif kind == "markdown":
            text = line[2:] if line.startswith("# ") else line.lstrip("#")
            lines.append(text)
        elif kind is not None:
            lines.append(line)
    flush()
    return cells


def notebook(source: pathlib.Path, url=None) -> dict:
    """The notebook JSON for one source file, installing from `url`."""
    cells = []
    header = _header_cells(url, source.stem)
    for kind, body in header + _cells(source.read_text()):
        cell = {
            "cell_type": kind,
            "metadata": {},
            "source": body.splitlines(keepends=True),
        }
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        cells.append(cell)
    return {
        "cells": cells,
        "metadata": {
            "accelerator": "GPU",
            "colab": {"provenance": []},
            "kernelspec": {"display_name": "Python 3", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def render(source: pathlib.Path, url=None) -> str:
    return json.dumps(notebook(source, url), indent=1) + "\n"


def main(check=False):
    url = repository_url()
    if url is None:
        print(
            f"{SETUP_CFG} declares no repository (`url` in [metadata]): "
            "the notebooks get no Colab badge, and their install cell asks "
            "for its source.",
            file=sys.stderr,
        )
    stale = []
    for name in SOURCES:
        source = HERE / name
        target = source.with_suffix(".ipynb")
        text = render(source, url)
        if check:
            if not target.exists() or target.read_text() != text:
                stale.append(str(target))
        else:
            target.write_text(text)
    if stale:
        sys.exit(f"Out of date, run colab/build_notebooks.py: {stale}")


if __name__ == "__main__":
    main(check="--check" in sys.argv)
