"""Property-based fuzzing (hypothesis) of every registered strategy, on the engine-free pieces.

Random inputs: 1, 2, 3 or 16 tasks; losses and gradient norms from 0 through 1e-30 to 1e30, all equal
or all zero; gradient matrices whose rows are tiny, huge, zero, equal or opposite. Whatever comes in,
what goes out is finite (a task may get weight 0: a zero gradient is dropped, a zero weight stays out),
never NaN; the only errors are the documented ones (a negative loss under a log-based strategy).

* loss-level strategies: `weights` (the factors the engine multiplies with) over several steps, with
  `observe` and a plain SGD step on the strategy's own parameters in between (learned weights,
  histories, random draws all evolve);
* per-task gradient strategies: `gradient_log_factor` / `gradient_common_log_factor`;
* aggregators (`AggregatorWeighting`): `aggregate` on random K × P matrices.

New strategies are picked up from the registry and run on their declared defaults (power gets a fuzzed
--gamma, static a weight for every task).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hf_mtl.data import LabelStatistics
from hf_mtl.tasks import TaskSpec
from hf_mtl.weighting import WEIGHTINGS, AggregatorWeighting, GradientWeighting, build_weighting

COMPOSED = ["geometric+grad_normalize", *(["dwa+pcgrad"] if {"dwa", "pcgrad"} <= set(WEIGHTINGS) else [])]
NAMES = [*WEIGHTINGS, *COMPOSED]
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def kind(name: str) -> str:
    probe = build(name, 2)
    if isinstance(probe, AggregatorWeighting):
        return "aggregator"
    return "gradient" if isinstance(probe, GradientWeighting) else "loss"


def specs(k: int) -> list[TaskSpec]:
    """k tasks: classification with 2..5 classes and regression, alternating."""
    return [TaskSpec(f"t{i}", "regression", 1, ("s",)) if i % 3 == 2
            else TaskSpec(f"t{i}", "classification", 2 + i % 4, ("s",)) for i in range(k)]


def label_stats(tasks: list[TaskSpec]) -> dict[str, LabelStatistics]:
    rng = np.random.default_rng(0)
    stats = {}
    for t in tasks:
        if t.kind == "regression":
            stats[t.name] = LabelStatistics(num_rows=10, mean=1.0, variance=float(rng.uniform(0.1, 4)), mean_square=2.0)
        else:
            stats[t.name] = LabelStatistics(num_rows=10, class_counts=rng.integers(1, 10, t.num_labels))
    return stats


def build(name: str, k: int, gamma: float = 0.5):
    tasks = specs(k)
    hparams = {"gamma": gamma, "task_weights": {t.name: 0.5 + i for i, t in enumerate(tasks)}}
    weighting = build_weighting(name, tasks, label_stats(tasks), hparams)
    if weighting.needs_initial_losses:
        weighting.set_initial_losses([1.0 + i for i in range(k)])
    return weighting


NAME_KINDS = {name: kind(name) for name in NAMES}
LOSS_LEVEL = [n for n, k in NAME_KINDS.items() if k == "loss"]
PER_TASK = [n for n, k in NAME_KINDS.items() if k == "gradient"]
AGGREGATORS = [n for n, k in NAME_KINDS.items() if k == "aggregator"]

task_counts = st.sampled_from([1, 2, 3, 16])
gammas = st.sampled_from([0.5, -200.0, -2.0, 0.0, 1.0, 3.0, 200.0])
magnitudes = st.one_of(
    st.just(0.0),
    st.builds(lambda m, e: m * 10.0**e, st.floats(1.0, 9.99), st.integers(-30, 30)),
)


@st.composite
def loss_vectors(draw, k: int) -> list[float]:
    """k non-negative losses: independent, all equal, or all zero."""
    shape = draw(st.sampled_from(["independent", "equal", "zero"]))
    if shape == "zero":
        return [0.0] * k
    if shape == "equal":
        return [draw(magnitudes)] * k
    return draw(st.lists(magnitudes, min_size=k, max_size=k))


def finite_nonnegative(values, what: str) -> None:
    values = np.asarray(values, dtype=np.float64)
    assert np.all(np.isfinite(values)), f"{what}: {values}"
    assert np.all(values >= 0), f"{what}: {values}"


@pytest.mark.parametrize("name", LOSS_LEVEL)
@FUZZ
@given(data=st.data(), k=task_counts, gamma=gammas)
def test_loss_level_weights_stay_finite_over_steps(name, data, k, gamma):
    weighting = build(name, k, gamma)
    for step in range(3):
        losses = data.draw(loss_vectors(k), label=f"losses step {step}")
        checked = [weighting.check_loss(i, loss) for i, loss in enumerate(losses)]
        weights = np.exp(weighting.log_weights(checked))
        finite_nonnegative(weights, f"{name} weights for losses {losses}")
        assert np.array_equal(weights, weighting.weights(losses))
        probes = data.draw(st.lists(magnitudes, min_size=k, max_size=k), label="probe norms") \
            if weighting.probes_last_shared_layer else None
        weighting.observe(checked, probes)
        with torch.no_grad():  # the optimizer's step on the strategy's own parameters
            for p in weighting.parameters():
                if p.grad is not None:
                    assert torch.isfinite(p.grad).all(), f"{name}: gradient of its own parameters {p.grad}"
                    p -= 0.1 * p.grad


@pytest.mark.parametrize("name", [n for n in NAMES if NAME_KINDS[n] != "aggregator" and getattr(build(n, 1), "log_based", False)])
@given(k=st.sampled_from([1, 3]), bad=st.floats(-1e30, -1e-30))
@settings(max_examples=5, deadline=None, derandomize=True, database=None)
def test_a_negative_loss_is_refused_by_log_based_strategies(name, k, bad):
    weighting = build(name, k)
    with pytest.raises(ValueError, match="negative loss"):
        weighting.weights([1.0] * (k - 1) + [bad])


@pytest.mark.parametrize("name", PER_TASK)
@FUZZ
@given(data=st.data(), k=task_counts)
def test_per_task_gradient_factors_are_finite_or_drop_the_task(name, data, k):
    weighting = build(name, k)
    norms = data.draw(st.one_of(st.lists(magnitudes, min_size=k, max_size=k),
                                magnitudes.map(lambda m: [m] * k)), label="gradient norms")
    losses = data.draw(loss_vectors(k), label="losses")
    checked = [weighting.check_loss(i, loss) for i, loss in enumerate(losses)]
    task = [weighting.gradient_log_factor(i, n) for i, n in enumerate(norms)]
    common = weighting.gradient_common_log_factor(norms, checked)
    assert not math.isnan(common) and common < math.inf, common
    for n, f in zip(norms, task):
        assert not math.isnan(f) and f < math.inf, (n, f)
        if n == 0:
            assert f == -math.inf, "a zero gradient must be dropped, not divided by"
    factors = [math.exp(f + common) if f > -math.inf else 0.0 for f in task]
    finite_nonnegative(factors, f"{name} factors for norms {norms}")
    # Applied to the gradients: each term factor_i * g_i stays finite for ‖g_i‖ = n_i.
    finite_nonnegative([f * n for f, n in zip(factors, norms)], f"{name} scaled norms")


ROW_SCALES = [0.0, 1e-20, 1e-6, 1.0, 1e6, 1e15]


@st.composite
def gradient_matrices(draw) -> torch.Tensor:
    k = draw(task_counts)
    p = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**16))
    layout = draw(st.sampled_from(["independent", "equal", "opposite", "one_zero"]))
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((k, p))
    if layout == "equal":
        base = np.repeat(base[:1], k, axis=0)
    elif layout == "opposite":
        base = np.stack([base[0] * (1 if i % 2 == 0 else -1) for i in range(k)])
    scales = np.array(draw(st.lists(st.sampled_from(ROW_SCALES), min_size=k, max_size=k)))
    if layout == "one_zero":
        scales[0] = 0.0
    return torch.tensor(base * scales[:, None], dtype=torch.float32)


@pytest.mark.parametrize("name", AGGREGATORS)
@FUZZ
@given(data=st.data(), grads=gradient_matrices())
def test_aggregators_give_a_finite_update(name, data, grads):
    k = grads.shape[0]
    weighting = build(name, k)
    losses = data.draw(loss_vectors(k), label="losses")
    checked = [weighting.check_loss(i, loss) for i, loss in enumerate(losses)]
    for _ in range(2):  # twice: strategies with state (moving averages, step counters) see a second step
        update = weighting.aggregate(grads.clone(), checked)
        assert update.shape == (grads.shape[1],)
        assert torch.isfinite(update).all(), f"{name}: {update} from rows of norms {grads.norm(dim=1).tolist()}"
    assume(grads.abs().sum() > 0)
