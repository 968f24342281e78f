"""Fine-tuning settings scored on a validation split, never the test set.

Loads a finished pretraining of a digits run and fine-tunes it (LP-FT)
with each setting given, scoring each on the training images outside the
labeled subset (their labels are used for scoring only):

    python recipes/validate_finetuning.py simclrv2 runs/simclrv2_digits \
        0.05,1,0.3 0.01,0,0.8

Each setting is `rate,ft_layer,min_crop_area` (rate scaled by √B, as the
recipes do). docs/benchmarks.md has what it printed.
"""

import sys

import numpy as np

from keras_ssl import data as ssl_data
from keras_ssl.recipes import paws
from keras_ssl.recipes import reports
from keras_ssl.recipes import semppl
from keras_ssl.recipes import simclrv2
from keras_ssl.recipes import stages
from keras_ssl.recipes.datasets import ArraySplits

RECIPES = {
    "simclrv2": (simclrv2, simclrv2.SimCLRv2Config),
    "paws": (paws, paws.PAWSConfig),
    "semppl": (semppl, semppl.SemPPLConfig),
}


def main(recipe, output_dir, *settings, steps=60):
    module, config_cls = RECIPES[recipe]
    config = config_cls.digits()
    splits, labeled = stages.load_data(config)
    result = reports.RecipeResult(config=config)
    run = stages.Run(config, splits, labeled, False, result)
    pretrainer = module.STAGES[0].build(run)
    pretrainer.load_weights(f"{output_dir}/pretrain/final.weights.h5")
    run.models["pretrainer"] = pretrainer
    held_out = np.ones(len(splits.x_train), bool)
    held_out[labeled.indices] = False
    x_val, y_val = splits.x_train[held_out], splits.y_train[held_out]
    validation = ArraySplits(
        splits.x_train, splits.y_train, x_val, y_val, splits.num_classes
    )
    probes = reports.probe_accuracies(pretrainer, labeled, validation)
    print("validation, encoder features:", probes)
    weights = pretrainer.get_weights()
    batch = min(50, len(labeled.y))
    for setting in settings:
        rate, ft_layer, crop = setting.split(",")
        pretrainer.set_weights(weights)
        run.config = config_cls.digits(finetune_crop_scale=(float(crop), 1))
        head = getattr(pretrainer, "head", None)
        model = stages.fine_tuner(run, head, int(ft_layer))
        model.compile(optimizer=stages.lars(float(rate), batch, "sqrt", steps))
        model.fit_linear_head(labeled.x, labeled.y)
        start = _accuracy(model, x_val, y_val)
        stream = ssl_data.from_arrays(
            labeled.x, labeled.y, batch_size=batch, seed=0, repeat=True
        )
        model.fit(stream.to_tf_dataset(), steps_per_epoch=steps, verbose=0)
        end = _accuracy(model, x_val, y_val)
        print(f"{setting}: head fitted {start:.4f}, fine-tuned {end:.4f}")


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


if __name__ == "__main__":
    main(*sys.argv[1:])
