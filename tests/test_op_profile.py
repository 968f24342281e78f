"""`benchmarks/op_profile.py`: self time by op type from a trace."""

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TensorFlow's profiler"
)


@pytest.fixture
def script(load_benchmark):
    return load_benchmark("op_profile")


def test_self_time_leaves_out_nested_events(script):
    # (start, end, name): a parent with two children, one of them nested
    # twice, then a sibling after the parent.
    events = [
        (0, 100, "step"),
        (10, 40, "a:Conv2D"),
        (15, 25, "b:Relu"),
        (50, 70, "c:AddV2"),
        (120, 130, "d:Relu"),
    ]
    selfs = dict((name, t) for name, t in script._self_times(events))
    assert selfs == {
        "step": 50,
        "a:Conv2D": 20,
        "b:Relu": 10,
        "c:AddV2": 20,
        "d:Relu": 10,
    }


def test_a_traced_convolution_is_found_and_timed(script):
    import tensorflow as tf

    profile = script
    x = tf.constant(np.random.default_rng(0).random((8, 16, 16, 8)), "float32")
    kernel = tf.constant(np.ones((3, 3, 8, 8)), "float32")

    @tf.function
    def step():
        return tf.reduce_sum(tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "SAME")))

    step()
    times = profile.op_times(lambda: step().numpy(), steps=2)
    convolutions = {k: v for k, v in times.items() if "Conv2D" in k}
    assert convolutions and all(v > 0 for v in convolutions.values())
    table = profile.op_table(times)
    assert "convolutions" in table and next(iter(convolutions)) in table
    with pytest.raises(ValueError, match="steps"):
        profile.op_times(step, steps=0)
