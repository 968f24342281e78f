"""`TestCase`: assertions and contract checks shared by every test."""

import copy
import os
import tempfile

import keras
import numpy as np


class TestCase:
    """Base class for keras-ssl tests (pytest style, no `unittest`).

    Subclasses are collected by pytest; this base class is not. Besides
    NumPy-friendly assertions it offers the contract checks that every layer
    and model must pass: output shapes and dtypes, a `get_config()` /
    `from_config()` round trip, and a `.keras` save / load round trip that
    gives the same outputs.
    """

    __test__ = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.__test__ = True

    # --- assertions -----------------------------------------------------
    def assertAllClose(self, actual, expected, atol=1e-6, rtol=1e-6, msg=""):
        np.testing.assert_allclose(
            np.asarray(keras.ops.convert_to_numpy(actual)),
            np.asarray(keras.ops.convert_to_numpy(expected)),
            atol=atol,
            rtol=rtol,
            err_msg=msg,
        )

    def assertShape(self, tensor, shape):
        assert tuple(tensor.shape) == tuple(shape), (
            f"shape {tuple(tensor.shape)} != expected {tuple(shape)}"
        )

    def assertDType(self, tensor, dtype):
        actual = keras.backend.standardize_dtype(tensor.dtype)
        assert actual == dtype, f"dtype {actual} != expected {dtype}"

    # --- contracts ------------------------------------------------------
    def run_config_round_trip(self, obj):
        """`from_config(get_config())` rebuilds an object with equal config.

        Returns:
            The rebuilt object.
        """
        config = obj.get_config()
        # Deserialising nested objects may consume the dicts it is given.
        rebuilt = obj.__class__.from_config(copy.deepcopy(config))
        assert rebuilt.get_config() == config
        serialized = keras.saving.serialize_keras_object(obj)
        revived = keras.saving.deserialize_keras_object(serialized)
        assert type(revived) is type(obj)
        return rebuilt

    def run_layer_contract(
        self,
        layer_cls,
        init_kwargs,
        input_data,
        expected_output_shape,
        expected_output_dtype="float32",
        call_kwargs=None,
        run_saving=True,
        atol=1e-5,
        expected_num_trainable_weights=None,
        expected_num_non_trainable_weights=None,
        run_mixed_precision_check=True,
        expected_mixed_output_dtype="bfloat16",
    ):
        """Shape, dtype, config and `.keras` save/load checks for a layer.

        As Keras's own layer tests do, it can also count the weights and
        check dtype policies: built with `dtype="mixed_bfloat16"`, the layer
        (and every layer inside it) must keep float32 variables and compute
        in bfloat16, and a `dtype` passed to the constructor must reach
        every sublayer.

        Args:
            layer_cls: the layer class.
            init_kwargs: dict of constructor arguments.
            input_data: a NumPy array input.
            expected_output_shape: tuple, the shape of the (first) output.
            expected_output_dtype: str. Defaults to `"float32"`.
            call_kwargs: dict passed to the call. Defaults to inference mode.
            run_saving: bool. Whether to check the `.keras` round trip.
            atol: float. Tolerance of the saved-model comparison.
            expected_num_trainable_weights: optional int.
            expected_num_non_trainable_weights: optional int.
            run_mixed_precision_check: bool. Whether to check the
                `"mixed_bfloat16"` policy. Defaults to `True`.
            expected_mixed_output_dtype: str. Float output dtype under that
                policy: the compute dtype, or `"float32"` for layers that
                compute in float32 on purpose (the augmentations).

        Returns:
            The layer's output on `input_data`.
        """
        call_kwargs = call_kwargs or {"training": False}
        layer = layer_cls(**init_kwargs)
        output = layer(input_data, **call_kwargs)
        first = output[0] if isinstance(output, (list, tuple)) else output
        self.assertShape(first, expected_output_shape)
        self.assertDType(first, expected_output_dtype)
        for expected, actual, kind in (
            (expected_num_trainable_weights, layer.trainable_weights, ""),
            (
                expected_num_non_trainable_weights,
                layer.non_trainable_weights,
                "non-",
            ),
        ):
            if expected is not None:
                assert len(actual) == expected, (
                    f"{len(actual)} {kind}trainable weights != expected "
                    f"{expected}: {[w.path for w in actual]}"
                )
        self.run_config_round_trip(layer)
        if run_mixed_precision_check:
            self.run_dtype_policy_check(
                layer_cls,
                init_kwargs,
                input_data,
                call_kwargs,
                expected_output_dtype=expected_mixed_output_dtype,
            )
        if run_saving:
            inputs = keras.Input(input_data.shape[1:], dtype=input_data.dtype)
            model = keras.Model(inputs, layer(inputs, **call_kwargs))
            self.run_model_saving(model, input_data, atol=atol)
        return output

    def run_dtype_policy_check(
        self,
        layer_cls,
        init_kwargs,
        input_data,
        call_kwargs=None,
        expected_output_dtype="bfloat16",
    ):
        """Every layer inside follows a `"mixed_bfloat16"` dtype policy.

        Float variables stay float32 (the policy's variable dtype), every
        nested layer carries the policy that was passed to the outer one,
        and float outputs come out in `expected_output_dtype`.
        """
        call_kwargs = call_kwargs or {"training": False}
        layer = layer_cls(**dict(init_kwargs, dtype="mixed_bfloat16"))
        output = layer(input_data, **call_kwargs)
        for sub in layer._flatten_layers(include_self=True):
            assert sub.dtype_policy.name == "mixed_bfloat16", (
                f"layer {sub.name!r} of {layer.name!r} has dtype policy "
                f"{sub.dtype_policy.name!r}: the `dtype` argument must be "
                "passed to every sublayer"
            )
        for weight in layer.weights:
            dtype = keras.backend.standardize_dtype(weight.dtype)
            if "float" in dtype:
                assert dtype == "float32", (weight.path, dtype)
        for tensor in keras.tree.flatten(output):
            dtype = keras.backend.standardize_dtype(tensor.dtype)
            if "float" in dtype:
                assert dtype == expected_output_dtype, (layer.name, dtype)

    def run_model_saving(self, model, input_data, atol=1e-5):
        """Saves `model` to `.keras`, reloads it and compares predictions."""
        expected = model(input_data, training=False)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.keras")
            model.save(path)
            reloaded = keras.saving.load_model(path)
        actual = reloaded(input_data, training=False)
        flat_expected = keras.tree.flatten(expected)
        flat_actual = keras.tree.flatten(actual)
        assert len(flat_expected) == len(flat_actual)
        for e, a in zip(flat_expected, flat_actual):
            self.assertAllClose(a, e, atol=atol, rtol=atol)
        return reloaded
