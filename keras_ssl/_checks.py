"""Argument checks shared by the whole package (plain Python, no backend).

Each check raises `ValueError` naming the argument and showing the value
("`temperature` must be > 0. Received: temperature=0"), so a bad argument
fails where it is given, before any tensor is built.
"""

import numbers


def _holds(condition, value) -> bool:
    # `None` and strings do not compare with numbers: they fail the check.
    try:
        return bool(condition(value))
    except TypeError:
        return False


def check_positive(name: str, value):
    """Returns `value`, or raises if it is not `> 0` (NaN is not)."""
    if not _holds(lambda v: v > 0, value):
        raise ValueError(f"`{name}` must be > 0. Received: {name}={value}")
    return value


def check_non_negative(name: str, value):
    """Returns `value`, or raises if it is not `>= 0` (NaN is not)."""
    if not _holds(lambda v: v >= 0, value):
        raise ValueError(f"`{name}` must be >= 0. Received: {name}={value}")
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
