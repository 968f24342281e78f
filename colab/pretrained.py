# %% [markdown]
# # Fine-tune a published SimCLRv2 model on your data
#
# The SimCLRv2 authors (Chen et al., 2020) published their ImageNet
# networks. `keras_ssl.pretrained` reads them into a Keras 3
# `backbones.ResNet` and the paper's 3-layer projection head, with outputs
# equal to the reference network's. This notebook loads
# `simclrv2/r50_1x_sk0/pretrained` (ResNet-50, 71.7% linear-evaluation
# top-1), fine-tunes it from the middle of its projection head on 10
# labeled images per class of scikit-learn's bundled 8×8 digits, as
# SimCLRv2 does with 1% and 10% of the labels, and exports a SavedModel
# for serving. Replace the digits with your own images and labels.

# %%
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import subprocess

import keras
import numpy as np
import tensorflow as tf

import keras_ssl.export
import keras_ssl.pretrained
from keras_ssl.backbones import ResNet
from keras_ssl.layers import ProjectionHead
from keras_ssl.models import FineTuner
from keras_ssl.optimizers import LARS
from keras_ssl.recipes import datasets

# CI runs this notebook with KERAS_SSL_NOTEBOOK_TINY=1, offline: a small
# random network in SimCLR's checkpoint format stands in for the
# published one, in a Keras cache of its own.
TINY = os.environ.get("KERAS_SSL_NOTEBOOK_TINY") == "1"
if TINY:
    os.environ["KERAS_HOME"] = os.path.abspath("runs/notebook_pretrained")

# %% [markdown]
# ## Get the checkpoint
#
# `keras_ssl.pretrained.CHECKPOINTS` lists every published network with
# its URL and the top-1 its authors report. PAWS, SemPPL and SimCLRv1
# files download on first use; SimCLRv2's live in Cloud Storage, so copy
# them into the Keras cache with `gsutil` (installed on Colab) once:
# `load` looks for them there, and its error prints this command.

# %%
NAME = "simclrv2/r50_1x_sk0/pretrained"
entry = keras_ssl.pretrained.CHECKPOINTS[NAME]
print(entry)
cache = keras_ssl.pretrained.catalog.default_cache_dir()
local = os.path.join(cache, entry.filename)
if TINY:
    # A ResNet-18 at a quarter of the width in SimCLR's layout, random
    # weights: test accuracy stays near chance (10%) with it.
    stand_in = keras_ssl.pretrained.PretrainedModel(
        ResNet(depth=18, width_multiplier=0.25, shortcut_pool="all"),
        head=ProjectionHead(num_layers=3, output_dim=128),
        classifier=keras.layers.Dense(1000),
    )
    keras_ssl.pretrained.save_simclr(stand_in, local)
elif not os.path.exists(local):
    os.makedirs(os.path.dirname(local), exist_ok=True)
    subprocess.run(
        ["gsutil", "-m", "cp", "-r", entry.url, os.path.dirname(local)],
        check=True,
    )

# %% [markdown]
# ## Your data
#
# Images as uint8 arrays `(N, H, W, 3)` (or floats in `[0, 1]`) and
# integer labels. The published networks saw 224-px ImageNet images;
# the fine-tuner resizes (at evaluation) and randomly crops and flips (in
# training) to `image_size`. Here: 10 labeled digits per class.

# %%
image_size = 32 if TINY else 224
batch_size = 32
epochs = 2 if TINY else 30
splits = datasets.digits(image_size=image_size)
rng = np.random.default_rng(0)
few = np.concatenate(
    [
        rng.choice(np.flatnonzero(splits.y_train == c), 10, replace=False)
        for c in range(splits.num_classes)
    ]
)
images, labels = splits.x_train[few], splits.y_train[few]
print(f"{len(images)} labeled images of {images.shape[1:]}")

# %% [markdown]
# ## Load, fine-tune from the head's middle layer, export
#
# `load` returns a `PretrainedModel`: `encoder` (the ResNet), `head` (the
# projection head) and the supervised head. SimCLRv2 fine-tunes with few
# labels from the first layer of the projection head (`ft_layer=1`): the
# task network is the encoder and that layer, followed by a new linear
# classifier, all trained with LARS at 0.005·√B and no weight decay.

# %%
pretrained = keras_ssl.pretrained.load("simclrv2/r50_1x_sk0/pretrained")
classifier = FineTuner(
    pretrained.encoder,
    num_classes=10,
    head=pretrained.head,
    ft_layer=1,
    image_size=image_size,
)
classifier.compile(optimizer=LARS(0.005 * batch_size**0.5))
classifier.fit(images, labels, batch_size=batch_size, epochs=epochs)
keras_ssl.export.export_saved_model(
    classifier, "runs/notebook_pretrained/exported", overwrite=True
)

# %% [markdown]
# ## Test accuracy

# %%
logs = classifier.evaluate(
    splits.x_test, splits.y_test, batch_size=64, return_dict=True, verbose=0
)
print(f"test accuracy: {logs['accuracy']:.1%} from {len(images)} labels")

# %% [markdown]
# ## Serve the exported model
#
# The SavedModel takes uint8 images of any size (`serving_default`) or
# encoded JPEG/PNG bytes (`serve_encoded`) and returns the embedding,
# logits and probabilities; TensorFlow Serving and any TF runtime load it
# without keras-ssl.

# %%
served = tf.saved_model.load("runs/notebook_pretrained/exported")
outputs = served.signatures["serving_default"](
    images=tf.constant(splits.x_test[:8])
)
print("served:", outputs["probabilities"].numpy().argmax(-1))
print("labels:", splits.y_test[:8])
keras_probabilities = keras.ops.softmax(
    classifier.predict(splits.x_test[:8], verbose=0)
)
np.testing.assert_allclose(
    outputs["probabilities"], keras_probabilities, atol=1e-4
)
