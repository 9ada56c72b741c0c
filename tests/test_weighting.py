"""Loss-level weighting strategies: declared properties for every registered strategy, exact values on
one fixed input, the scale invariances, and every error path.

A new strategy plugs into the property tests through `STRATEGY_HPARAMS` (only if it needs flags;
label statistics and measured initial losses are always supplied) and must pin its exact values in
`EXACT_CASES`. The hyperparameter section checks every registered strategy's declared flags against
`MultiTaskTrainingArguments`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch

from hf_mtl.data import LabelStatistics
from hf_mtl.tasks import TaskSpec
from hf_mtl.training_args import MultiTaskTrainingArguments
from hf_mtl.weighting import (
    WEIGHTINGS,
    Weighting,
    WeightingConfig,
    build_weighting,
    describe_weightings,
    get_weighting_class,
    hparam_flags,
    register,
)

from conftest import WEIGHTING_TASKS

TASKS = WEIGHTING_TASKS
SST2, MNLI, STSB = TASKS
LABEL_STATS = {
    "sst2": LabelStatistics(num_rows=4, class_counts=np.array([3, 1])),  # entropy 2 log 2 − (3/4) log 3
    "mnli": LabelStatistics(num_rows=4, class_counts=np.array([2, 1, 1])),  # entropy (3/2) log 2
    "stsb": LabelStatistics(num_rows=2, mean=2.0, variance=1.0, mean_square=5.0),  # labels {1, 3}
}
TASK_WEIGHTS = {"sst2": 1.0, "mnli": 0.5, "stsb": 2.0}
INITIAL_LOSSES = {"sst2": 0.25, "mnli": 4.0, "stsb": 10.0}  # what the trainer would have measured

#: Hyperparameters (flag -> value) per strategy variant; a strategy not listed runs on its defaults.
STRATEGY_HPARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "static": {"": {"task_weights": TASK_WEIGHTS}},
    "init": {
        "theoretical": {"init_estimate_batches": 0},
        "estimated": {"init_estimate_batches": 2},
    },
    "power": {f"gamma={g:g}": {"gamma": g} for g in (-200.0, -2.0, 0.0, 0.5, 1.0, 3.0, 200.0)},
    # Warm-up (log losses), and the STCH objective itself (no warm-up: nadir 1) at two temperatures.
    "stch": {"warmup": {}, "no-warmup": {"stch_warmup_steps": 0},
             "no-warmup-mu=0.05": {"stch_warmup_steps": 0, "stch_mu": 0.05}},
}
ESTIMATED = {"init_estimate_batches": 2}

Factory = Callable[[Sequence[TaskSpec]], Weighting]


def make(name: str, hparams: dict[str, Any], tasks: Sequence[TaskSpec] = TASKS,
         initial_losses: dict[str, float] = INITIAL_LOSSES) -> Weighting:
    """A ready-to-use strategy: label statistics given, measured initial losses set when it asks for them."""
    weighting = build_weighting(name, tasks, label_stats=LABEL_STATS, hparams=hparams)
    if weighting.needs_initial_losses:
        weighting.set_initial_losses([initial_losses[t.name] for t in tasks])
    return weighting


#: Loss-level strategies: their weights are a function of the losses alone (gradient-level ones are
#: covered by tests/test_gradient_weighting.py).
LOSS_LEVEL = [name for name, cls in WEIGHTINGS.items() if cls.kind == "loss"]


def _variants() -> list:
    return [
        pytest.param((name, hparams), id=f"{name}-{variant}" if variant else name)
        for name in LOSS_LEVEL
        for variant, hparams in STRATEGY_HPARAMS.get(name, {"": {}}).items()
    ]


@pytest.fixture(params=_variants())
def variant(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param


@pytest.fixture
def strategy(variant: tuple[str, dict[str, Any]]) -> Factory:
    """Builds the strategy variant for a given task list (task order matters for the permutation test)."""
    name, hparams = variant
    return lambda tasks: make(name, hparams, tasks)


def random_losses(count: int = 5, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = [np.exp(rng.uniform(-4, 4, size=len(TASKS))) for _ in range(count)]
    return vectors + [np.array([1e-8, 1.0, 1e8]), np.array([3.0, 3.0, 3.0])]


def autograd_weights(weighting: Weighting, losses: Sequence[float]) -> np.ndarray:
    tensor = torch.tensor(losses, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(weighting.objective(tensor), tensor)
    return grad.numpy()


def assert_weights_close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-9) -> None:
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-12 * float(np.max(np.abs(expected))))


# Properties every registered strategy declares ---------------------------------------------------


def test_strategy_hparams_name_registered_strategies() -> None:
    assert set(STRATEGY_HPARAMS) <= set(WEIGHTINGS)


def test_weights_are_the_gradient_of_the_objective(strategy: Factory) -> None:
    weighting = strategy(TASKS)
    for losses in random_losses():
        weights = weighting.weights(losses)
        assert np.all(np.isfinite(weights)) and np.all(weights >= 0)
        assert_weights_close(weights, autograd_weights(weighting, losses))


def test_permuting_tasks_permutes_weights(strategy: Factory) -> None:
    weighting = strategy(TASKS)
    for perm in ([2, 0, 1], [1, 0, 2], [2, 1, 0]):
        permuted = strategy([TASKS[p] for p in perm])
        for losses in random_losses(3, seed=1):
            assert_weights_close(permuted.weights(losses[perm]), weighting.weights(losses)[perm], rtol=1e-12)


def test_state_dict_round_trips_through_json(variant: tuple[str, dict[str, Any]]) -> None:
    name, hparams = variant
    weighting = make(name, hparams)
    weighting.weights([0.0 if weighting.log_based else 0.3, 1.0, 2.0])  # leaves a clamp in the state
    state = json.loads(json.dumps(weighting.state_dict()))

    fresh = build_weighting(name, TASKS, label_stats=LABEL_STATS, hparams=hparams)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state
    assert not fresh.needs_initial_losses  # a resumed run must not measure initial losses again
    losses = [0.5, 2.0, 8.0]
    np.testing.assert_array_equal(fresh.weights(losses), weighting.weights(losses))
    assert repr(fresh) == repr(weighting)


# Exact values on L = [0.5, 2, 8] with LABEL_STATS, worked out by hand -----------------------------

LN2, LN3 = math.log(2), math.log(3)
SST2_ENTROPY = 2 * LN2 - 0.75 * LN3  # −(3/4 log 3/4 + 1/4 log 1/4)
MNLI_ENTROPY = 1.5 * LN2  # −(1/2 log 1/2 + 2 · 1/4 log 1/4)
FIXED_LOSSES = [0.5, 2.0, 8.0]
RLW_Z = np.array([-0.1321048632913019, 0.1257302210933933, 0.6404226504432821])  # sst2, mnli, stsb

#: (name, hparams, weights dF/dL_i, objective F) at FIXED_LOSSES.
EXACT_CASES = {
    "equal": ("equal", {}, [1 / 3, 1 / 3, 1 / 3], 3.5),
    "static": ("static", {"task_weights": TASK_WEIGHTS}, [1.0, 0.5, 2.0], 0.5 + 1.0 + 16.0),
    "init-theoretical": (
        "init", {}, [1 / LN2, 1 / LN3, 1 / 5], 0.5 / LN2 + 2 / LN3 + 8 / 5
    ),
    "init-estimated": (
        "init", ESTIMATED, [4.0, 0.25, 0.1], 2.0 + 0.5 + 0.8
    ),
    "prior": (
        "prior", {}, [1 / SST2_ENTROPY, 1 / MNLI_ENTROPY, 1.0],
        0.5 / SST2_ENTROPY + 2 / MNLI_ENTROPY + 8.0,
    ),
    "realtime": ("realtime", {}, [2.0, 0.5, 0.125], 3.0),
    "geometric": ("geometric", {}, [2.0, 0.5, 0.125], math.log(8)),
    # γ = 1/2: Σ √L_i = 3.5 √2, F = (3.5 √2 / 3)² = 49/18,
    # dF/dL_i = (1/3) √(49/18) / √L_i = 7 / (9 √(2 L_i))
    "power-0.5": ("power", {"gamma": 0.5}, [7 / 9, 7 / 18, 7 / 36], 49 / 18),
    # γ = 0: F = (0.5 · 2 · 8)^(1/3) = 2, dF/dL_i = F / (3 L_i)
    "power-0": ("power", {"gamma": 0.0}, [4 / 3, 1 / 3, 1 / 12], 2.0),
    "power-1": ("power", {"gamma": 1.0}, [1 / 3, 1 / 3, 1 / 3], 3.5),
    # γ = −1: F = 3 / (2 + 1/2 + 1/8) = 8/7, dF/dL_i = (1/3) L_i^(−2) (8/7)²
    "power--1": ("power", {"gamma": -1.0}, [256 / 147, 16 / 147, 1 / 147], 8 / 7),
    # γ = 2: F = √((1/4 + 4 + 64)/3) = √22.75, dF/dL_i = L_i / (3 F)
    "power-2": (
        "power", {"gamma": 2.0}, [0.5 / (3 * math.sqrt(22.75)), 2 / (3 * math.sqrt(22.75)),
                                               8 / (3 * math.sqrt(22.75))], math.sqrt(22.75),
    ),
    # Learned strategies in their initial state: s = 0, w = 1, ξ = 0, fewer than two DWA windows.
    "uncertainty": ("uncertainty", {}, [1.0, 1.0, 1.0], 10.5),
    "gradnorm": ("gradnorm", {}, [1.0, 1.0, 1.0], 10.5),
    "dwa": ("dwa", {}, [1.0, 1.0, 1.0], 10.5),
    # The first draw of np.random.default_rng(0), in alphabetical task order (mnli, sst2, stsb).
    "rlw": (
        "rlw", {}, np.exp(RLW_Z) / np.exp(RLW_Z).sum(),
        float(np.exp(RLW_Z) @ FIXED_LOSSES / np.exp(RLW_Z).sum()),
    ),
    # ξ = 0: z = 1/3, c = (2 + 1/2 + 1/8)/3 = 7/8, dF/dL_i = (1/L_i) / Σ_j (1/L_j), F = (1/3) log 8 / c
    "famo": ("famo", {}, [16 / 21, 4 / 21, 1 / 21], 8 * LN2 / 7),
    # s = 0: F = Σ (L_i − 0), weights 1.
    "imtl_l": ("imtl_l", {}, [1.0, 1.0, 1.0], 10.5),
    # The warm-up objective is Σ log L_i (geometric's).
    "stch-warmup": ("stch", {}, [2.0, 0.5, 0.125], math.log(8)),
    # Nadir 1, μ = 1: F = K log Σ L_i, dF/dL_i = K / Σ L_j = 3/10.5 for every task.
    "stch-no-warmup": ("stch", {"stch_warmup_steps": 0}, [2 / 7, 2 / 7, 2 / 7], 3 * math.log(10.5)),
    # μ = 1/2: F = μK log Σ L_i^(1/μ) = 1.5 log Σ L_i², dF/dL_i = K L_i / Σ L_j² (Σ L² = 68.25).
    "stch-mu-0.5": ("stch", {"stch_warmup_steps": 0, "stch_mu": 0.5}, [1.5 / 68.25, 6 / 68.25, 24 / 68.25],
                    1.5 * math.log(68.25)),
}


def test_every_registered_strategy_pins_exact_values() -> None:
    assert {case[0] for case in EXACT_CASES.values()} == set(LOSS_LEVEL)


@pytest.mark.parametrize("case", list(EXACT_CASES), ids=list(EXACT_CASES))
def test_exact_values(case: str) -> None:
    name, hparams, expected_weights, expected_objective = EXACT_CASES[case]
    weighting = make(name, hparams)
    np.testing.assert_allclose(weighting.weights(FIXED_LOSSES), expected_weights, rtol=1e-12)
    objective = weighting.objective(torch.tensor(FIXED_LOSSES, dtype=torch.float64)).item()
    assert objective == pytest.approx(expected_objective, rel=1e-12)


# Scale invariance, checked on real parameter gradients --------------------------------------------


def _tiny_model_losses(seed: int) -> tuple[list[torch.nn.Parameter], torch.Tensor, torch.Tensor]:
    """A shared layer with a classification head (cross-entropy) and a regression head (MSE)."""
    torch.manual_seed(0)
    shared = torch.nn.Linear(4, 8, dtype=torch.float64)
    cls_head = torch.nn.Linear(8, 2, dtype=torch.float64)
    reg_head = torch.nn.Linear(8, 1, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 4, dtype=torch.float64, generator=generator)
    hidden = torch.tanh(shared(x))
    cls_loss = torch.nn.functional.cross_entropy(cls_head(hidden), torch.randint(0, 2, (16,), generator=generator))
    y = 3.0 * torch.randn(16, dtype=torch.float64, generator=generator)
    reg_loss = torch.nn.functional.mse_loss(reg_head(hidden).squeeze(-1), y)
    params = [*shared.parameters(), *cls_head.parameters(), *reg_head.parameters()]
    return params, cls_loss, reg_loss


def _combined_gradient(name: str, scale: float) -> torch.Tensor:
    """Σ_i w_i ∇_θ L_i with the regression loss (and its measured initial loss) multiplied by `scale`."""
    _, init_cls, init_reg = _tiny_model_losses(seed=1)  # "first batches", measured before the update
    params, cls_loss, reg_loss = _tiny_model_losses(seed=2)
    losses = [cls_loss, scale * reg_loss]
    weighting = build_weighting(name, [SST2, STSB], label_stats=LABEL_STATS, hparams=ESTIMATED)
    if weighting.needs_initial_losses:
        weighting.set_initial_losses([init_cls.item(), scale * init_reg.item()])
    weights = weighting.weights([loss.item() for loss in losses])
    combined = torch.zeros(sum(p.numel() for p in params), dtype=torch.float64)
    for weight, loss in zip(weights, losses):
        grads = torch.autograd.grad(loss, params, retain_graph=True, materialize_grads=True)
        combined += float(weight) * torch.cat([g.flatten() for g in grads])
    return combined


@pytest.mark.parametrize("name", ["init", "realtime", "geometric"])
@pytest.mark.parametrize("scale", [1e-3, 0.37, 7.5, 1e4])
def test_scaling_one_loss_leaves_the_update_unchanged(name: str, scale: float) -> None:
    torch.testing.assert_close(_combined_gradient(name, scale), _combined_gradient(name, 1.0), rtol=1e-10, atol=0)


def test_scale_check_detects_a_scale_dependent_strategy() -> None:
    assert not torch.allclose(_combined_gradient("equal", 7.5), _combined_gradient("equal", 1.0))


# Strategy-specific facts ----------------------------------------------------------------------------


def test_realtime_and_geometric_give_identical_weights() -> None:
    realtime, geometric = make("realtime", {}), make("geometric", {})
    for losses in random_losses():
        np.testing.assert_array_equal(realtime.weights(losses), geometric.weights(losses))


def _classification_task(num_labels: int, name: str = "task") -> TaskSpec:
    return TaskSpec(name=name, kind="classification", num_labels=num_labels, text_columns=("sentence",))


@pytest.mark.parametrize("num_labels", [2, 3, 5, 10])
def test_theoretical_init_is_log_k_for_k_classes(num_labels: int) -> None:
    weighting = build_weighting("init", [_classification_task(num_labels)])
    assert weighting.hparams()["initial_losses"] == {"task": pytest.approx(math.log(num_labels), rel=1e-15)}
    assert weighting.weights([1.0])[0] == pytest.approx(1 / math.log(num_labels), rel=1e-12)


def test_theoretical_init_is_mean_square_label_for_regression() -> None:
    stats = {"stsb": LabelStatistics(num_rows=3, mean=2.0, variance=2 / 3, mean_square=14 / 3)}  # labels 1, 2, 3
    weighting = build_weighting("init", [STSB], label_stats=stats)
    assert weighting.hparams() == {"init_losses": "theoretical", "initial_losses": {"stsb": 14 / 3}}
    assert weighting.weights([1.0])[0] == pytest.approx(3 / 14, rel=1e-12)


@pytest.mark.parametrize(
    "counts, entropy",
    [
        ([1, 1], LN2),
        ([3, 1], 2 * LN2 - 0.75 * LN3),
        ([5, 0, 5], LN2),  # an absent class contributes 0 · log 0 = 0
        ([1, 1, 1, 1], 2 * LN2),
        ([2, 1, 1], 1.5 * LN2),
    ],
)
def test_prior_is_label_entropy_for_classification(counts: list[int], entropy: float) -> None:
    task = _classification_task(len(counts))
    stats = {"task": LabelStatistics(num_rows=sum(counts), class_counts=np.array(counts))}
    weighting = build_weighting("prior", [task], label_stats=stats)
    assert weighting.hparams()["prior_losses"]["task"] == pytest.approx(entropy, rel=1e-12)
    assert weighting.weights([1.0])[0] == pytest.approx(1 / entropy, rel=1e-12)


def test_prior_is_label_variance_for_regression() -> None:
    stats = {"stsb": LabelStatistics(num_rows=4, mean=2.5, variance=1.25, mean_square=7.5)}  # labels 1, 2, 3, 4
    weighting = build_weighting("prior", [STSB], label_stats=stats)
    assert weighting.hparams() == {"prior_losses": {"stsb": 1.25}}
    assert weighting.weights([3.0])[0] == pytest.approx(0.8, rel=1e-12)


def _power(gamma: float, tasks: Sequence[TaskSpec] = TASKS) -> Weighting:
    return build_weighting("power", tasks, hparams={"gamma": gamma})


def _power_mean(gamma: float, losses: Sequence[float]) -> float:
    return _power(gamma).objective(torch.tensor(losses, dtype=torch.float64)).item()


def test_power_at_gamma_one_is_equal() -> None:
    equal = make("equal", {})
    for losses in random_losses():
        np.testing.assert_allclose(_power(1.0).weights(losses), equal.weights(losses), rtol=1e-12)
        assert _power_mean(1.0, losses) == pytest.approx(float(np.mean(losses)), rel=1e-12)


def test_power_at_gamma_zero_is_proportional_to_geometric() -> None:
    geometric = make("geometric", {})
    for losses in random_losses():
        ratio = _power(0.0).weights(losses) / geometric.weights(losses)
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-12)
        # the factor is F/K with F the geometric mean
        assert ratio[0] == pytest.approx(math.exp(np.mean(np.log(losses))) / 3, rel=1e-12)


@pytest.mark.parametrize("gamma", [1e-9, -1e-9, 1e-6, -1e-6])
def test_power_keeps_its_digits_near_the_geometric_limit(gamma: float) -> None:
    # log M_γ = mean(x) + γ var(x) / 2 + O(γ²) with x = log L: the first-order term must survive,
    # which a plain log-sum-exp − log K (cancelling to O(γ)) would lose at γ = 1e-9.
    for losses in random_losses():
        x = np.log(losses)
        slope = (math.log(_power_mean(gamma, losses)) - x.mean()) / gamma
        assert slope == pytest.approx(x.var() / 2, rel=1e-3, abs=1e-5)
        np.testing.assert_allclose(_power(gamma).weights(losses), _power(0.0).weights(losses), rtol=500 * abs(gamma))


def test_power_mean_is_non_decreasing_in_gamma() -> None:
    grid = sorted({*np.linspace(-60, 60, 121), *np.geomspace(1e-8, 2, 30), *-np.geomspace(1e-8, 2, 30), 0.0})
    for losses in random_losses():
        means = np.array([_power_mean(g, losses) for g in grid])
        assert np.all(np.diff(means) >= -1e-12 * means[1:])
        assert means[0] >= losses.min() * (1 - 1e-12) and means[-1] <= losses.max() * (1 + 1e-12)


@pytest.mark.parametrize("gamma, pick", [(200.0, np.max), (-200.0, np.min)])
def test_power_at_large_gamma_approaches_max_or_min(gamma: float, pick: Callable) -> None:
    for losses in random_losses():
        with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
            warnings.simplefilter("error")
            weighting = _power(gamma)
            weights = weighting.weights(losses)
            mean = weighting.objective(torch.tensor(losses, dtype=torch.float64)).item()
        assert np.all(np.isfinite(weights)) and math.isfinite(mean)
        assert abs(mean - pick(losses)) / pick(losses) < 0.02


def test_static_zero_weight_drops_the_task_from_the_update() -> None:
    weighting = build_weighting("static", TASKS, hparams={"task_weights": {**TASK_WEIGHTS, "mnli": 0}})
    assert weighting.task_log_factor(1, 2.0) == -math.inf
    np.testing.assert_array_equal(weighting.weights(FIXED_LOSSES), [1.0, 0.0, 2.0])


def test_log_based_strategies_clamp_tiny_losses() -> None:
    weighting = WEIGHTINGS["realtime"](TASKS, loss_epsilon=1e-6)
    np.testing.assert_allclose(weighting.weights([0.0, 1e-9, 2.0]), [1e6, 1e6, 0.5])
    assert weighting.num_clamped == 2


def test_init_estimated_waits_for_measured_losses() -> None:
    weighting = build_weighting("init", TASKS, label_stats=LABEL_STATS, hparams=ESTIMATED)
    assert weighting.needs_initial_losses
    assert weighting.hparams() == {"init_losses": "estimated", "initial_losses": None}
    weighting.set_initial_losses([0.25, 4.0, 10.0])
    assert not weighting.needs_initial_losses
    assert weighting.hparams()["initial_losses"] == {"sst2": 0.25, "mnli": 4.0, "stsb": 10.0}


# Registry ------------------------------------------------------------------------------------------


def test_registry_lists_the_seed_strategies_in_order() -> None:
    seeds = ["equal", "static", "init", "prior", "realtime", "geometric", "power"]
    assert list(WEIGHTINGS)[: len(seeds)] == seeds
    assert [name for name, _ in describe_weightings()] == list(WEIGHTINGS)
    for name, description in describe_weightings():
        assert description and "\n" not in description
        assert get_weighting_class(name).name == name
    assert get_weighting_class(" Geometric ") is WEIGHTINGS["geometric"]


def test_register_rejects_a_taken_or_missing_name() -> None:
    class Duplicate(Weighting):
        name = "equal"
        description = "another equal"

    class Nameless(Weighting):
        description = "no name"

    with pytest.raises(ValueError, match="'equal' .* already taken"):
        register(Duplicate)
    with pytest.raises(TypeError, match="name"):
        register(Nameless)
    assert WEIGHTINGS["equal"] is not Duplicate


# Error paths ---------------------------------------------------------------------------------------


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown strategy 'foo'\. Choose one of: equal, static, init, prior"):
        build_weighting("foo", TASKS)


@pytest.mark.parametrize("gamma", [math.nan, math.inf, -math.inf, "abc", None])
def test_power_rejects_a_non_finite_gamma(gamma: object) -> None:
    with pytest.raises(ValueError, match=rf"--gamma {re.escape(str(gamma))} is not finite; .*--gamma 0\.5"):
        _power(gamma)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "task_weights, match",
    [
        (None, r"--task_weights sst2=1,stsb=0\.5"),
        ({"sst2": 1.0, "mnli": 1.0}, r"no weight for task 'stsb'.*--task_weights"),
        ({**TASK_WEIGHTS, "qqp": 1.0}, r"'qqp'.*not among the tasks.*--task_weights"),
        ({**TASK_WEIGHTS, "mnli": -0.5}, r"task 'mnli' has weight -0\.5.*--task_weights"),
        ({**TASK_WEIGHTS, "stsb": math.nan}, r"task 'stsb' has weight nan.*--task_weights"),
        ({**TASK_WEIGHTS, "stsb": math.inf}, r"task 'stsb' has weight inf.*--task_weights"),
        ({**TASK_WEIGHTS, "sst2": "heavy"}, r"task 'sst2' has weight 'heavy'.*--task_weights"),
        ({"sst2": 0, "mnli": 0, "stsb": 0}, r"all task weights are 0.*--task_weights"),
    ],
)
def test_static_rejects_bad_task_weights(task_weights: dict | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_weighting("static", TASKS, hparams={"task_weights": task_weights})


@pytest.mark.parametrize(
    "task, stats",
    [
        (SST2, LabelStatistics(num_rows=4, class_counts=np.array([4, 0]))),
        (STSB, LabelStatistics(num_rows=3, mean=2.0, variance=0.0, mean_square=4.0)),
    ],
)
def test_prior_rejects_a_zero_prior_loss(task: TaskSpec, stats: LabelStatistics) -> None:
    with pytest.raises(ValueError, match=rf"task '{task.name}' has a prior loss .* 0.*--weighting init or realtime"):
        build_weighting("prior", [task], label_stats={task.name: stats})


@pytest.mark.parametrize("name, task", [("prior", SST2), ("prior", STSB), ("init", STSB)])
def test_missing_label_statistics_name_the_task(name: str, task: TaskSpec) -> None:
    with pytest.raises(ValueError, match=rf"task '{task.name}' .*label_stats"):
        build_weighting(name, [task])


def test_init_theoretical_rejects_all_zero_regression_labels() -> None:
    stats = {"stsb": LabelStatistics(num_rows=2, mean=0.0, variance=0.0, mean_square=0.0)}
    with pytest.raises(ValueError, match=r"task 'stsb' .*E\[y²\].*--init_estimate_batches N"):
        build_weighting("init", [STSB], label_stats=stats)


@pytest.mark.parametrize("name", [n for n in WEIGHTINGS if WEIGHTINGS[n].log_based])
def test_log_based_strategies_reject_a_negative_loss(name: str) -> None:
    weighting = make(name, next(iter(STRATEGY_HPARAMS.get(name, {"": {}}).values())))
    with pytest.raises(ValueError, match=r"task 'mnli' has a negative loss -0\.5"):
        weighting.weights([1.0, -0.5, 1.0])


@pytest.mark.parametrize("name", ["equal", "static"])
def test_linear_strategies_accept_a_negative_loss(name: str) -> None:
    weighting = make(name, {"task_weights": TASK_WEIGHTS})
    assert np.all(np.isfinite(weighting.weights([1.0, -0.5, 1.0])))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_every_strategy_rejects_a_non_finite_loss(variant: tuple[str, dict[str, Any]], bad: float) -> None:
    weighting = make(*variant)
    with pytest.raises(FloatingPointError, match=r"task 'stsb' has a non-finite loss"):
        weighting.weights([1.0, 1.0, bad])


@pytest.mark.parametrize("epsilon", [0.0, -1e-8, math.nan])
def test_constructor_rejects_a_non_positive_loss_epsilon(epsilon: float) -> None:
    with pytest.raises(ValueError, match="loss_epsilon"):
        WEIGHTINGS["realtime"](TASKS, loss_epsilon=epsilon)


def test_init_estimated_used_before_it_is_set() -> None:
    weighting = build_weighting("init", TASKS, hparams=ESTIMATED)
    with pytest.raises(RuntimeError, match="set_initial_losses"):
        weighting.weights(FIXED_LOSSES)
    with pytest.raises(RuntimeError, match="set_initial_losses"):
        weighting.objective(torch.tensor(FIXED_LOSSES))


@pytest.mark.parametrize(
    "losses, match",
    [
        ([1.0, 2.0], r"2 reference losses for 3 tasks"),
        ([1.0, 0.0, 2.0], r"task 'mnli' has a measured initial loss 0"),
        ([1.0, 2.0, math.nan], r"task 'stsb' has a measured initial loss nan"),
    ],
)
def test_init_rejects_bad_measured_losses(losses: list[float], match: str) -> None:
    weighting = build_weighting("init", TASKS, hparams=ESTIMATED)
    with pytest.raises(ValueError, match=match):
        weighting.set_initial_losses(losses)


def test_init_theoretical_does_not_take_measured_losses() -> None:
    with pytest.raises(ValueError, match="--init_estimate_batches N"):
        make("init", {}).set_initial_losses([1.0, 1.0, 1.0])


@pytest.mark.parametrize("batches", [-1, 1.5, "two"])
def test_init_rejects_a_bad_number_of_estimate_batches(batches: object) -> None:
    with pytest.raises(ValueError, match=rf"--init_estimate_batches must be a whole number >= 0 .*got {re.escape(repr(batches))}"):
        build_weighting("init", TASKS, hparams={"init_estimate_batches": batches})


def test_loading_a_checkpoint_of_other_tasks_fails() -> None:
    state = make("init", ESTIMATED).state_dict()
    other = build_weighting("init", [SST2, MNLI], hparams=ESTIMATED)
    with pytest.raises(ValueError, match="same --tasks"):
        other.load_state_dict(state)


# Hyperparameters: declared by each strategy, derived into flags by the registry -----------------------

#: Flags a strategy cannot run without (its defaults are refused on purpose).
REQUIRED_HPARAMS: dict[str, dict[str, Any]] = {"static": {"task_weights": "sst2=1,mnli=0.5,stsb=2"}}


def _arguments(**values: Any) -> MultiTaskTrainingArguments:
    return MultiTaskTrainingArguments(output_dir="unused", report_to="none", **values)


def test_required_hparams_name_exactly_the_strategies_without_usable_defaults() -> None:
    unusable = set()
    for name, cls in WEIGHTINGS.items():
        try:
            cls.Config()
        except ValueError:
            unusable.add(name)
    assert unusable == set(REQUIRED_HPARAMS)


@pytest.mark.parametrize("name", list(WEIGHTINGS))
def test_declared_hparams_are_training_arguments_with_the_same_default(name: str) -> None:
    cls = WEIGHTINGS[name]
    arg_fields = {f.name: f for f in dataclasses.fields(MultiTaskTrainingArguments)}
    for declared in dataclasses.fields(cls.Config):
        assert declared.name in arg_fields, f"--{declared.name} of {name} is not a training argument"
        assert arg_fields[declared.name].default == declared.default
        assert arg_fields[declared.name].metadata["help"] == declared.metadata["help"]
        assert arg_fields[declared.name].metadata.get("choices") == declared.metadata.get("choices")
        assert name in hparam_flags()[declared.name].strategies
    args = _arguments(weighting=name, seed=11, **REQUIRED_HPARAMS.get(name, {}))
    weighting = build_weighting(name, TASKS, LABEL_STATS, args.weighting_hparams(), seed=args.seed)
    assert isinstance(weighting, cls) and isinstance(weighting.config, cls.Config)
    assert [f.name for f in dataclasses.fields(weighting.config)] == [f.name for f in dataclasses.fields(cls.Config)]
    if cls.randomised:
        assert weighting.seed == 11  # type: ignore[attr-defined]


def test_the_flags_are_the_union_of_the_declarations() -> None:
    declared = {f.name for cls in WEIGHTINGS.values() for f in dataclasses.fields(cls.Config)}
    assert set(hparam_flags()) == declared
    assert set(_arguments().weighting_hparams()) == declared
    assert hparam_flags()["weighting_lr"].strategies == ("uncertainty", "gradnorm", "famo", "imtl_l", "imtl_h")
    assert hparam_flags()["mgda_normalization"].choices == ("none", "l2", "loss", "loss+l2", "loss+")
    assert hparam_flags()["norm_scope"].choices == ("all", "shared")


def test_build_rejects_hparams_no_strategy_declares() -> None:
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) gama, seed; the strategy flags are: .*gamma"):
        build_weighting("power", TASKS, hparams={"gama": 2.0, "seed": 1})


def test_each_part_of_a_composition_takes_its_own_hparams() -> None:
    hparams = {**_arguments().weighting_hparams(), "gamma": 2.0, "norm_scale": "max", "cagrad_c": 0.1}
    composed = build_weighting("power+grad_normalize", TASKS, hparams=hparams)
    assert composed.hparams() == {"loss": {"name": "power", "gamma": 2.0},
                                  "gradient": {"name": "grad_normalize", "norm_scope": "all", "norm_scale": "max"}}
    assert build_weighting("rlw+pcgrad", TASKS, seed=4).hparams() == {
        "loss": {"name": "rlw", "seed": 4}, "gradient": {"name": "pcgrad", "seed": 4, "reduction": "sum"}}


def test_registration_refuses_a_flag_declared_twice_differently() -> None:
    class OtherGamma(Weighting):
        name = "other_gamma"
        description = "declares --gamma with another default"

        @dataclass
        class Config(WeightingConfig):
            gamma: float = field(default=1.0, metadata={"help": "another gamma"})

    class Helpless(Weighting):
        name = "helpless"
        description = "a flag without help"

        @dataclass
        class Config(WeightingConfig):
            strength: float = 1.0

    with pytest.raises(ValueError, match=r"'other_gamma' declares --gamma as .* = 1\.0, but it is already declared as .* = 0\.5 by power"):
        register(OtherGamma)
    with pytest.raises(TypeError, match=r"Helpless\.Config\.strength: .*help"):
        register(Helpless)
    assert "other_gamma" not in WEIGHTINGS and "helpless" not in WEIGHTINGS

    class SameGamma(Weighting):  # the same declaration is one shared flag
        name = "same_gamma"
        description = "declares --gamma exactly as power does"
        Config = WEIGHTINGS["power"].Config

    try:
        register(SameGamma)
        assert hparam_flags()["gamma"].strategies == ("power", "same_gamma")
    finally:
        WEIGHTINGS.pop("same_gamma", None)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"weighting": "power", "gamma": math.inf}, r"--gamma inf is not finite"),
        ({"weighting": "cagrad", "cagrad_c": -0.1}, r"--cagrad_c must be a finite number >= 0 .*got -0\.1"),
        ({"weighting": "geometric+db_mtl", "db_beta": 1.0}, r"--db_beta must be in \[0, 1\) .*got 1\.0"),
        ({"weighting": "static"}, r"--weighting static needs one weight per task; pass e\.g\. --task_weights"),
        ({"weighting": "static", "task_weights": "sst2=1,stsb"}, r"--task_weights: cannot read 'stsb'"),
        ({"weighting": "dwa", "dwa_window": 0}, r"--dwa_window must be a whole number .*got 0"),
        ({"weighting": "grad_normalize", "norm_scope": "heads"}, r"--norm_scope 'heads' is not one of: all, shared"),
        ({"weighting": "init", "init_estimate_batches": -1}, r"--init_estimate_batches must be .*got -1"),
        ({"weighting": "stch", "stch_mu": 0.0}, r"--stch_mu must be a positive temperature .*got 0\.0"),
        ({"weighting": "stch", "stch_warmup_steps": -1}, r"--stch_warmup_steps must be a whole number .*got -1"),
        ({"weighting": "mgda", "mgda_normalization": "loss+l1"}, r"--mgda_normalization 'loss\+l1' is not one of"),
        ({"weighting": "fairgrad", "fairgrad_alpha": 20.0}, r"--fairgrad_alpha must be a number in \[0\.1, 10\]"),
    ],
)
def test_arguments_validate_the_chosen_strategys_hparams_by_flag(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _arguments(**values)


def test_command_line_parses_the_derived_flags() -> None:
    from hf_mtl.arguments import parse_train_args

    _, _, args = parse_train_args(["--output_dir", "unused", "--tasks", "sst2", "--weighting", "grad_normalize",
                                   "--norm_scope", "shared", "--norm_scale", "max", "--weighting_lr", "0.1"])
    assert (args.norm_scope, args.norm_scale, args.weighting_lr) == ("shared", "max", 0.1)
    # The MGDA-UB code's spelling `loss+` is accepted and stands for loss+l2.
    _, _, args = parse_train_args(["--output_dir", "unused", "--tasks", "sst2", "--weighting", "mgda",
                                   "--mgda_normalization", "loss+"])
    assert args.mgda_normalization == "loss+" and args.weighting_hparams()["mgda_normalization"] == "loss+"
    assert build_weighting("mgda", TASKS, hparams=args.weighting_hparams()).normalization == "loss+l2"
    with pytest.raises(SystemExit):
        parse_train_args(["--output_dir", "unused", "--norm_scope", "heads"])
    with pytest.raises(ValueError, match="--gamma inf is not finite"):
        parse_train_args(["--output_dir", "unused", "--weighting", "power", "--gamma", "inf"])


@pytest.mark.parametrize(
    "values, expected",
    [
        ({"weighting": "geometric", "gamma": 2.0}, ["--gamma is not used by --weighting geometric; it is used by: power."]),
        ({"weighting": "equal", "task_weights": "sst2=1"},
         ["--task_weights is not used by --weighting equal; it is used by: static."]),
        ({"weighting": "pcgrad", "weighting_lr": 0.1, "cagrad_c": 0.4},
         ["--weighting_lr is not used by --weighting pcgrad; it is used by: uncertainty, gradnorm, famo, imtl_l, imtl_h."]),
        ({"weighting": "power", "gamma": 2.0}, []),
        ({"weighting": "geometric+grad_normalize", "norm_scale": "max"}, []),
        ({"weighting": "famo", "weighting_lr": 0.1, "famo_weight_decay": 0.0}, []),
    ],
)
def test_a_flag_the_chosen_strategy_ignores_warns(values: dict[str, Any], expected: list[str],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hf_mtl.training_args"):
        _arguments(**values)
    assert [r.getMessage() for r in caplog.records if "is not used by" in r.getMessage()] == expected


@pytest.mark.parametrize(
    "values, message",
    [
        ({"weighting": "equal", "task_weights": "sst2:1"}, r"--task_weights: cannot read 'sst2:1'"),
        ({"weighting": "geometric", "gamma": math.nan}, r"--gamma nan is not finite"),
        ({"weighting": "pcgrad", "norm_scale": "huge"}, r"--norm_scale 'huge' is not one of"),
    ],
)
def test_a_malformed_flag_is_an_error_even_when_the_strategy_ignores_it(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _arguments(**values)
