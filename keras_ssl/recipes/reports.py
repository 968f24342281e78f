"""What a recipe reports: stage results, evaluations and the export."""

import os
import time
from dataclasses import dataclass
from dataclasses import field

from keras_ssl.evaluation import KNNClassifier
from keras_ssl.evaluation import embed


@dataclass
class StageResult:
    """What one stage of a recipe produced.

    Attributes:
        name: str. The stage (`"pretrain"`, `"finetune"`, ...).
        history: dict of per-epoch training metrics, all epochs.
        metrics: dict of evaluation results after the stage.
        weights_path: str. The stage's final weights.
        log_dir: str. TensorBoard logs.
        reused: bool. Whether a finished stage was loaded, not trained.
        resumed_from: int. Epochs already done when training started.
    """

    name: str
    history: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    weights_path: str = ""
    log_dir: str = ""
    reused: bool = False
    resumed_from: int = 0


@dataclass
class RecipeResult:
    """What a recipe's `fit()` returns.

    Attributes:
        config: the config that ran, overrides applied.
        stages: dict of stage name to `StageResult`, in run order.
        export_path: str or `None`. The SavedModel, when exported.
        seconds: float. Wall time of the whole run.
        models: dict of the Keras models by role.
    """

    config: object
    stages: dict = field(default_factory=dict)
    export_path: str | None = None
    seconds: float = 0.0
    models: dict = field(default_factory=dict, repr=False)
    started: float = field(default_factory=time.time, repr=False)

    def summary(self) -> str:
        lines = []
        for name, stage in self.stages.items():
            metrics = ", ".join(
                f"{k}={v:.4f}" for k, v in sorted(stage.metrics.items())
            )
            lines.append(f"{name:>9}: {metrics}")
        if "finetune" in self.stages and "baseline" in self.stages:
            tuned = self.stages["finetune"].metrics["test_accuracy"]
            scratch = self.stages["baseline"].metrics["test_accuracy"]
            lines.append(
                f"Fine-tuned: {tuned:.1%} test accuracy vs {scratch:.1%} for "
                "the same network trained from scratch on the same labels."
            )
        return "\n".join(lines)


def knn_accuracy(model, splits, num_train=10000):
    """k-NN (k = 200, τ = 0.1) test accuracy of a pretrainer's encoder
    output, with the first `num_train` training images as the memory."""
    train = embed(
        model, splits.x_train[:num_train], batch_size=256, output="embedding"
    )
    test = embed(model, splits.x_test, batch_size=256, output="embedding")
    knn = KNNClassifier(k=200, temperature=0.1, num_classes=splits.num_classes)
    knn.fit(train, splits.y_train[:num_train])
    return knn.evaluate(test, splits.y_test)


def export(result, model):
    """Exports `model` to `output_dir/saved_model`, replacing an older
    export of the same run; records the path in `result`."""
    from keras_ssl.export import export_saved_model

    path = os.path.join(result.config.output_dir, "saved_model")
    result.export_path = export_saved_model(model, path, overwrite=True)
    return result
