# %% [markdown]
# # SimCLRv2 with keras-ssl: pretrain, fine-tune, distill, export
#
# This notebook runs the whole SimCLRv2 recipe (Chen et al., 2020) on
# scikit-learn's bundled 8×8 digits, so it needs no download: contrastive
# pretraining, fine-tuning from the first layer of the
# projection head on 10 labels per class, self-distillation with the
# unlabeled images, and export of a SavedModel for serving. Switch to the
# CIFAR-10 preset for a real run on a GPU.

# %%
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from keras_ssl.recipes import datasets
from keras_ssl.recipes import simclrv2

# CI runs this notebook with KERAS_SSL_NOTEBOOK_TINY=1: a few steps only.
TINY = os.environ.get("KERAS_SSL_NOTEBOOK_TINY") == "1"

# %% [markdown]
# ## Configure and run
#
# `SimCLRv2Config.digits()` is a small CPU-friendly preset: a CIFAR-stem
# ResNet-18 at a quarter of the width, 16-px images, LARS with a warm-up +
# cosine schedule. It leaves the MoCo memory off: at the learning rate a
# few hundred steps need, the network changes so much per step that the
# memory's keys come from a function that no longer exists, and they cost
# 15-30 points here (`memory_size=1024` turns it on; docs/benchmarks.md
# has the measurements). Every stage is checkpointed under `output_dir`, so a
# rerun after an interruption resumes where it stopped.

# %%
overrides = dict(output_dir="runs/notebook_simclrv2")
if TINY:
    overrides.update(
        epochs=1,
        steps_per_epoch=2,
        finetune_epochs=1,
        distill_epochs=1,
        verbose=0,
    )
config = simclrv2.SimCLRv2Config.digits(**overrides)
result = simclrv2.fit(config)
print(result.summary(table=False))  # fit() printed the table

# %% [markdown]
# ## Training curves

# %%
pretrain = result.stages["pretrain"].history
fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
axes[0].plot(pretrain["contrastive_loss"])
axes[0].set_title("NT-Xent loss")
axes[1].plot(pretrain["contrastive_accuracy"], label="contrastive")
axes[1].plot(pretrain["probe_accuracy"], label="linear probe")
axes[1].set_title("accuracy during pretraining")
axes[1].legend()
axes[2].plot(result.stages["finetune"].history["loss"], label="fine-tune")
axes[2].plot(result.stages["distill"].history["loss"], label="distill")
axes[2].set_title("later stages")
axes[2].legend()
for ax in axes:
    ax.set_xlabel("epoch")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Embedding projection
#
# The fine-tuned network's features of the test images, projected on their
# first two principal components and coloured by class.

# %%
splits = datasets.load("digits", config.image_size, seed=config.seed)
teacher = result.models["teacher"]
features = teacher.embed(splits.x_test).numpy()
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
