"""Which stages a run builds, trains and loads, and why a stage is
refused: the checks that `recipe_fit` and the runner make against
`output_dir` before anything trains."""

import dataclasses
import os
import shutil

from keras_ssl.recipes.config import RUN_FIELDS


def needed_stages(stages, config):
    """The stages to build, in order, and the names of those among them
    that do not run but whose trained models a running stage starts from
    (they are loaded from `output_dir`). The first stage is always built
    (so `stages=()` gives its network)."""
    needed = {stages[0].name} if stages else set()
    starts = set()
    for stage in reversed(stages):
        if stage.runs(config) or stage.name in starts:
            needed.add(stage.name)
            if stage.start:
                needed.add(stage.start)
                starts.add(stage.start)
    loaded = {s.name for s in stages if s.name in starts and not s.runs(config)}
    return [s for s in stages if s.name in needed], loaded


def check_loadable(loaded, config, stages=()):
    """Raises before any training when a stage that a chosen one starts
    from is neither chosen nor finished in `output_dir`, or its files
    there cannot be read. `stages` say why it does not train."""
    from keras_ssl.recipes import checkpoints  # Keras: loaded when run.

    stages = {stage.name: stage for stage in stages}
    for name in sorted(loaded):
        stage_dir = os.path.join(config.output_dir, name)
        why, remedy = "is not in `stages`", f"add '{name}' to `stages`"
        if name in stages:
            why, remedy = _why_idle(stages[name], config)
        if not checkpoints.is_finished(stage_dir):
            raise ValueError(
                f"A chosen stage starts from stage '{name}', which {why}; "
                f"nor has it finished in {stage_dir}. Received: "
                f"stages={config.stages}. To train it, {remedy}, or set "
                "`output_dir` to the run where it finished."
            )
        for path, problem in checkpoints.damage(stage_dir):
            raise ValueError(
                f"A chosen stage starts from stage '{name}', which {why}, "
                f"so it is loaded from {stage_dir}; but {path} cannot be "
                f"read ({problem}). To train it again, {remedy} (the "
                "damaged file is then set aside)."
            )


def refuse_stale(config, stages):
    """Raises before any data is read or model built when a stage of the
    run could not be trained or reused in `output_dir`: one it starts from
    that is not there (`check_loadable`), or one made with other values
    of the config fields it recorded (a `StaleStageError`, as
    `checkpoints.prepare` raises later for the data and the rest of the
    fingerprint). With `overwrite` a chosen stage is retrained instead. A
    field set to `"auto"` is resolved when the run starts, and checked
    then."""
    from keras_ssl.recipes import checkpoints  # Keras: loaded when run.

    needed, loaded = needed_stages(stages, config)
    check_loadable(loaded, config, stages)
    fields = {}
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if item.name not in RUN_FIELDS and value != "auto":
            fields[item.name] = value
    for stage in needed:
        reuse_only = stage.name in loaded
        if not reuse_only and (config.overwrite or not stage.runs(config)):
            continue
        stage_dir = os.path.join(config.output_dir, stage.name)
        differences = checkpoints.stale_fields(stage_dir, fields)
        if differences:
            raise checkpoints.StaleStageError(
                checkpoints.stale_message(
                    stage_dir,
                    differences,
                    stale_advice(stage, config, reuse_only),
                )
            )


def _why_idle(stage, config):
    """Why a stage does not train in this run, and what would train it,
    in words."""
    name = stage.name
    if stage.when is None and name not in config.stages:
        return (
            f"is not in `stages` (received: stages={config.stages})",
            f"add '{name}' to `stages`",
        )
    field = stage.epochs
    if stage.steps and getattr(config, stage.steps) is not None:
        field = stage.steps
    if stage.budget(config) <= 0:
        return (
            f"is in `stages` but does not train: its budget is 0 "
            f"(received: {field}={getattr(config, field)})",
            f"give '{name}' a budget (`{field}` > 0)",
        )
    return "does not run with these settings", f"run '{name}'"


def stale_advice(stage, config, reuse_only):
    """The way out of a stale stage; `None` for the default one."""
    if not reuse_only:
        return None
    why, remedy = _why_idle(stage, config)
    return (
        f"Stage '{stage.name}' {why}, so it is loaded, never retrained: "
        f"{remedy} to retrain it."
    )


def deleting(config):
    """`checkpoints.prepare`'s `on_delete` for `overwrite`: says what goes
    before it goes; the run's report and exports go too (they described
    the stage deleted)."""

    def on_delete(stage_dir, differences):
        outputs = [
            os.path.join(config.output_dir, name)
            for name in ("report.json", "report.png", "export")
            if os.path.exists(os.path.join(config.output_dir, name))
        ]
        also = f", and the last run's {', '.join(outputs)}" if outputs else ""
        print(
            f"overwrite=True: deleting {stage_dir} (made with other "
            f"settings or data: {'; '.join(differences)}){also}."
        )
        for path in outputs:
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)

    return on_delete
