"""What a recipe reports: stage results, evaluations and the export."""

import os
import time
from dataclasses import dataclass
from dataclasses import field

import numpy as np

from keras_ssl.evaluation import KNNClassifier
from keras_ssl.evaluation import embed
from keras_ssl.export import export_saved_model
from keras_ssl.models.fine_tuner import logistic_regression
from keras_ssl.recipes import checkpoints
from keras_ssl.recipes.config import data_description
from keras_ssl.recipes.precision import describe as describe_precision


@dataclass
class RecipeResult:
    """What a recipe's `fit()` returns.

    Attributes:
        config: the config that ran, overrides applied.
        stages: dict of stage name to `StageResult`, in run order.
        report: dict. The report (`report.json`): every model, the
            representation and the baselines on the same test images.
        baselines: dict of the pixel baselines' test accuracies.
        exports: dict of export name (`"teacher"`, ...) to SavedModel path.
        export_path: str or `None`. The last model exported: the end of
            the pipeline (SimCLRv2's student, the others' fine-tuned
            classifier), whatever its accuracy.
        data: dict. The data's sizes and identity.
        precision: dict. The precision the run computed in and why
            (`recipes.precision.PrecisionChoice.as_dict()`): `requested`,
            `precision`, `policy`, `device`, `reason`, `native`.
        seconds: float. Wall time of the whole run.
        models: dict of the Keras models by role.
    """

    config: object
    stages: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    baselines: dict = field(default_factory=dict)
    exports: dict = field(default_factory=dict)
    export_path: str | None = None
    data: dict = field(default_factory=dict)
    precision: dict = field(default_factory=dict)
    seconds: float = 0.0
    models: dict = field(default_factory=dict, repr=False)
    started: float = field(default_factory=time.time, repr=False)

    def summary(self, table=True) -> str:
        """Each stage's metrics, then (with `table`) the report's table."""
        lines = []
        for name, stage in self.stages.items():
            metrics = ", ".join(
                f"{k}={v:.4f}" for k, v in sorted(stage.metrics.items())
            )
            lines.append(f"{name:>9}: {metrics}")
        if table and self.report:
            lines += ["", report_table(self.report)]
        return "\n".join(lines)


# A stage metric's place in the report: (group, what it measures).
ROWS = {
    "knn_accuracy": ("representation", "k-NN on the encoder's features"),
    "linear_probe_accuracy": (
        "representation",
        "linear probe on the encoder's features",
    ),
    "paws_nn_accuracy": ("model", "PAWS-NN (projections' soft neighbours)"),
    "semppl_nn_accuracy": ("model", "SemPPL's pseudo-label rule (k-NN)"),
}
BASELINES = {
    "logistic_regression_pixels": "logistic regression on pixels",
    "knn_pixels": "1-NN on pixels",
}


def linear_accuracy(train, labels, test, test_labels, num_classes):
    """Test accuracy of a logistic regression fitted to `train` features
    (`keras_ssl.models.fine_tuner.logistic_regression`)."""
    kernel, bias, _ = logistic_regression(train, labels, num_classes)
    predicted = np.argmax(np.asarray(test, "float64") @ kernel + bias, -1)
    return float(np.mean(predicted == test_labels))


def evaluation_batch(labeled):
    """The batch of the representation's evaluations (the report's and
    the k-NN monitor's): 256 images, or all the labeled images where they
    are fewer, so that no batch of theirs is padded; one size for all, so
    that the pretrainer is traced once for them."""
    return max(1, min(256, len(labeled.y)))


def probe_accuracies(model, labeled, splits, output="embedding"):
    """k-NN (k = 200, τ = 0.1) and linear-probe test accuracy of a
    model's features, with the labeled images as the only labels.

    Args:
        model: a pretrainer (or any model `embed` reads `output` from).
        labeled: `keras_ssl.data.LabeledSubset` with its images.
        splits: `datasets.ArraySplits`; its test images are measured.
        output: str. The entry of the model's outputs. Defaults to
            `"embedding"` (the encoder's features).

    Returns:
        A dict with `knn_accuracy` and `linear_probe_accuracy`.
    """
    batch = evaluation_batch(labeled)
    train = embed(model, labeled.x, batch_size=batch, output=output)
    test = embed(model, splits.x_test, batch_size=batch, output=output)
    knn = KNNClassifier(k=200, temperature=0.1, num_classes=splits.num_classes)
    knn.fit(train, labeled.y)
    return {
        "knn_accuracy": float(knn.evaluate(test, splits.y_test)),
        "linear_probe_accuracy": linear_accuracy(
            train, labeled.y, test, splits.y_test, splits.num_classes
        ),
    }


def pixel_baselines(labeled, splits):
    """What a practitioner tries first, on the labeled images' pixels
    (at the recipe's image size, scaled to [0, 1]): logistic regression
    and the nearest neighbour, measured on the same test images."""
    # scikit-learn: only for the pixel baselines.
    from sklearn.neighbors import KNeighborsClassifier

    train = labeled.x.reshape(len(labeled.x), -1) / 255.0
    test = splits.x_test.reshape(len(splits.x_test), -1) / 255.0
    nearest = KNeighborsClassifier(n_neighbors=1).fit(train, labeled.y)
    return {
        "logistic_regression_pixels": linear_accuracy(
            train, labeled.y, test, splits.y_test, splits.num_classes
        ),
        "knn_pixels": float(nearest.score(test, splits.y_test)),
    }


