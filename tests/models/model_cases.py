"""Tiny instances of every training model, shared by the backend tests.

Nothing here imports TensorFlow, so the JAX tests can use it in an
environment without it. Views are plain resizes when `fixed=True`, so two
runs (1 vs 2 devices, TensorFlow vs JAX) see the same pixels whatever
their random number generators draw.
"""

import keras
import numpy as np

from keras_ssl.data import SupportSampler
from keras_ssl.data import semi_supervised
from keras_ssl.layers import ProjectionHead
from keras_ssl.layers import Views
from keras_ssl.layers import ViewSpec
from keras_ssl.models import Distiller
from keras_ssl.models import FineTuner
from keras_ssl.models import PAWSPretrainer
from keras_ssl.models import SemPPLPretrainer
from keras_ssl.models import SimCLRv2Pretrainer
from tests.models.conftest import tiny_encoder

NUM_CLASSES = 4
MODELS = ("simclrv2", "paws", "semppl", "distiller")

_FIXED = dict(
    scale=(1.0, 1.0),
    ratio=(1.0, 1.0),
    flip=False,
    color_strength=0.0,
    p_grayscale=0.0,
)


def _views(sizes, fixed, seed=1):
    if fixed:
        return Views([ViewSpec(size, **_FIXED) for size in sizes])
    return Views([ViewSpec(size) for size in sizes], seed=seed)


def _mlp(dim=4, hidden=8):
    return keras.Sequential(
        [
            keras.layers.Dense(hidden),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Dense(dim),
        ]
    )


def make_model(name, fixed=False):
    """One tiny model of the method `name` (one of `MODELS`)."""
    if name == "simclrv2":
        return SimCLRv2Pretrainer(
            tiny_encoder(),
            head=ProjectionHead(num_layers=2, output_dim=4, hidden_dim=8),
            views=_views([16, 16], fixed),
            memory_size=12,
            momentum=0.5,
            num_classes=NUM_CLASSES,
        )
    if name == "paws":
        return PAWSPretrainer(
            tiny_encoder(size=None),
            num_classes=NUM_CLASSES,
            head=ProjectionHead(num_layers=3, output_dim=6, hidden_dim=8),
            views=_views([16, 16, 8, 8], fixed),
        )
    if name == "semppl":
        projector = _mlp()
        projector.build((None, 8))
        predictor = _mlp()
        predictor.build((None, 4))
        return SemPPLPretrainer(
            tiny_encoder(size=None),
            num_classes=NUM_CLASSES,
            projector=projector,
            predictor=predictor,
            views=_views([16, 16, 8], fixed),
            queue_size=8,
            num_negatives=3,
            seed=2,
        )
    if name == "distiller":
        teacher = FineTuner(tiny_encoder(), NUM_CLASSES, ft_layer=0)
        rng = np.random.default_rng(0)
        teacher.classifier.kernel.assign(
            rng.normal(size=(8, NUM_CLASSES)).astype("float32")
        )
        student = FineTuner(tiny_encoder(width=4), NUM_CLASSES, ft_layer=0)
        return Distiller(teacher, student, temperature=0.5, alpha=0.5)
    raise ValueError(f"Unknown model name={name!r}")


def make_images(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 16, 16, 3)).astype("uint8")


def make_stream(name, num_batches=2, seed=0):
    """A NumPy host stream (no TensorFlow) of the batches `name` takes."""
    images = make_images(8 * num_batches, seed)
    labels = (np.arange(len(images)) % NUM_CLASSES).astype("int32")
    if name == "paws":
        sampler = SupportSampler(
            images,
            labels,
            classes_per_batch=NUM_CLASSES,
            images_per_class=2,
            num_classes=NUM_CLASSES,
            seed=seed,
        )
        return semi_supervised(
            images, unlabeled_batch_size=8, support=sampler, shuffle=False
        )
    # Labeled images distinct from the unlabeled ones: a duplicate would
    # tie with the positive in the contrastive ranking.
    labeled = make_images(4 * num_batches, seed + 1)
    return semi_supervised(
        images,
        (labeled, labels[: 4 * num_batches]),
        unlabeled_batch_size=8,
        labeled_batch_size=4,
        shuffle=False,
        # The memory masks each image's own keys by these ids.
        image_ids=name == "simclrv2",
    )


def state_variables(model, name):
    """The non-trainable state each method must carry from step to step."""
    if name == "simclrv2":
        return {
            "momentum": model.momentum_encoder.weights,
            "queue": [model.queue.queue],
        }
    if name == "semppl":
        return {
            "target": model.target_encoder.weights,
            "queue": [model.queue_0.queue, model.queue_0.labels],
        }
    if name == "distiller":
        return {"bn": model.student.network.non_trainable_weights}
    return {"bn": model.encoder.non_trainable_weights}
