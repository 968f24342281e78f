"""The path docs/design.md "Adding a method" documents, walked for a
minimal BYOL: its loss against NumPy, its model trained for 2 steps and
reloaded, and its recipe run end to end with 2 pretraining steps.

Each piece here is what the document says the method's own file holds
(`losses/<method>.py`, `models/<method>_pretrainer.py`,
`recipes/<method>.py`), so a change to the building blocks that breaks
the documented way breaks this test.
"""

import dataclasses
import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_ssl._checks import check_in_range
from keras_ssl.layers import ProjectionHead
from keras_ssl.layers import Views
from keras_ssl.layers import ViewSpec
from keras_ssl.models import SSLModel
from keras_ssl.models._compiled_call import compiled_call
from keras_ssl.models.image_utils import to_float_images
from keras_ssl.models.image_utils import unpack_batch
from keras_ssl.models.momentum import clone_layer
from keras_ssl.models.momentum import clone_network
from keras_ssl.models.momentum import ema_update
from keras_ssl.optimizers import LARS
from keras_ssl.recipes import stages
from keras_ssl.recipes.config import DIGITS
from keras_ssl.recipes.config import RecipeConfig
from keras_ssl.recipes.recipe_fit import recipe_fit
from tests.models.conftest import tiny_encoder

# --- losses/byol.py: the math, on keras.ops, stateless. ---


def byol_loss(prediction, target):
    """BYOL's eq. 2: `2 − 2·cos(q, sg(z'))`, averaged over the batch."""
    prediction = ops.normalize(prediction, axis=-1)
    target = ops.normalize(ops.stop_gradient(target), axis=-1)
    return ops.mean(2.0 - 2.0 * ops.sum(prediction * target, axis=-1))


# --- models/byol_pretrainer.py: the step around the math. ---


@keras.saving.register_keras_serializable(package="keras_ssl_example")
class BYOLPretrainer(SSLModel):
    """An online network predicts an EMA target network's projection of
    the other view."""

    metric_names = ("loss", "cosine")
    config_objects = ("encoder", "views")
    config_values = ("projection_dim", "momentum")

    def __init__(self, encoder, views, projection_dim=8, momentum=0.99, **kw):
        check_in_range("momentum", momentum, 0, 1, include_high=False)
        super().__init__(**kw)
        features = tuple(encoder.output.shape)
        self.encoder = encoder
        self.views = views
        self.projector = ProjectionHead(num_layers=2, output_dim=projection_dim)
        self.projector.build(features)
        self.predictor = ProjectionHead(num_layers=2, output_dim=projection_dim)
        self.predictor.build((None, projection_dim))
        self.target_encoder = clone_network(encoder, batch_statistics=True)
        self.target_projector = clone_layer(
            self.projector, features, batch_statistics=True
        )
        self.projection_dim = projection_dim
        self.momentum = momentum
        self.image_size = encoder.input.shape[1]
        self.built = True

    def call(self, images, training=None):
        h = self.encoder(to_float_images(images), training=training)
        z = self.projector(h, training=training)[-1]
        return {"embedding": h, "projection": z}

    def compute_ssl_loss(self, data, training=True):
        if training:
            # The target moves before this step's forward pass.
            ema_update(
                self.target_encoder.weights + self.target_projector.weights,
                self.encoder.weights + self.projector.weights,
                self.momentum,
            )
        images = to_float_images(unpack_batch(data).unlabeled)
        view1, view2 = compiled_call(self.views, images, training)
        views = ops.concatenate([view1, view2], axis=0)
        h = self.encoder(views, training=training)
        online = self.projector(h, training=training)[-1]
        prediction = self.predictor(online, training=training)[-1]
        target = self.target_projector(
            self.target_encoder(views, training=training), training=training
        )[-1]
        # Each view's prediction meets the other view's target.
        batch = ops.shape(view1)[0]
        swapped = ops.concatenate([target[batch:], target[:batch]], axis=0)
        loss = byol_loss(prediction, swapped)
        return loss, {"cosine": 1.0 - loss / 2.0}


# --- recipes/byol.py: a config with its presets, a builder, the stages. ---


