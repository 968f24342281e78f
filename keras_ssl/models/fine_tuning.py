"""LP-FT and WiSE-FT for a `FineTuner`, on arrays of labeled images.

Plain functions that any training loop can call around
`FineTuner.fit()`: `linear_head_first` before it (LP-FT, Kumar et al.,
2022), `interpolate_with_start` after it (WiSE-FT, Wortsman et al.,
2022), with the share of the fine-tuned weights chosen by
`cross_validated_share` where the labels allow it. The recipes call
them from their fine-tuning stage; nothing here needs a recipe.

Example:

```python
model = keras_ssl.models.FineTuner(
    encoder, num_classes=10, frozen_batch_norm=True
)
start = keras_ssl.models.fine_tuning.linear_head_first(model, x, y)
model.compile(optimizer="sgd")
model.fit(x, y, epochs=10)
keras_ssl.models.fine_tuning.interpolate_with_start(model, start, 0.5)
```
"""

from contextlib import nullcontext

import keras
import numpy as np

from keras_ssl import data as ssl_data
from keras_ssl.evaluation.embed import predict_batches

# The shares of the fine-tuned weights that cross-validation compares.
SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)


def linear_head_first(model, x, y, folds=0):
    """LP-FT's first step: the classifier becomes the logistic regression
    fitted to the frozen features of `x`, so fine-tuning (with the
    BatchNorm statistics kept, `FineTuner(frozen_batch_norm=True)`)
    starts at the linear probe's accuracy instead of from zero.

    Args:
        model: `keras_ssl.models.FineTuner`.
        x: uint8 images (NHWC) of the labeled subset.
        y: their int labels.
        folds: int. The folds `cross_validated_share` will split `x`
            into (0: none); each needs at least 2 images.

    Returns:
        The model's weights after the linear probe: the start that
        `interpolate_with_start` averages with.
    """
    if 0 < len(y) < 2 * folds:
        raise ValueError(
            f"`folds` needs at least 2 labeled images per fold: {len(y)} "
            f"labeled images. Received: folds={folds}"
        )
    model.fit_linear_head(x, y)
    return model.get_weights()


def assign_interpolated(model, start, end, share):
    """Sets every float weight to `(1 - share)·start + share·end`; the
    others (seed states, counters) to `end`."""
    for variable, first, last in zip(model.weights, start, end):
        if not keras.backend.is_float_dtype(variable.dtype) or share == 1:
            variable.assign(last)
        elif share == 0:
            variable.assign(first)
        else:
            variable.assign((1.0 - share) * first + share * last)


def interpolate_with_start(model, start, share):
    """WiSE-FT: every float weight of the fine-tuned `model` becomes
    `(1 - share)·start + share·fine-tuned`, `start` being LP-FT's (see
    `linear_head_first`; BatchNorm's statistics are the same in both).
    With few labels fine-tuning alone can end below the probe it started
    from; `share=1` keeps the fine-tuned weights."""
    if share < 1:
        assign_interpolated(model, start, model.get_weights(), share)


def fold_ids(y, folds, seed):
    """Each image's fold in `range(folds)`, drawn per class with `seed`
    so that every fold holds each class's images in turn."""
    y = np.asarray(y)
    fold = np.empty(len(y), "int64")
    rng = np.random.default_rng(seed)
    for label in np.unique(y):
        where = np.flatnonzero(y == label)
        fold[rng.permutation(where)] = np.arange(len(where)) % folds
    return fold


def cross_validated_share(
    model, x, y, pretrained, *, folds, optimizer, steps, batch_size, seed
):
    """The WiSE-FT share that K-fold cross-validation on the labeled
    images chooses (`choose_share`), and each share's accuracy.

    For each fold, the model goes back to `pretrained`, its head is
    fitted to the other folds' images (LP) and it is fine-tuned on them
    for `steps · (folds - 1) / folds` steps with a fresh optimizer (one
    compiled optimizer reset to its initial state, so the step is traced
    once for all folds); every share in `SHARES` is then scored on the
    fold left out. The model's weights and optimizer are put back
    afterwards.

    Args:
        model: a compiled `keras_ssl.models.FineTuner`.
        x: uint8 images (NHWC) of the labeled subset.
        y: their int labels.
        pretrained: the weights fine-tuning started from (LP-FT's
            start; each fold fits the head again to its own images).
        folds: int >= 2. The folds, drawn per class (`fold_ids`).
        optimizer: `(steps) -> keras.optimizers.Optimizer`, the
            fine-tuning's optimizer for a budget of `steps`.
        steps: int. Fine-tuning's steps on all of `x`.
        batch_size: int. Fine-tuning's batch.
        seed: int. Seeds the folds (and fold `k`'s batches, `seed+1+k`).

    Returns:
        `(share, scores)`: the chosen share and a dict of share to
        accuracy over every image, each scored once.
    """
    y = np.asarray(y)
    fold = fold_ids(y, folds, seed)
    # One batch shape for every held-out fold: `predict_batches` traces
    # once.
    held_batch = int(max(np.sum(fold == k) for k in range(folds)))
    trained, compiled = model.get_weights(), model.optimizer
    # One optimizer, compiled once, for every fold: each fold starts it
    # from its fresh state instead of compiling again, so Keras traces
    # the training step once, not once per fold. Every fold gets the
    # same budget, the steps' share of the expected training folds
    # (equal to each fold's own share when the folds are equal).
    fold_steps = max(1, round(steps * (folds - 1) / folds))
    model.compile(optimizer=optimizer(fold_steps))
    fresh = _fresh_optimizer_state(model)
    correct = {share: 0 for share in SHARES}
    for k in range(folds):
        train, held = fold != k, fold == k
        if not held.any():
            continue
        model.set_weights(pretrained)
        model.fit_linear_head(x[train], y[train])
        start = model.get_weights()
        for variable, value in zip(model.optimizer.variables, fresh):
            variable.assign(value)
        stream = ssl_data.from_arrays(
            x[train],
            y[train],
            batch_size=min(batch_size, int(train.sum())),
            seed=seed + 1 + k,
            repeat=True,
        )
        model.fit(
            stream,
            epochs=1,
            steps_per_epoch=fold_steps,
            verbose=0,
            shuffle=False,
        )
        end = model.get_weights()
        for share in SHARES:
            assign_interpolated(model, start, end, share)
            logits = predict_batches(model, x[held], held_batch)
            correct[share] += int(np.sum(np.argmax(logits, -1) == y[held]))
    model.set_weights(trained)
    model.compile(optimizer=compiled)
    scores = {share: correct[share] / len(y) for share in SHARES}
    return choose_share(scores, len(y)), scores


def _fresh_optimizer_state(model):
    """Builds the compiled optimizer for the model's trainable variables
    (under its distribution strategy on TensorFlow, as `fit` would) and
    returns the values of its variables before any step."""
    strategy = getattr(model, "distribute_strategy", None)
    scope = strategy.scope() if strategy is not None else nullcontext()
    with scope:
        model.optimizer.build(model.trainable_variables)
    return [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]


def choose_share(scores, count):
    """The one-standard-error rule (Hastie et al., The Elements of
    Statistical Learning, §7.10): the smallest share (the nearest the
    linear probe) whose cross-validated accuracy is within one standard
    error, √(p(1-p)/count), of the best one's `p`.

    Args:
        scores: dict of share to cross-validated accuracy.
        count: int. The images scored (every labeled image, once).
    """
    best = max(scores.values())
    error = np.sqrt(best * (1.0 - best) / max(1, count))
    return min(s for s, v in scores.items() if v >= best - error - 1e-12)
