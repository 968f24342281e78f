"""`TableWriter`: rows written to `.csv`, `.npz` or `.parquet` as they come."""

import csv
import sys

import numpy as np

FORMATS = (".csv", ".npz", ".parquet")


def check_out(out, name="out"):
    """`out` checked before any work: a known extension, and for parquet
    an installed writer. `None` (standard output, as CSV) passes."""
    if out is None:
        return None
    if not str(out).endswith(FORMATS):
        raise ValueError(
            f"`{name}` must end in {', '.join(FORMATS)}. Received: "
            f"{name}={out!r}"
        )
    if str(out).endswith(".parquet"):
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError as error:
            raise ValueError(
                "Writing .parquet needs the `pyarrow` package (pip install "
                f"pyarrow); or write .csv or .npz. Received: {name}={out!r}"
            ) from error
    return str(out)


def _columns(names, values):
    """Flat columns: `name`, then each `(B,)` value, and each `(B, D)`
    value as `key_0 ... key_{D-1}`."""
    columns = {"name": list(names)}
    for key, value in values.items():
        value = np.asarray(value)
        if value.ndim == 1:
            columns[key] = value
        else:
            columns.update(
                {f"{key}_{j}": value[:, j] for j in range(len(value[0]))}
            )
    return columns


class TableWriter:
    """Writes one row per image, batch by batch.

    `.csv` and `.parquet` (a row group per batch) are written as the
    batches come; `.npz` keeps each value's batches and writes them at
    `close()` (the arrays are the output itself), with `name` and each
    value as one array. `out=None` writes CSV to standard output.

    Args:
        out: optional str. The output path (see `check_out`).
    """

    def __init__(self, out):
        self.out = check_out(out)
        self.rows = 0
        self._parts = {}
        self._file = None
        self._csv = None
        self._parquet = None

    def write(self, names, values):
        """Appends the rows of `names` with `values` `{key: (B,) or (B, D)}`."""
        if not len(names):
            return
        self.rows += len(names)
        if self.out is not None and self.out.endswith(".npz"):
            for key, value in {"name": np.asarray(names), **values}.items():
                self._parts.setdefault(key, []).append(np.asarray(value))
            return
        columns = _columns(names, values)
        if self.out is not None and self.out.endswith(".parquet"):
            self._write_parquet(columns)
        else:
            self._write_csv(columns)

    def _write_csv(self, columns):
        if self._csv is None:
            self._file = (
                sys.stdout
                if self.out is None
                else open(self.out, "w", newline="")
            )
            self._csv = csv.writer(self._file)
            self._csv.writerow(columns)
        cells = [
            [v.item() if hasattr(v, "item") else v for v in column]
            for column in columns.values()
        ]
        self._csv.writerows(zip(*cells))
        self._file.flush()

    def _write_parquet(self, columns):
        # Optional: pyarrow, only for .parquet files.
        import pyarrow
        import pyarrow.parquet

        table = pyarrow.table(columns)
        if self._parquet is None:
            self._parquet = pyarrow.parquet.ParquetWriter(
                self.out, table.schema
            )
        self._parquet.write_table(table)

    def close(self):
        """Finishes the file (writes an `.npz`); with no row written, a
        table of names only, empty."""
        if self.rows == 0 and self.out is not None:
            self._write_empty()
        if self._parts:
            np.savez(
                self.out,
                **{k: np.concatenate(v) for k, v in self._parts.items()},
            )
        if self._parquet is not None:
            self._parquet.close()
        if self._file is not None and self._file is not sys.stdout:
            self._file.close()

    def _write_empty(self):
        if self.out.endswith(".npz"):
            self._parts = {"name": [np.zeros((0,), str)]}
        elif self.out.endswith(".parquet"):
            # Optional, as above.
            import pyarrow

            self._write_parquet({"name": pyarrow.array([], pyarrow.string())})
        else:
            self._write_csv({"name": []})