@dataclasses.dataclass
class BYOLConfig(RecipeConfig):
    """BYOL's fields on top of the shared ones."""

    output_dir: str = "runs/byol"
    projection_dim: int = 256
    target_momentum: float = 0.996

    @classmethod
    def digits(cls, **overrides):
        return dataclasses.replace(
            cls(**DIGITS, views="simclr_cifar", projection_dim=32),
            **overrides,
        )

    def checks(self):
        return super().checks() + (
            ("projection_dim", "int>=1"),
            ("target_momentum", "[0,1)"),
        )


def _pretrainer(run):
    config = run.config
    return BYOLPretrainer(
        stages.encoder(run),
        views=stages.views(run),
        projection_dim=config.projection_dim,
        momentum=config.target_momentum,
    )


def _stream(run):
    return run.splits.pretrain_stream(run.config.batch_size)


def _batch(run):
    return run.config.batch_size


STAGES = (
    stages.pretrain_stage(
        _pretrainer,
        _stream,
        _batch,
        "linear",
        (stages.last_epoch("cosine"),),
        labels=lambda config: False,
    ),
    *stages.finetune_and_baseline(stages.fine_tuner),
)

fit = recipe_fit(BYOLConfig, STAGES, "pretrain → fine-tune")


# --- the tests a method brings with it. ---


def test_loss_matches_numpy_in_float64():
    rng = np.random.default_rng(0)
    p, z = rng.normal(size=(2, 5, 3))
    cos = np.sum(p * z, -1) / np.linalg.norm(p, axis=-1)
    cos /= np.linalg.norm(z, axis=-1)
    expected = np.mean(2 - 2 * cos)
    got = byol_loss(ops.convert_to_tensor(p), ops.convert_to_tensor(z))
    np.testing.assert_allclose(ops.convert_to_numpy(got), expected, rtol=1e-12)


def _model():
    views = Views([ViewSpec(16), ViewSpec(16)], seed=1)
    return BYOLPretrainer(tiny_encoder(), views, projection_dim=4)


def test_trains_two_steps_and_reloads(tmp_path):
    model = _model()
    model.compile(optimizer=LARS(0.1))
    before = [ops.convert_to_numpy(w) for w in model.encoder.weights]
    target = ops.convert_to_numpy(model.target_encoder.weights[0])
    images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3))
    history = model.fit(
        images.astype("uint8"), batch_size=4, epochs=1, verbose=0
    )
    assert len(history.history["loss"]) == 1
    assert np.isfinite(history.history["loss"]).all()
    assert -1.0 <= history.history["cosine"][0] <= 1.0
    after = [ops.convert_to_numpy(w) for w in model.encoder.weights]
    assert any(not np.allclose(a, b) for a, b in zip(after, before))
    # The target moved towards the online network.
    moved = ops.convert_to_numpy(model.target_encoder.weights[0])
    assert not np.allclose(moved, target)
    path = str(tmp_path / "byol.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is BYOLPretrainer
    assert (loaded.projection_dim, loaded.momentum) == (4, 0.99)
    x = images[:2].astype("uint8")
    np.testing.assert_allclose(
        ops.convert_to_numpy(loaded(x)["projection"]),
        ops.convert_to_numpy(model(x)["projection"]),
        atol=1e-6,
    )


def test_bad_argument_is_refused_with_its_name():
    with pytest.raises(ValueError, match="momentum"):
        BYOLPretrainer(tiny_encoder(), Views([ViewSpec(16)] * 2), momentum=1)
    with pytest.raises(ValueError, match="target_momentum"):
        BYOLConfig.digits(target_momentum=1.5)


@pytest.mark.slow
def test_recipe_runs_end_to_end(tmp_path):
    result = fit(
        output_dir=str(tmp_path),
        epochs=1,
        steps_per_epoch=2,
        batch_size=16,
        finetune_steps=2,
        linear_probe_first=False,
        interpolation_folds=0,
        baselines=False,
        export=False,
        verbose=0,
    )
    pretrain = result.stages["pretrain"]
    assert len(pretrain.history["loss"]) == 1
    assert np.isfinite(pretrain.history["loss"]).all()
    assert -1.0 <= pretrain.metrics["cosine"] <= 1.0
    assert 0.0 <= pretrain.metrics["knn_accuracy"] <= 1.0
    assert 0.0 <= result.stages["finetune"].metrics["test_accuracy"] <= 1.0
    assert os.path.isdir(os.path.join(str(tmp_path), "pretrain"))
