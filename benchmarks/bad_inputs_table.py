"""The table of bad inputs in docs/reliability.md, from what the code raises.

Runs every case of `tests/test_bad_inputs.py` (the same list the tests
check) and the served SavedModel's cases, and prints one markdown table
per area: the input, the exception's type and its message as raised. An
input that raises nothing is printed as accepted. With `--write FILE`,
the tables replace what stands between the markers

    <!-- bad-inputs:begin -->
    <!-- bad-inputs:end -->

in FILE (docs/reliability.md), so the document is regenerated, never
edited by hand:

    KERAS_BACKEND=tensorflow python benchmarks/bad_inputs_table.py \\
        --write docs/reliability.md

It takes about half a minute on a CPU (one tiny model is exported).
"""

import argparse
import collections
import importlib.util
import os
import pathlib
import re
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- bad-inputs:begin -->", "<!-- bad-inputs:end -->"
SERVED = "The served SavedModel (`serving_default`)"


def load_cases():
    """The module `tests/test_bad_inputs.py` (its cases and helpers)."""
    spec = importlib.util.spec_from_file_location(
        "test_bad_inputs", ROOT / "tests" / "test_bad_inputs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cell(text):
    """`text` for a table cell: one line, no raw `|`, and no `<` that
    markdown would read as a tag (outside code spans)."""
    text = re.sub(r" at 0x[0-9a-f]+", "", " ".join(str(text).split()))
    # Temporary folders differ from run to run.
    temporary = re.escape(tempfile.gettempdir()) + r"/[\w.-]+"
    text = re.sub(temporary, "/tmp/…", text)
    parts = text.replace("|", "\\|").split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;")
    return "`".join(parts)


def results(cases):
    """`{area: [(input, error type, message)]}` of the library's cases
    and the served model's, in the order of the list."""
    tables = collections.defaultdict(list)
    for case in cases.CASES:
        error, message = cases.run_case(case)
        tables[case.area].append((case.given, error, message))
    with tempfile.TemporaryDirectory() as folder:
        served = cases.export_tiny(os.path.join(folder, "model"))
        for given, images in cases.SERVED_CASES + [cases.SERVED_GRAY]:
            error, message = cases.served_error(served, images)
            tables[SERVED].append((given, error, message))
    return tables


def markdown(tables):
    """The tables, one `####` section per area."""
    count = sum(len(rows) for rows in tables.values())
    accepted = sum(e == "accepted" for r in tables.values() for _, e, _ in r)
    lines = [
        f"{count} inputs; {count - accepted} refused, {accepted} accepted.",
        "",
    ]
    for area, rows in tables.items():
        lines += [f"#### {area}", "", "| input | result |", "| --- | --- |"]
        for given, error, message in rows:
            result = "accepted" if error == "accepted" else f"`{error}`"
            if message:
                result += f": {_cell(message)}"
            lines.append(f"| {_cell(given)} | {result} |")
        lines.append("")
    return "\n".join(lines)


def write(path, table):
    """Replaces the text between the markers in `path` with `table`."""
    text = pathlib.Path(path).read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(
            f"`path` must hold the markers {BEGIN} and {END} once each. "
            f"Received: path={path!r}"
        )
    head, rest = text.split(BEGIN)
    tail = rest.split(END)[1]
    pathlib.Path(path).write_text(f"{head}{BEGIN}\n\n{table}\n{END}{tail}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--write",
        metavar="FILE",
        help="replace the table between the markers in FILE",
    )
    args = parser.parse_args()
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    table = markdown(results(load_cases()))
    if args.write:
        write(args.write, table)
    print(table)


if __name__ == "__main__":
    main()
