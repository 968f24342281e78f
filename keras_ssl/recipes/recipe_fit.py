"""A recipe's `fit()`: its config, the user's images, the run lock and
the stale-stage check around `runner.run`."""

import dataclasses
import os
import warnings

from keras_ssl.recipes import runner
from keras_ssl.recipes.stage_plan import refuse_stale


def recipe_fit(config_cls, recipe_stages, pipeline):
    """A recipe's `fit()`: `runner.run` on the config's data set, or on the
    user's images when `x` is given (the config's `dataset` becomes
    `"arrays"`; see `datasets.from_user`).

    Args:
        config_cls: the recipe's config class; `fit()` without a config
            runs its `digits()` preset.
        recipe_stages: the recipe's `Stage`s.
        pipeline: str. The stages in words, for the docstring.
    """
    name = config_cls.__name__[: -len("Config")]
    exports = [s.exports for s in recipe_stages if s.exports]

    def fit(
        config=None,
        *,
        x=None,
        y=None,
        x_test=None,
        y_test=None,
        unlabeled=None,
        labeled_indices=None,
        strategy=None,
        callbacks=(),
        **overrides,
    ):
        # Keras (through keras_ssl.data): loaded when fit() runs.
        from keras_ssl.recipes import checkpoints
        from keras_ssl.recipes import datasets

        config = dataclasses.replace(config or config_cls.digits(), **overrides)
        data = dict(y=y, x_test=x_test, y_test=y_test, unlabeled=unlabeled)
        data["labeled_indices"] = labeled_indices
        user = None
        if x is not None:
            config = dataclasses.replace(config, dataset="arrays")
            user = datasets.from_user(x, image_size=config.image_size, **data)
        elif any(v is not None for v in data.values()):
            given = sorted(k for k, v in data.items() if v is not None)
            raise ValueError(
                f"{given} need the training images `x`. Received: x=None"
            )
        check_data_dir(config, user)
        lock = checkpoints.RunLock(config.output_dir, checkpoints.lock_name())
        with lock:
            refuse_stale(config, recipe_stages)
            return runner.run(
                config,
                recipe_stages,
                strategy=strategy,
                callbacks=callbacks,
                data=user,
            )

    fit.__doc__ = _FIT_DOC.format(
        name=name,
        pipeline=pipeline,
        module=config_cls.__module__,
        exports=", ".join(exports),
    )
    return fit


_FIT_DOC = """Runs {name}: {pipeline}, then the report.

On the config's data set, or on your own images:

```python
result = {module}.fit(
    {module}.{name}Config.digits(image_size=32),
    x=x_labeled, y=y_labeled, unlabeled=x_unlabeled,
    x_test=x_test, y_test=y_test,
)
```

Images of any size and channel count are converted by
`keras_ssl.data.prepare_images` to the config's `image_size`.

Args:
    config: `{name}Config`. Defaults to `{name}Config.digits()`.
    x: optional training images, or a folder of class sub-folders. All
        are labeled unless `labeled_indices` is given; with `x` the
        config's data set and labeled subset are not used.
    y: int labels of `x` (a folder's class ids by default).
    x_test: test images (or a folder); needed with `x`.
    y_test: their labels.
    unlabeled: optional images without labels, pretrained on with `x`.
    labeled_indices: optional positions in `x` whose labels are used;
        the other images of `x` count as unlabeled.
    strategy: optional `tf.distribute.Strategy`; global BatchNorm is
        used when it has more than one replica.
    callbacks: extra `keras.callbacks.Callback`s for every stage.
    **overrides: fields of `config` to replace.

Returns:
    A `RecipeResult`: its `models` by role, its `report` (also
    `output_dir/report.json` and `report.png`) comparing every model
    with the baselines on the same test images, and with `export` the
    SavedModels `output_dir/export/<name>` for {exports}.

Raises:
    ValueError: before any data is read or model built, when another run
        holds `output_dir` (`checkpoints.RunLockedError`, naming it), when
        a stage there was made with other settings (`StaleStageError`)
        or when `data_dir` does not exist.
"""


def check_data_dir(config, data=None):
    """Refuses a local `data_dir` that is not a folder (remote ones, such
    as `gs://...`, are left to the data set's reader), and warns when the
    run reads none (the digits, or the user's images)."""
    path = config.data_dir
    if path is None:
        return
    if "://" not in path and not os.path.isdir(path):
        what = "is a file" if os.path.exists(path) else "does not exist"
        raise ValueError(
            f"`data_dir` is not a folder: {path} {what}. "
            f"Received: data_dir={path!r}"
        )
    if data is not None or config.dataset in ("digits", "arrays"):
        source = "the given arrays" if data is not None else config.dataset
        warnings.warn(
            f"`data_dir` is not read: the run trains on {source}. "
            f"Received: data_dir={config.data_dir!r}, "
            f"dataset={config.dataset!r}",
            UserWarning,
            stacklevel=3,
        )
