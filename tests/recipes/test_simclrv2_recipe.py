import os

import keras
import numpy as np
import pytest

from keras_ssl.evaluation.embed import _FUNCTIONS
from keras_ssl.recipes import simclrv2
from keras_ssl.recipes.config import config_from_command_line

TINY = dict(
    epochs=1,
    steps_per_epoch=2,
    batch_size=16,
    labeled_batch_size=8,
    memory_size=40,
    finetune_batch_size=20,
    finetune_epochs=1,
    distill_epochs=1,
    interpolation_folds=0,
    baselines=False,
    verbose=0,
)


class Interrupt(keras.callbacks.Callback):
    """Stops training with an error after the first epoch's backup."""

    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt("simulated interruption")


def _state(result):
    model = result.models["pretrainer"]
    return [
        keras.ops.convert_to_numpy(v)
        for v in model.encoder.weights
        + model.momentum_encoder.weights
        + model.queue.weights
        + model.optimizer.variables
    ]


@pytest.mark.slow
class TestSimCLRv2Recipe:
    def test_pretrain_finetune_distill_export(self, tmp_path):
        result = simclrv2.fit(
            simclrv2.SimCLRv2Config.digits(),
            output_dir=str(tmp_path),
            **TINY,
        )
        assert set(result.stages) == {"pretrain", "finetune", "distill"}
        history = result.stages["pretrain"].history
        assert np.isfinite(history["loss"]).all()
        assert "probe_accuracy" in history
        for name in ("finetune", "distill"):
            accuracy = result.stages[name].metrics["test_accuracy"]
            assert 0.0 <= accuracy <= 1.0
        # Every trained model is exported under its own name, and the
        # report says which file holds which, with its test accuracy.
        assert set(result.exports) == {"pretrainer", "teacher", "student"}
        summary = result.summary()
        for name, path in result.exports.items():
            assert path == str(tmp_path / "export" / name)
            assert os.path.exists(os.path.join(path, "saved_model.pb"))
        for row in result.report["rows"]:
            if row["stage"] in ("finetune", "distill"):
                accuracy = result.stages[row["stage"]].metrics["test_accuracy"]
                assert row["test_accuracy"] == accuracy
                assert f"{accuracy:.1%}" in summary
                assert row["export"] in summary
        assert result.export_path == result.exports["student"]
        assert os.listdir(result.stages["pretrain"].log_dir)
        assert "finetune: test_accuracy=" in summary

    def test_resume_matches_uninterrupted_run(self, tmp_path):
        settings = dict(TINY, epochs=2, stages=("pretrain",), export=False)
        straight = simclrv2.fit(
            output_dir=str(tmp_path / "straight"), **settings
        )
        with pytest.raises(KeyboardInterrupt):
            simclrv2.fit(
                output_dir=str(tmp_path / "resumed"),
                callbacks=[Interrupt()],
                **settings,
            )
        resumed = simclrv2.fit(output_dir=str(tmp_path / "resumed"), **settings)
        for a, b in zip(_state(straight), _state(resumed)):
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-6)

    def test_finished_stage_is_loaded_not_retrained(self, tmp_path):
        settings = dict(TINY, stages=("pretrain",), export=False)
        first = simclrv2.fit(output_dir=str(tmp_path), **settings)
        again = simclrv2.fit(output_dir=str(tmp_path), **settings)
        assert again.stages["pretrain"].history == (
            first.stages["pretrain"].history
        )
        for a, b in zip(_state(first), _state(again)):
            np.testing.assert_array_equal(a, b)

    def test_command_line_reports_once_and_traces_each_model_once(
        self, tmp_path, capsys
    ):
        argv = [f"--{k}={v}" for k, v in TINY.items() if k != "verbose"]
        argv += ["--epochs=2", "--verbose=2", f"--output_dir={tmp_path}"]
        result = simclrv2.main(argv)
        out = capsys.readouterr().out
        # The report's heading and table, once.
        assert out.count("SimCLRv2 on digits") == 1
        assert out.count("group           test acc.") == 1
        lines = out.splitlines()
        for name in ("pretrain", "finetune", "distill"):
            starts = [s for s in lines if s.startswith(f"Stage '{name}': ")]
            assert starts == [
                f"Stage '{name}': {4 if name == 'pretrain' else 2} steps "
                f"({2 if name == 'pretrain' else 1} epoch"
                f"{'s' if name == 'pretrain' else ''} × 2 steps), in "
                f"{tmp_path / name}."
            ]
        # The k-NN monitor after each pretraining epoch and the report's
        # evaluations share one trace of the pretrainer's inference
        # function; so do the test images' batches of each classifier.
        predicted = {
            role: _FUNCTIONS[model].experimental_get_tracing_count()
            for role, model in result.models.items()
            if model in _FUNCTIONS
        }
        assert set(predicted) == {"pretrainer", "teacher", "student"}
        assert predicted == dict.fromkeys(predicted, 1)
        monitored = result.stages["pretrain"].history["labeled_knn_accuracy"]
        assert len(monitored) == 2
        assert all(0.0 <= value <= 1.0 for value in monitored)


