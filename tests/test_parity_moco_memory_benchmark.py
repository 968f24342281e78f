"""`benchmarks/parity_moco_memory.py` without the reference: its arguments,
its bad-input messages and its NumPy references."""

import sys
import time

import numpy as np
import pytest


@pytest.fixture
def script(load_benchmark):
    return load_benchmark("parity_moco_memory")


@pytest.fixture
def checkout(tmp_path):
    (tmp_path / "moco").mkdir()
    for name in ("__init__.py", "builder.py"):
        (tmp_path / "moco" / name).write_text("")
    return tmp_path


def test_moco_dir_is_required(script):
    with pytest.raises(ValueError, match="--moco-dir"):
        script.parse_args([])


def test_a_checkout_without_the_builder_is_named_and_stops_at_once(
    script, tmp_path
):
    (tmp_path / "moco").mkdir()
    (tmp_path / "moco" / "__init__.py").write_text("")
    began = time.perf_counter()
    with pytest.raises(ValueError, match=r"lacks moco/builder\.py"):
        script.main(["--moco-dir", str(tmp_path)])
    assert time.perf_counter() - began < 1.0


def test_arguments_of_a_checkout(script, checkout):
    args = script.parse_args(["--moco-dir", str(checkout), "--batch", "4"])
    assert args.moco_dir == str(checkout)
    assert (args.batch, args.queue, args.steps) == (4, 128, 20)
    assert args.runs == list(script.RUNS)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--queue", "100"], "multiple of the 2·batch"),
        (["--run-queue", "1000"], "run-queue"),
        (["--ema", "1.0"], "--ema"),
        (["--runs", "ours_memory,theirs"], "--runs"),
        (["--widths", "8,0"], "--widths"),
        (["--steps", "0"], "--steps"),
    ],
)
def test_bad_arguments(script, checkout, argv, match):
    with pytest.raises(ValueError, match=match):
        script.parse_args(["--moco-dir", str(checkout), *argv])


def test_missing_torch_is_named(script, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"PyTorch \(package `torch`\)"):
        script.import_torch()


