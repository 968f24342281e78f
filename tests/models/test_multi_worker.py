"""SimCLRv2 pretraining under MultiWorkerMirroredStrategy, 2 local workers."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import tensorflow as tf
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras
    import keras_ssl
    from keras_ssl.layers import ProjectionHead, Views
    from keras_ssl.models import SimCLRv2Pretrainer
    from tests.models.conftest import tiny_encoder

    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = SimCLRv2Pretrainer(
            tiny_encoder(synchronized=True),
            head=ProjectionHead(num_layers=2, output_dim=4,
                                synchronized_bn=True),
            views=Views.from_preset("simclr_cifar", size=16, seed=3),
            memory_size=32,
        )
        model.compile(optimizer=keras_ssl.optimizers.LARS(0.5))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 16, 16, 3)).astype("uint8")
    # Float images: under MultiWorkerMirroredStrategy a uint8 stream makes
    # TensorFlow all-reduce a uint8 tensor, which its collective ops reject
    # (docs/design.md, known limitations).
    ds = tf.data.Dataset.from_tensors(images.astype("float32") / 255)
    ds = ds.repeat(3)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF)
    history = model.fit(ds.with_options(options), epochs=1, verbose=0,
                        shuffle=False).history
    with open(sys.argv[1], "w") as f:
        json.dump({
            "loss": history["loss"],
            "weights": [w.numpy().tolist() for w in model.encoder.weights],
            "valid": int(np.sum(model.queue.read()[1].numpy())),
        }, f)
    """
)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.distributed
@pytest.mark.slow
def test_two_workers_on_localhost_train_in_step(tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes, outputs = [], []
    for index in range(2):
        out = tmp_path / f"worker{index}.json"
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps(
                {
                    "cluster": {"worker": workers},
                    "task": {"type": "worker", "index": index},
                }
            ),
            KERAS_BACKEND="tensorflow",
            TF_CPP_MIN_LOG_LEVEL="3",
            PYTHONPATH=os.getcwd(),
        )
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(out)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
        outputs.append(out)
    logs = [p.communicate(timeout=600)[0] for p in processes]
    for p, log in zip(processes, logs):
        assert p.returncode == 0, log[-4000:]
    results = [json.loads(out.read_text()) for out in outputs]
    assert np.isfinite(results[0]["loss"]).all()
    assert results[0]["loss"] == pytest.approx(results[1]["loss"], rel=1e-6)
    for a, b in zip(results[0]["weights"], results[1]["weights"]):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # 3 steps x 2 views x 16 images (8 per worker) fill the 32 slots.
    assert results[0]["valid"] == 32
