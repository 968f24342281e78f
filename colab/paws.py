# %% [markdown]
# # PAWS with keras-ssl: pretrain, PAWS-NN, fine-tune, export
#
# This notebook runs the PAWS recipe (Assran et al., 2021) on
# scikit-learn's bundled 8×8 digits, so it needs no download. PAWS
# classifies each unlabeled view by soft nearest neighbours among a small
# labeled *support* batch, sharpens the prediction of one view into the
# target of the other, and can keep the mean prediction spread over the
# classes with the ME-MAX regulariser (the paper's presets do; this short
# digits run does not, see below). We pretrain on 10 labels per class,
# measure PAWS-NN (soft nearest-neighbour) accuracy before and after
# pretraining, fine-tune, and export a SavedModel for serving. Switch to
# the CIFAR-10 preset for a real run on a GPU.

# %%
import math
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from keras_ssl.evaluation import embed
from keras_ssl.recipes import paws
from keras_ssl.recipes.runner import load_data

# CI runs this notebook with KERAS_SSL_NOTEBOOK_TINY=1: a few steps only.
TINY = os.environ.get("KERAS_SSL_NOTEBOOK_TINY") == "1"

# %% [markdown]
# ## Configure
#
# `PAWSConfig.digits()` is a small CPU-friendly preset: a CIFAR-stem
# ResNet-18 at a quarter of the width, 16-px images, two large and six
# small views of each unlabeled image, a support batch of 10 classes × 4
# labeled images (two views each), LARS with a warm-up + cosine schedule.
# Every stage is checkpointed under `output_dir`, so a rerun after an
# interruption resumes where it stopped.

# %%
overrides = dict(output_dir="runs/notebook_paws")
if TINY:
    # Two views instead of PAWS's 2 + 6 multi-crop keep CI's tracing
    # short; the recipe's own tests run the multi-crop.
    overrides.update(
        epochs=1,
        steps_per_epoch=2,
        batch_size=16,
        images_per_class=2,
        views="simclr_cifar",
        finetune_epochs=1,
        verbose=0,
    )
config = paws.PAWSConfig.digits(**overrides)
splits, labeled = load_data(config)
print(f"{len(splits.x_train)} training images, {len(labeled.y)} labeled")

# %% [markdown]
# ## PAWS-NN before pretraining
#
# PAWS-NN labels a test image by soft nearest neighbours (τ as in
# training) of its projection among the labeled images' projections. With
# `stages=()` the recipe only builds the network, with the same seed and
# so the same initial weights the pretraining below starts from.

# %%
untrained = paws.fit(config, stages=(), export=False).models["pretrainer"]
before = paws.paws_nn_accuracy(untrained, labeled, splits, config)
print(f"PAWS-NN accuracy of the untrained network: {before:.3f}")

# %% [markdown]
# ## Pretrain and fine-tune
#
# `paws.fit` pretrains, measures PAWS-NN on the test images, fine-tunes
# the encoder and the first projection layer on the labeled images
# (Appendix C; LP-FT: the linear head first), prints the report next to
# the baselines and exports every trained model under its own name. The
# fine-tuned model keeps the share of fine-tuning that cross-validation
# on the labeled images supports (`interpolation_folds`): with 10 labels
# per class that is usually none, so it keeps the linear probe's head.

# %%
result = paws.fit(config)
print(result.summary(table=False))  # fit() printed the table
after = result.stages["pretrain"].metrics["paws_nn_accuracy"]
print(f"PAWS-NN accuracy: {before:.3f} before, {after:.3f} after pretraining")

# %% [markdown]
# ## Training curves
#
# The loss is the cross-entropy between the sharpened targets and the
# predictions, minus the ME-MAX term `H(p̄)`, the entropy of the mean
# prediction, when `me_max=True`. The digits preset leaves ME-MAX out: a
# network at initialisation maps every image to nearly the same
# projection, and in a run of a few hundred steps ME-MAX holds it there
# (docs/benchmarks.md, "PAWS and ME-MAX in short runs"). `H(p̄)` is
# reported either way; it stays near its maximum `log K` while the
# predictions use every class. The target confidence (the mean of the
# largest class probability of the sharpened targets) rises as the
# views' nearest neighbours in the support batch agree on a class.

# %%
pretrain = result.stages["pretrain"].history
fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
axes[0].plot(pretrain["loss"], "o-", label="loss")
axes[0].plot(pretrain["cross_entropy"], "o-", label="cross-entropy")
axes[0].set_title("PAWS loss")
axes[0].legend()
axes[1].plot(pretrain["me_max"], "o-")
axes[1].axhline(math.log(splits.num_classes), ls="--", c="gray")
axes[1].set_title("ME-MAX: entropy of the mean prediction (nats)")
axes[2].plot(pretrain["target_confidence"], "o-", label="target confidence")
axes[2].plot(pretrain["support_accuracy"], "o-", label="support accuracy")
axes[2].set_ylim(0, 1)
axes[2].set_title("targets")
axes[2].legend()
for ax in axes:
    ax.set_xlabel("epoch")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Embedding projection
#
# The encoder's features of the test images (after fine-tuning, which
# shares the encoder with the pretrainer), projected on their first two
# principal components and coloured by class.

# %%
features = embed(result.models["pretrainer"], splits.x_test, output="embedding")
features = features - features.mean(0)
_, _, components = np.linalg.svd(features, full_matrices=False)
points = features @ components[:2].T
plt.figure(figsize=(5, 5))
plt.scatter(points[:, 0], points[:, 1], c=splits.y_test, cmap="tab10", s=8)
plt.title("test embeddings (PCA)")
plt.show()

# %% [markdown]
# ## Serve the exported model
#
# `keras_ssl.export.export_saved_model` wrote a SavedModel with two
# endpoints: `serving_default` takes uint8 images of any size and
# `serve_encoded` takes JPEG or PNG bytes.

# %%
served = tf.saved_model.load(result.export_path)
outputs = served.signatures["serving_default"](
    images=tf.constant(splits.x_test[:8])
)
print({name: tuple(value.shape) for name, value in outputs.items()})
print("predicted:", outputs["probabilities"].numpy().argmax(-1))
print("true:     ", splits.y_test[:8])
