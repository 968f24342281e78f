"""Where a TensorFlow step spends its time, by op type, from a trace.

Shared by the comparison benchmarks (`--profile`): runs a step a few times
under `tf.profiler.experimental`, reads the trace's host plane
(`*.xplane.pb`) and sums, per op type, each op's self time (its duration
minus that of the events nested in it on the same thread). An op's
duration is wall time on the thread that ran it, so ops that run at once
on the inter-op threads each count in full: the total can exceed the
step's wall time, and the shares compare the kinds of work, not the
cores they used.

    from op_profile import op_times, op_table
    print(op_table(op_times(step, steps=2)))

The executor's own events (`Run`, `Process`, ...: waiting for ops on
other threads) are left out of the shares and reported on their own.
"""

import collections
import glob
import os
import re
import shutil
import tempfile

# Events that are the runtime's, not an op's.
RUNTIME = ("Run", "Process")
_OP_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _self_times(events):
    """(name, self time in ps) of nested `(start, end, name)` events."""
    stack, selfs = [], []
    for start, end, name in sorted(events):
        while stack and stack[-1][1] <= start:
            stack.pop()
        if stack:
            selfs[stack[-1][2]][1] -= end - start
        selfs.append([name, end - start])
        stack.append((start, end, len(selfs) - 1))
    return selfs


def op_times(step, steps=1):
    """Self time per op type, seconds per step, of `steps` calls of `step`.

    Args:
        step: a callable running one step (and returning once it is done).
        steps: int >= 1. Steps traced; the times are their mean.

    Returns:
        A `collections.Counter` from op type (e.g. `Conv2DBackpropFilter`,
        or its oneDNN name `_MklNativeConv2DBackpropFilter`) to seconds.
    """
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    if steps < 1:
        raise ValueError(f"`steps` must be >= 1. Received: steps={steps}")
    logdir = tempfile.mkdtemp(prefix="op_profile_")
    try:
        tf.profiler.experimental.start(logdir)
        try:
            for _ in range(steps):
                step()
        finally:
            tf.profiler.experimental.stop()
        (path,) = glob.glob(
            os.path.join(logdir, "**", "*.xplane.pb"), recursive=True
        )
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    totals = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            events = [
                (
                    e.offset_ps,
                    e.offset_ps + e.duration_ps,
                    names.get(e.metadata_id, ""),
                )
                for e in line.events
            ]
            for name, picoseconds in _self_times(events):
                if name in RUNTIME:
                    totals[name] += picoseconds / 1e12 / steps
                # TensorFlow ops are traced as "op_name:OpType".
                elif ":" in name and not name.startswith("__"):
                    kind = name.rsplit(":", 1)[1]
                    if _OP_TYPE.fullmatch(kind):
                        totals[kind] += picoseconds / 1e12 / steps
    return totals


def op_table(totals, top=12):
    """The op types with the most self time, as lines of text."""
    ops = {k: v for k, v in totals.items() if k not in RUNTIME}
    total = sum(ops.values())
    convolutions = sum(v for k, v in ops.items() if "Conv2D" in k)
    lines = [
        f"ops' self time {total:.3f} s/step, of which convolutions "
        f"{convolutions:.3f} s ({100 * convolutions / max(total, 1e-12):.1f}"
        f"%); runtime events {sum(totals[k] for k in RUNTIME):.3f} s"
    ]
    for kind, seconds in collections.Counter(ops).most_common(top):
        lines.append(
            f"  {kind:34s} {seconds:7.3f} s {100 * seconds / total:5.1f}%"
        )
    return "\n".join(lines)
