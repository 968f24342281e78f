"""Generates the notebooks in colab/ from their `.py` sources.

Sources use the "percent" cell format: a line `# %%` starts a code cell and
`# %% [markdown]` a markdown cell whose lines are comments. Notebooks are
never edited by hand: edit the source and run

    python colab/build_notebooks.py
"""

import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
SOURCES = ("simclrv2.py", "paws.py", "semppl.py", "pretrained.py")


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


def notebook(source: pathlib.Path) -> dict:
    """The notebook JSON for one source file."""
    cells = []
    for kind, body in _cells(source.read_text()):
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


def render(source: pathlib.Path) -> str:
    return json.dumps(notebook(source), indent=1) + "\n"


def main(check=False):
    stale = []
    for name in SOURCES:
        source = HERE / name
        target = source.with_suffix(".ipynb")
        text = render(source)
        if check:
            if not target.exists() or target.read_text() != text:
                stale.append(str(target))
        else:
            target.write_text(text)
    if stale:
        sys.exit(f"Out of date, run colab/build_notebooks.py: {stale}")


if __name__ == "__main__":
    main(check="--check" in sys.argv)