def knn_accuracy(model, splits, num_train=10000):
    """k-NN (k = 200, τ = 0.1) test accuracy of a pretrainer's encoder
    output, with the first `num_train` training images (and all their
    labels) as the memory: the usual self-supervised monitor, not a
    few-label result (the report's k-NN uses the labeled images only)."""
    train = embed(
        model, splits.x_train[:num_train], batch_size=256, output="embedding"
    )
    test = embed(model, splits.x_test, batch_size=256, output="embedding")
    knn = KNNClassifier(k=200, temperature=0.1, num_classes=splits.num_classes)
    knn.fit(train, splits.y_train[:num_train])
    return knn.evaluate(test, splits.y_test)


def export(result, model, name):
    """Exports `model` to `output_dir/export/<name>`, replacing an older
    export of the same run; records the path in `result.exports` (and as
    `result.export_path`)."""
    path = os.path.join(result.config.output_dir, "export", name)
    result.export_path = export_saved_model(model, path, overwrite=True)
    result.exports[name] = path
    return result


def build_report(result, stages):
    """The report of a finished run, as a JSON-ready dict: one row per
    measurement, each with its group (`representation`, `model`,
    `baseline`), what it is, its stage, test accuracy and export."""
    rows = []
    for stage in stages:
        if stage.name not in result.stages:
            continue
        export = result.exports.get(stage.exports)
        for key, value in result.stages[stage.name].metrics.items():
            if key == "test_accuracy":
                group = "model" if stage.exports else "baseline"
                what = stage.title or stage.name
            elif key in ROWS:
                group, what = ROWS[key]
            else:
                continue
            rows.append(_row(group, what, stage.name, value, export))
    for key, value in result.baselines.items():
        rows.append(_row("baseline", BASELINES[key], None, value, None))
    config = result.config
    return {
        "recipe": type(config).__name__[: -len("Config")],
        "data": data_description(config),
        "labeled_images": result.data.get("labeled"),
        "training_images": result.data.get("train"),
        "test_images": result.data.get("test"),
        "minutes": round(result.seconds / 60, 2),
        "precision": dict(result.precision),
        "rows": rows,
    }


def _row(group, what, stage, accuracy, export):
    return {
        "group": group,
        "what": what,
        "stage": stage,
        "test_accuracy": float(accuracy),
        "export": export,
    }


def report_table(report):
    """The report as text: a header, then one line per row."""
    lines = [
        f"{report['recipe']} on {report['data']}: "
        f"{report['labeled_images']} labeled of {report['training_images']} "
        f"training images, {report['test_images']} test images, "
        f"{report['minutes']:.1f} min.",
    ]
    if report.get("precision"):
        lines.append(describe_precision(report["precision"]))
    lines.append(f"{'group':<15} {'test acc.':>9}  {'model':<40} exported to")
    for row in report["rows"]:
        lines.append(
            f"{row['group']:<15} {row['test_accuracy']:>9.1%}  "
            f"{row['what']:<40} {row['export'] or '-'}"
        )
    return "\n".join(lines)


def save_report(result, stages):
    """Builds the report into `result.report`, prints its table and
    writes `output_dir/report.json` and, with matplotlib, `report.png`."""
    result.report = build_report(result, stages)
    folder = result.config.output_dir
    os.makedirs(folder, exist_ok=True)
    checkpoints.write_json(os.path.join(folder, "report.json"), result.report)
    if result.config.verbose:
        print(report_table(result.report))
    png = os.path.join(folder, "report.png")
    try:
        plot_report(result.report, png)
        # TensorBoard: loaded with the run.
        from keras_ssl.evaluation.tensorboard_images import write_png

        # Beside the stages' logs: `tensorboard --logdir output_dir`.
        write_png(os.path.join(folder, "logs"), "report", png)
    except ImportError:
        print(
            "report.png is not written: matplotlib is not installed "
            "(pip install matplotlib); report.json has the same numbers."
        )
    return result.report


_COLOURS = {
    "representation": "tab:blue",
    "model": "tab:green",
    "baseline": "tab:gray",
}


def plot_report(report, path):
    """A bar chart of the report's test accuracies, written to `path`
    (PNG); needs matplotlib, imported here."""
    # Optional: matplotlib, only for report.png.
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    rows = report["rows"]
    figure, axes = pyplot.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    names = [f"{r['what']} ({r['group']})" for r in rows]
    values = [100 * r["test_accuracy"] for r in rows]
    axes.barh(names, values, color=[_COLOURS[r["group"]] for r in rows])
    for y, value in enumerate(values):
        axes.text(value + 0.5, y, f"{value:.1f}%", va="center")
    axes.invert_yaxis()
    axes.set_xlim(0, 110)
    axes.set_xlabel("test accuracy (%)")
    axes.set_title(
        f"{report['recipe']} on {report['data']}, "
        f"{report['labeled_images']} labels"
    )
    figure.tight_layout()
    checkpoints.atomic_write(
        path, lambda temporary: figure.savefig(temporary, format="png")
    )
    pyplot.close(figure)
