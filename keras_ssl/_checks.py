"""Argument checks shared by the whole package (plain Python, no backend).

Each check raises `ValueError` naming the argument and showing the value
("`temperature` must be > 0. Received: temperature=0"), so a bad argument
fails where it is given, before any tensor is built.
"""

import math
import numbers


def _holds(condition, value) -> bool:
    # `None` and strings do not compare with numbers: they fail the check.
    try:
        return bool(condition(value))
    except (TypeError, OverflowError):
        return False


def _finite(value) -> bool:
    return not isinstance(value, bool) and math.isfinite(value)


def check_positive(name: str, value):
    """Returns `value`, or raises if it is not a finite number `> 0`."""
    if not _holds(lambda v: _finite(v) and v > 0, value):
        raise ValueError(
            f"`{name}` must be > 0 and finite. Received: {name}={value}"
        )
    return value


def check_non_negative(name: str, value):
    """Returns `value`, or raises if it is not a finite number `>= 0`."""
    if not _holds(lambda v: _finite(v) and v >= 0, value):
        raise ValueError(
            f"`{name}` must be >= 0 and finite. Received: {name}={value}"
        )
    return value


def check_in_range(name: str, value, low, high, include_high=True):
    """Returns `value`, or raises if it is not a number in `[low, high]`
    (`[low, high)` with `include_high=False`; NaN is not)."""
    if include_high:
        inside = _holds(lambda v: _finite(v) and low <= v <= high, value)
    else:
        inside = _holds(lambda v: _finite(v) and low <= v < high, value)
    if not inside:
        bracket = "]" if include_high else ")"
        raise ValueError(
            f"`{name}` must be in [{low}, {high}{bracket}. "
            f"Received: {name}={value}"
        )
    return value


def is_int(value) -> bool:
    """Whether `value` is an integer, `bool` excluded."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_positive_int(name: str, value) -> int:
    """Returns `value` as an `int`, or raises if it is not an int >= 1."""
    if not is_int(value) or value < 1:
        raise ValueError(
            f"`{name}` must be an int >= 1. Received: {name}={value!r}"
        )
    return int(value)


def check_crop_scale(name: str, value) -> tuple:
    """Returns `value` as `(min, max)` floats with `0 < min <= max <= 1`
    (an area range of a random crop), or raises."""
    scale = tuple(float(v) for v in value)
    if len(scale) != 2 or not 0.0 < scale[0] <= scale[1] <= 1.0:
        raise ValueError(
            f"`{name}` must be two floats with 0 < min <= max <= 1. "
            f"Received: {name}={value!r}"
        )
    return scale


def check_aspect_ratio(name: str, value) -> tuple:
    """Returns `value` as `(min, max)` floats with `0 < min <= max` (an
    aspect-ratio range of a random crop), or raises."""
    ratio = tuple(float(v) for v in value)
    if len(ratio) != 2 or not 0.0 < ratio[0] <= ratio[1]:
        raise ValueError(
            f"`{name}` must be two floats with 0 < min <= max. Received: "
            f"{name}={value!r}"
        )
    return ratio
