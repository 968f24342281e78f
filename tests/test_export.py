import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from keras_ssl.export import export_saved_model
from keras_ssl.export import serving_outputs
from keras_ssl.layers import ProjectionHead
from keras_ssl.layers import Views
from keras_ssl.models import Distiller
from keras_ssl.models import FineTuner
from keras_ssl.models import SimCLRv2Pretrainer
from keras_ssl.testing import TestCase
from tests.models.conftest import tiny_encoder


def _load_in_fresh_process(path, images, encoded):
    """Calls both endpoints from a new interpreter that has no keras_ssl."""
    code = textwrap.dedent(
        """
        import sys, numpy as np, tensorflow as tf
        path, images_file, out_file = sys.argv[1:]
        data = np.load(images_file, allow_pickle=True)
        served = tf.saved_model.load(path)
        out = {}
        result = served.signatures["serving_default"](
            images=tf.constant(data["images"]))
        out.update({"raw_" + k: v.numpy() for k, v in result.items()})
        result = served.signatures["serve_encoded"](
            encoded=tf.constant(list(data["encoded"])))
        out.update({"bytes_" + k: v.numpy() for k, v in result.items()})
        np.savez(out_file, **out)
        """
    )
    return code


@pytest.mark.slow
class TestExport(TestCase):
    def _export_and_serve(self, model, tmp_path, images):
        path = str(tmp_path / "saved")
        export_saved_model(model, path)
        encoded = []
        for image in images:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            encoded.append(buffer.getvalue())
        images_file = str(tmp_path / "inputs.npz")
        np.savez(
            images_file,
            images=images,
            encoded=np.array(encoded, dtype=object),
        )
        out_file = str(tmp_path / "outputs.npz")
        code = _load_in_fresh_process(path, images, encoded)
        subprocess.run(
            [sys.executable, "-c", code, path, images_file, out_file],
            check=True,
            capture_output=True,
        )
        return dict(np.load(out_file))

    def test_fine_tuner_endpoints_match_keras(self, tmp_path):
        model = FineTuner(tiny_encoder(), num_classes=3, ft_layer=0)
        # Non-zero classifier weights so the logits are informative.
        model.classifier.kernel.assign(
            np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
        )
        images = (
            np.random.default_rng(1).integers(0, 256, (3, 16, 16, 3))
        ).astype("uint8")
        served = self._export_and_serve(model, tmp_path, images)
        expected = serving_outputs(model, images)
        for key in ("embedding", "logits", "probabilities"):
            self.assertAllClose(served["raw_" + key], expected[key], atol=1e-5)
            # PNG is lossless: the bytes endpoint gives the same result.
            self.assertAllClose(
                served["bytes_" + key], expected[key], atol=1e-5
            )
        self.assertAllClose(served["raw_probabilities"].sum(-1), np.ones(3))

    def test_pretrainer_and_distiller_endpoints(self, tmp_path):
        pretrainer = SimCLRv2Pretrainer(
            tiny_encoder(),
            head=ProjectionHead(num_layers=2, output_dim=4),
            views=Views.from_preset("simclr_cifar", size=16),
            memory_size=0,
        )
        images = (
            np.random.default_rng(2).integers(0, 256, (2, 24, 24, 3))
        ).astype("uint8")
        served = self._export_and_serve(pretrainer, tmp_path / "p", images)
        expected = serving_outputs(pretrainer, images)
        assert set(expected) == {"embedding", "projection"}
        for key in expected:
            self.assertAllClose(served["raw_" + key], expected[key], atol=1e-5)

        teacher = FineTuner(tiny_encoder(), num_classes=3, ft_layer=0)
        student = FineTuner(tiny_encoder(width=4), num_classes=3, ft_layer=0)
        distiller = Distiller(teacher, student)
        served = self._export_and_serve(distiller, tmp_path / "d", images)
        # The student is what a distiller exports.
        self.assertShape(served["raw_embedding"], (2, 4))


@pytest.mark.slow
def test_export_refuses_a_non_empty_target_and_replaces_it_whole(tmp_path):
    model = FineTuner(tiny_encoder(), num_classes=3, ft_layer=0)
    target = tmp_path / "saved"
    target.mkdir()
    (target / "old_variables.txt").write_text("from another model")
    with pytest.raises(ValueError, match="non-empty directory"):
        export_saved_model(model, str(target))
    export_saved_model(model, str(target), overwrite=True)
    assert "saved_model.pb" in os.listdir(target)
    assert "old_variables.txt" not in os.listdir(target)
    assert sorted(os.listdir(tmp_path)) == ["saved"]


def test_export_refuses_non_finite_weights(tmp_path):
    model = FineTuner(tiny_encoder(), num_classes=3, ft_layer=0)
    model.classifier.bias.assign(np.array([0.0, np.nan, 0.0], "float32"))
    with pytest.raises(ValueError, match="non-finite weights"):
        export_saved_model(model, str(tmp_path / "saved"))
    assert not os.path.exists(tmp_path / "saved")
