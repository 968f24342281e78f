"""Argument checks shared by the whole package (plain Python, no backend).

One check per concept: a number within bounds (`check_number`, with the
named cases `check_positive`, `check_non_negative`, `check_in_range`,
`check_probability`), an int >= 1 (`check_positive_int`), a choice
(`check_one_of`) and a `(min, max)` pair (`check_crop_scale`,
`check_aspect_ratio`); `refuse` raises for any other requirement. Each
raises `ValueError` naming the argument and showing the value
("`temperature` must be > 0 and finite. Received: temperature=0"), so a
bad argument fails where it is given, before any tensor is built.
"""

import math
import numbers


def refuse(name: str, requirement: str, shown) -> None:
    """Raises the package's `ValueError` for a bad argument: "`name` must
    be <requirement>. Received: name=<shown>"."""
    raise ValueError(
        f"`{name}` must be {requirement}. Received: {name}={shown}"
    )


def _bounds(low, high, low_open, high_open) -> str:
    """The requirement text: "> 0 and finite", "in [0, 1)", ..."""
    if high is None:
        return f"{'>' if low_open else '>='} {low} and finite"
    left, right = "(["[not low_open], ")]"[not high_open]
    return f"in {left}{low}, {high}{right}"


def check_number(
    name: str, value, low=None, high=None, *, low_open=False, high_open=False
):
    """Returns `value`, or raises unless it is a finite number (not a
    bool) within the bounds: `low <= value <= high`, `<` on a side marked
    open, no bound where it is `None`. NaN, `None` and strings fail."""
    try:
        inside = (
            not isinstance(value, bool)
            and math.isfinite(value)
            and (low is None or (low < value if low_open else low <= value))
            and (high is None or (value < high if high_open else value <= high))
        )
    except (TypeError, OverflowError):
        inside = False
    if not inside:
        refuse(name, _bounds(low, high, low_open, high_open), value)
    return value


def check_positive(name: str, value):
    """Returns `value`, or raises if it is not a finite number `> 0`."""
    return check_number(name, value, 0, low_open=True)


def check_non_negative(name: str, value):
    """Returns `value`, or raises if it is not a finite number `>= 0`."""
    return check_number(name, value, 0)


def check_in_range(
    name: str, value, low, high, include_high=True, include_low=True
):
    """Returns `value`, or raises if it is not a number in `[low, high]`
    (an end left out with `include_low=False` or `include_high=False`)."""
    return check_number(
        name,
        value,
        low,
        high,
        low_open=not include_low,
        high_open=not include_high,
    )


def check_probability(name: str, value):
    """Returns `value`, or raises if it is not a number in `[0, 1]`."""
    return check_number(name, value, 0, 1)


def check_one_of(name: str, value, choices):
    """Returns `value`, or raises if it is not one of `choices`."""
    if value not in choices:
        refuse(name, f"one of {tuple(choices)}", repr(value))
    return value


def is_int(value) -> bool:
    """Whether `value` is an integer, `bool` excluded."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_positive_int(name: str, value, optional: bool = False):
    """Returns `value` as an `int`, or raises if it is not an int >= 1
    (`None` passes through with `optional=True`)."""
    if optional and value is None:
        return None
    if not is_int(value) or value < 1:
        requirement = "None or an int >= 1" if optional else "an int >= 1"
        refuse(name, requirement, repr(value))
    return int(value)


def _check_pair(name: str, value, high=None) -> tuple:
    """`value` as `(min, max)` floats with `0 < min <= max` (`<= high`)."""
    pair = tuple(float(v) for v in value)
    if len(pair) != 2 or not 0.0 < pair[0] <= pair[1] <= (high or math.inf):
        bound = "" if high is None else f" <= {high}"
        refuse(name, f"two floats with 0 < min <= max{bound}", repr(value))
    return pair


def check_crop_scale(name: str, value) -> tuple:
    """Returns `value` as `(min, max)` floats with `0 < min <= max <= 1`
    (an area range of a random crop), or raises."""
    return _check_pair(name, value, high=1)


def check_aspect_ratio(name: str, value) -> tuple:
    """Returns `value` as `(min, max)` floats with `0 < min <= max` (an
    aspect-ratio range of a random crop, a blur's sigma range), or
    raises."""
    return _check_pair(name, value)
