"""The losses' configs: every constructor argument, and a round trip."""

import keras
import pytest

from keras_ssl.losses import PAWS
from keras_ssl.losses import Distillation
from keras_ssl.losses import NTXent
from keras_ssl.losses import SemPPL

# Each loss with arguments other than its defaults.
CASES = [
    (Distillation, {"temperature": 0.5}),
    (NTXent, {"temperature": 0.2}),
    (
        PAWS,
        {
            "num_classes": 7,
            "temperature": 0.3,
            "sharpen_temperature": 0.5,
            "label_smoothing": 0.2,
            "me_max": False,
            "target_threshold": 0.0,
        },
    ),
    (
        SemPPL,
        {
            "temperature": 0.1,
            "alpha": 0.5,
            "invariance_scale": 1.0,
            "contrastive_scale": 2.0,
        },
    ),
]


@pytest.mark.parametrize(
    "cls,args", CASES, ids=[cls.__name__ for cls, _ in CASES]
)
def test_config_holds_every_argument(cls, args):
    loss = cls(**args, reduction="sum", name="objective")
    config = loss.get_config()
    assert config["name"] == "objective"
    assert config["reduction"] == "sum"
    assert {name: config[name] for name in args} == args
    rebuilt = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss)
    )
    assert type(rebuilt) is cls
    assert rebuilt.get_config() == config
