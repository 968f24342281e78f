"""Timing contenders step by step in alternation (A B C A B C ...).

Shared by the comparison benchmarks. On a shared machine the load moves
during a run; timing one contender in a block and then the next puts that
drift into their ratio. Here every cycle runs each contender once, in the
same order, so a ratio is taken between steps a few seconds apart, and
the spread of the per-cycle ratios shows how much the load moved.

    from alternate import alternate, report
    results = alternate({"a": step_a, "b": step_b}, cycles=5, warmup=1)
    print(report(results, baseline="a"))

Each contender is a callable that runs one step and returns once its
result exists (e.g. `model.train_on_batch`, which returns NumPy values).
Wall time is `time.perf_counter`; CPU time is `time.process_time`, the
process's time over all its threads.
"""

import os
import platform
import statistics
import sys
import time


def alternate(contenders, cycles, warmup=1):
    """Times `contenders` in alternation.

    Args:
        contenders: dict from name to a callable running one step.
        cycles: int >= 1. Timed cycles; each runs every contender once.
        warmup: int >= 0. Untimed calls of each contender first (tracing,
            compilation), also in alternation.

    Returns:
        A dict from name to `{"wall": [...], "cpu": [...]}`, seconds per
        step, one entry per cycle.
    """
    if cycles < 1:
        raise ValueError(f"`cycles` must be >= 1. Received: cycles={cycles}")
    for _ in range(warmup):
        for step in contenders.values():
            step()
    results = {name: {"wall": [], "cpu": []} for name in contenders}
    for _ in range(cycles):
        for name, step in contenders.items():
            wall, cpu = time.perf_counter(), time.process_time()
            step()
            results[name]["wall"].append(time.perf_counter() - wall)
            results[name]["cpu"].append(time.process_time() - cpu)
    return results


def ratios(results, name, baseline, kind="wall"):
    """Per-cycle ratios `name / baseline` of wall or CPU time.

    `baseline` may be a tuple of names: the ratio is then to their sum in
    the same cycle (e.g. a step against the sum of its parts' floors).
    """
    parts = (baseline,) if isinstance(baseline, str) else tuple(baseline)
    return [
        values[0] / sum(values[1:])
        for values in zip(
            results[name][kind], *(results[p][kind] for p in parts)
        )
    ]


def summary(results, name, baseline):
    """`ratios` of wall and CPU time as one line: median (range)."""
    return ", ".join(
        f"{kind} {_spread(ratios(results, name, baseline, kind), 3)}"
        for kind in ("wall", "cpu")
    )


def _spread(values, digits):
    return (
        f"{statistics.median(values):.{digits}f} "
        f"({min(values):.{digits}f}–{max(values):.{digits}f})"
    )


def report(results, baseline, vs=None, title="step"):
    """A markdown table: medians and ranges of times and per-cycle ratios.

    Args:
        results: what `alternate` returned.
        baseline: the default contender each ratio is taken against.
        vs: optional dict from name to the contender its ratio is taken
            against instead.
        title: the first column's heading.

    Returns:
        The table as a string.
    """
    vs = vs or {}
    lines = [
        f"| {title} | wall s/step | CPU s/step | ratio (wall) | "
        "ratio (CPU) | vs |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in results:
        other = vs.get(name, baseline)
        cells = [
            name,
            _spread(results[name]["wall"], 3),
            _spread(results[name]["cpu"], 3),
        ]
        if other == name:
            cells += ["1", "1", "—"]
        else:
            cells += [
                _spread(ratios(results, name, other, "wall"), 3),
                _spread(ratios(results, name, other, "cpu"), 3),
                other,
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_model():
    """The CPU's model name from `/proc/cpuinfo`, or `"unknown"`."""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as lines:
            for line in lines:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return "unknown"


def machine():
    """The command line and the machine, as the benchmark tables give them:
    the CPU's model and the instruction-set flags that decide its float32
    and bfloat16 speed (`keras_ssl.recipes.precision.INSTRUCTION_FLAGS`)."""
    from keras_ssl.recipes.precision import instruction_flags

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"command: python {' '.join(sys.argv)}\n"
        f"machine: {os.cpu_count()} cores, {cpu_model()} "
        f"({instruction_flags()}), {platform.platform()}, "
        f"load average {load:.1f} at the end"
    )
