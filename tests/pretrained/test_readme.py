"""The README's published-model example is the code the notebook runs."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
SECTION = "## Fine-tune a published SimCLRv2 model on your data"


def readme_code():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section shows one code example"
    return blocks[0]


def test_readme_example_is_the_notebook_code():
    notebook = (ROOT / "colab" / "pretrained.py").read_text().splitlines()
    code = [line for line in readme_code().splitlines() if line.strip()]
    # Every line, in order, is a line of the notebook's source (the
    # notebook defines the data and settings around it).
    position = 0
    for line in code:
        assert line in notebook[position:], f"not in the notebook: {line!r}"
        position = notebook.index(line, position) + 1
    # The example is the whole fine-tuning cell, not a few shared lines.
    assert "keras_ssl.pretrained.load(" in readme_code()
    assert "ft_layer=1" in readme_code()
    assert "export_saved_model(" in readme_code()