def test_a_reference_interpreter_without_torch_is_reported(
    script, checkout, tmp_path, monkeypatch
):
    # An interpreter where `import torch` fails, whatever is installed.
    stub = tmp_path / "stub"
    (stub / "torch").mkdir(parents=True)
    (stub / "torch" / "__init__.py").write_text(
        "raise ImportError('No module named torch')\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(stub))
    argv = ["--moco-dir", str(checkout), "--reference-python", sys.executable]
    args = script.parse_args(argv)
    with pytest.raises(RuntimeError, match="package `torch`"):
        script.Worker("reference", args, argv, str(tmp_path))


def test_nt_xent_reference_matches_the_library(script):
    from keras_ssl.losses import nt_xent

    rng = np.random.default_rng(0)
    z = rng.normal(size=(6, 4))
    queue = rng.normal(size=(5, 4))
    mask = rng.random((3, 5)) < 0.6
    loss, p, positive, n2 = script.nt_xent_probabilities(
        z, 0.5, queue, np.concatenate([mask, mask])
    )
    expected = nt_xent(
        z[:3], z[3:], temperature=0.5, negatives=queue, negatives_mask=mask
    )
    np.testing.assert_allclose(loss, float(expected), rtol=1e-6)
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert p[:, n2:][~np.concatenate([mask, mask])].max() == 0.0
    np.testing.assert_array_equal(positive, [3, 4, 5, 0, 1, 2])


def test_moco_loss_from_its_equation(script):
    # Eq. (1) of MoCo: -log(exp(q·k+/τ) / (exp(q·k+/τ) + Σ exp(q·k/τ))).
    q = np.array([[1.0, 0.0]])
    k = np.array([[0.0, 2.0]])
    queue = np.array([[3.0, 0.0], [0.0, -1.0]])
    tau = 0.5
    pos, negs = 0.0, np.array([1.0, 0.0])
    expected = -np.log(np.exp(pos / tau) / np.exp(np.r_[pos, negs] / tau).sum())
    np.testing.assert_allclose(
        script.moco_loss(q, k, queue, tau), expected, rtol=1e-12
    )


def test_knn_and_pairwise_cosine(script):
    train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = np.array([0, 0, 1, 1])
    test = np.array([[1.0, 0.05], [0.05, 1.0], [0.0, 1.0]])
    assert script.knn_accuracy(
        train, labels, test, np.array([0, 1, 0]), k=2
    ) == (pytest.approx(2 / 3))
    assert script.mean_pairwise_cosine(np.array([[1.0, 0], [0, 2.0]])) == 0.0
    assert script.mean_pairwise_cosine(np.array([[1.0, 1], [2, 2.0]])) == (
        pytest.approx(1.0)
    )


def test_memory_probe_shares_and_ages(script):
    rng = np.random.default_rng(1)
    z = rng.normal(size=(4, 3))
    queue = rng.normal(size=(4, 3))
    before = {
        "queue": queue,
        "valid": np.array([1, 1, 1, 0]),
        "ids": np.array([7, 8, -1, -1]),
        "write_step": np.array([3, 4, -1, -1]),
    }
    after = dict(
        before,
        queue=np.concatenate([queue[:2], z[:2] + 1.0]),
        pointer=np.array(0),
        _before=before,
    )
    values = script.memory_probe(
        z, after, step=5, temperature=0.5, ids=np.array([7, 9]), own=True
    )
    # Slot 0 holds image 7's key: masked for both of its views (2 of 12).
    assert values["own_image_share"] == pytest.approx(2 / 12)
    assert values["key_age"] == pytest.approx(1.5)
    mask = np.ones((4, 4), bool)
    mask[:, 3] = False
    mask[[0, 2], 0] = False
    _, p, positive, n2 = script.nt_xent_probabilities(z, 0.5, queue, mask)
    p[np.arange(4), positive] = 0
    share = np.mean(p[:, n2:].sum(1) / p.sum(1))
    assert values["queue_gradient_share"] == pytest.approx(share)
    assert 0.0 < share < 1.0


def test_views_and_schedule(script, checkout):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    views = script.augment(images, np.random.default_rng(3))
    again = script.augment(images, np.random.default_rng(3))
    assert views.shape == (5, 8, 8, 3) and views.dtype == np.float32
    assert 0.0 <= views.min() and views.max() <= 1.0
    np.testing.assert_array_equal(views, again)
    args = script.parse_args(
        ["--moco-dir", str(checkout), "--mode", "runs", "--run-steps", "20"]
    )
    rates = [script.learning_rate(args, t) for t in range(20)]
    # One warm-up step (5% of 20), then cosine decay over the other 19.
    assert rates[0] == rates[1] == pytest.approx(8.0)
    assert rates[2] == pytest.approx(8.0 * np.cos(np.pi / 19 / 2) ** 2)
    assert rates[-1] < 0.1


def test_step_views_are_drawn_alike_and_in_order(script):
    images = np.random.default_rng(0).integers(0, 256, (12, 8, 8, 3))
    images = images.astype(np.uint8)
    first, second = script.StepViews(images, 4), script.StepViews(images, 4)
    views, index = first.get(seed=5, step=2)
    for step in range(3):
        other, other_index = second.get(seed=5, step=step)
    np.testing.assert_array_equal(views, other)
    np.testing.assert_array_equal(index, other_index)
    assert views.shape == (8, 8, 8, 3) and len(set(index)) == 4
    # Asking for an earlier step draws the seed's sequence again.
    again, _ = first.get(seed=5, step=0)
    np.testing.assert_array_equal(
        again, second.__class__(images, 4).get(5, 0)[0]
    )
    assert not np.array_equal(first.get(seed=6, step=2)[0], views)