@pytest.mark.parametrize("verbose", [0, 1])
def test_command_line_prints_the_report_table_once(verbose, tmp_path, capsys):
    from keras_ssl.recipes import reports
    from keras_ssl.recipes.checkpoints import StageResult
    from keras_ssl.recipes.config import main

    def fit(config):
        result = reports.RecipeResult(config=config)
        result.stages["finetune"] = StageResult(
            "finetune", metrics={"test_accuracy": 0.75}
        )
        reports.save_report(result, simclrv2.STAGES)
        return result

    argv = [f"--verbose={verbose}", f"--output_dir={tmp_path}"]
    main(simclrv2.SimCLRv2Config, fit, "simclrv2", argv)
    out = capsys.readouterr().out
    assert out.count("SimCLRv2 on digits") == 1
    assert out.count("75.0%  fine-tuned (teacher)") == 1
    assert out.count("finetune: test_accuracy=0.7500") == 1
    assert f"The report: {tmp_path / 'report.json'}" in out


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"ft_layer": 4}, "ft_layer=4"),
        ({"temperature": 0.0}, "temperature=0.0"),
        ({"stages": ("pretrain", "linear")}, "linear"),
        ({"dataset": "mnist"}, "dataset='mnist'"),
    ],
)
def test_bad_config_fails_before_training(overrides, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        simclrv2.fit(output_dir=str(tmp_path), **dict(TINY, **overrides))


def test_command_line_parses_typed_overrides():
    config = config_from_command_line(
        simclrv2.SimCLRv2Config,
        "simclrv2",
        [
            "--preset",
            "cifar10",
            "--epochs",
            "3",
            "--finetune_learning_rate",
            "0.05",
            "--export",
            "false",
            "--student_depth",
            "none",
            "--crop_scale",
            "0.2",
            "1.0",
            "--stages",
            "pretrain",
            "finetune",
        ],
    )
    assert config.dataset == "cifar10"
    assert config.epochs == 3
    assert config.finetune_learning_rate == 0.05
    assert config.export is False
    assert config.student_depth is None
    assert config.crop_scale == (0.2, 1.0)
    assert config.stages == ("pretrain", "finetune")


@pytest.mark.distributed
def test_batch_not_divisible_by_replicas_is_rejected():
    from keras_ssl.testing import run_in_subprocess

    result = run_in_subprocess(
        """
        from keras_ssl.recipes import simclrv2
        strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
        try:
            simclrv2.fit(strategy=strategy, batch_size=15, verbose=0,
                         output_dir="/tmp/never_written")
            message = None
        except ValueError as error:
            message = str(error)
        emit(message=message)
        """
    )
    assert "batch_size=15" in result["message"]
    assert "replicas (2)" in result["message"]
