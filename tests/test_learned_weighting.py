"""Strategies that learn or change during training: uncertainty, GradNorm, DWA, RLW, FAMO, IMTL-L, STCH.

The shared property suite (tests/test_weighting.py) sees them in their initial state. Here: the same
properties along a scripted run of observe/update steps, exact hand-worked values for each strategy,
and the real trainer with a tiny model: they train, log, put their parameters in the optimizer, and a
run resumed from a checkpoint ends where an uninterrupted run does.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from hf_mtl.engine import TaskByTaskStep
from hf_mtl.sampling import TaskCollator
from hf_mtl.weighting import build_weighting

import conftest
from conftest import tiny_model

LEARNED = ["uncertainty", "gradnorm", "dwa", "rlw", "famo", "imtl_l", "stch"]
#: Short windows and warm-ups, so that a scripted run of a few steps crosses them.
RUN_HPARAMS = {"dwa_window": 2, "stch_warmup_steps": 3}
TASKS = conftest.WEIGHTING_TASKS
SST2, MNLI, STSB = TASKS


def make(name, tasks=TASKS, seed=0, **hparams):
    """`name` built with these flags (each strategy takes its own) and `seed` (used by rlw)."""
    return build_weighting(name, tasks, hparams=hparams, seed=seed)


def autograd_weights(weighting, losses):
    tensor = torch.tensor(losses, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(weighting.objective(tensor), tensor)
    return grad.numpy()


def sgd_update(weighting, lr=0.3):
    """What the trainer's optimizer does with the gradients `observe` set (plain SGD: no state to copy)."""
    with torch.no_grad():
        for p in weighting.parameters():
            if p.grad is not None:
                p -= lr * p.grad
                p.grad = None


def step(weighting, losses, norms):
    """One engine step: task factors, observe, then the common factor (the engine's order). Returns the
    step's weights and checks that they are the gradient of the objective, before and after observe
    (the optimizer, not observe, changes learned values; RLW draws the next weights when they are next asked for)."""
    weights = weighting.weights(losses)
    np.testing.assert_allclose(weights, autograd_weights(weighting, losses), rtol=1e-12)
    log_factors = [weighting.task_log_factor(i, loss) for i, loss in enumerate(losses)]
    weighting.observe(list(losses), list(norms) if weighting.probes_last_shared_layer else None)
    common = weighting.common_log_factor(list(losses))
    np.testing.assert_allclose(np.exp(np.array(log_factors) + common), weights, rtol=1e-12)
    if weighting.name != "dwa":  # a DWA window that closes in observe sets the next step's weights at once
        np.testing.assert_allclose(autograd_weights(weighting, losses), weights, rtol=1e-12)
    return weights


def scripted_run(weighting, steps, seed=0, start=0):
    rng = np.random.default_rng(seed)
    draws = [(np.exp(rng.uniform(-2, 2, 3)), np.exp(rng.uniform(-3, 1, 3))) for _ in range(steps)]
    history = []
    for losses, norms in draws[start:]:
        history.append(step(weighting, losses, norms))
        sgd_update(weighting)
    return np.array(history)


# Properties along a run -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", LEARNED)
def test_factors_observe_and_objective_agree_along_a_run(name):
    weighting = make(name, **RUN_HPARAMS)
    history = scripted_run(weighting, 9)
    assert np.all(np.isfinite(history)) and np.all(history > 0)
    assert not np.allclose(history[0], history[-1]), "the weights never changed: the run tested nothing"
    if name in ("gradnorm", "dwa"):
        np.testing.assert_allclose(history.sum(1), 3.0, rtol=1e-12)
    if name in ("rlw", "famo"):
        np.testing.assert_allclose(history.sum(1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("name", LEARNED)
def test_state_restored_from_json_continues_identically(name):
    reference = make(name, **RUN_HPARAMS)
    expected = scripted_run(reference, 8)
    interrupted = make(name, **RUN_HPARAMS)
    scripted_run(interrupted, 5)
    state = json.loads(json.dumps(interrupted.state_dict()))
    resumed = make(name, **RUN_HPARAMS)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    np.testing.assert_array_equal(scripted_run(resumed, 8, start=5), expected[5:])


@pytest.mark.parametrize("name", ["uncertainty", "gradnorm", "famo", "imtl_l"])
def test_learned_values_load_in_place_and_check_the_tasks(name):
    weighting = make(name)
    parameter = weighting.parameters()[0]
    state = weighting.state_dict()
    state[weighting.state_key] = {"sst2": 0.5, "mnli": 1.5, "stsb": 1.0}
    weighting.load_state_dict(state)
    assert weighting.parameters()[0] is parameter  # the optimizer keeps a reference to it
    assert parameter.tolist() == [0.5, 1.5, 1.0]
    with pytest.raises(ValueError, match="same --tasks"):
        make(name, tasks=[SST2, STSB]).load_state_dict(state)


@pytest.mark.parametrize(
    "name, field, value",
    [
        ("uncertainty", "weighting_lr", 0.0), ("gradnorm", "gradnorm_alpha", -1.0), ("dwa", "dwa_window", 2.5),
        ("dwa", "dwa_temperature", 0.0), ("famo", "famo_weight_decay", math.nan), ("famo", "weighting_lr", -1.0),
        ("imtl_l", "weighting_lr", 0.0), ("stch", "stch_mu", -1.0), ("stch", "stch_warmup_steps", 1.5),
    ],
)
def test_bad_hparams_name_the_flag(name, field, value):
    with pytest.raises(ValueError, match=rf"--{field} must be .*got {value!r}"):
        make(name, **{field: value})


@pytest.mark.parametrize("seed", [-1, 1.5, "3"])
def test_rlw_rejects_a_bad_seed(seed):
    with pytest.raises(ValueError, match=rf"weighting 'rlw': --seed must be a whole number >= 0 .*got {seed!r}"):
        make("rlw", seed=seed)


# uncertainty -----------------------------------------------------------------------------------------


def test_uncertainty_exact_values_and_observe_sets_the_objective_gradient():
    weighting = make("uncertainty")
    weighting.load_state_dict({"log_variances": {"sst2": 0.0, "mnli": math.log(2), "stsb": -1.0}})
    losses = [0.5, 2.0, 8.0]
    np.testing.assert_allclose(weighting.weights(losses), [1.0, 0.5, math.e], rtol=1e-12)
    objective = weighting.objective(torch.tensor(losses, dtype=torch.float64))
    assert objective.item() == pytest.approx(0.5 + 1.0 + 8 * math.e + math.log(2) - 1.0, rel=1e-12)

    (expected,) = torch.autograd.grad(objective, weighting.parameters())
    weighting.observe(losses)
    s_grad = weighting.parameters()[0].grad
    torch.testing.assert_close(s_grad, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(s_grad, torch.tensor([0.5, 0.0, 1 - 8 * math.e], dtype=torch.float64))


def test_uncertainty_moves_each_log_variance_toward_the_log_loss():
    weighting = make("uncertainty")
    for _ in range(300):
        weighting.observe([0.5, 2.0, 8.0])
        sgd_update(weighting, lr=0.05)
    np.testing.assert_allclose(weighting.parameters()[0].tolist(), np.log([0.5, 2.0, 8.0]), atol=1e-3)


# gradnorm --------------------------------------------------------------------------------------------


def test_gradnorm_hand_worked_gradient_and_renormalisation():
    weighting = make("gradnorm", tasks=[SST2, STSB])
    w = weighting.parameters()[0]
    weighting.observe([2.0, 1.0], [3.0, 1.0])  # step 0 sets L(0); r = 1, G = [3, 1], target Ḡ = 2
    assert w.grad.tolist() == [3.0, -1.0]
    assert weighting.state_dict()["initial_losses"] == {"sst2": 2.0, "stsb": 1.0}

    # An update leaves w = [3, 1]; every factor reads it renormalised to sum K = 2.
    with torch.no_grad():
        w.copy_(torch.tensor([3.0, 1.0]))
    np.testing.assert_allclose(weighting.weights([1.0, 1.0]), [1.5, 0.5], rtol=1e-15)
    # Step 1: L/L(0) = [1/2, 1], r = [2/3, 4/3]; G = w·n = [1.5·1, 0.5·4] = [1.5, 2], Ḡ = 1.75,
    # targets 1.75·(2/3)^1.5 ≈ 0.95 and 1.75·(4/3)^1.5 ≈ 2.69: G_1 above, G_2 below its target.
    weighting.observe([1.0, 1.0], [1.0, 4.0])
    assert w.tolist() == [1.5, 0.5]
    assert w.grad.tolist() == [1.0, -4.0]


@pytest.mark.parametrize("alpha, expected", [(0.0, [0.0, 0.0]), (1.5, [2.0, -2.0]), (3.0, [2.0, -2.0])])
def test_gradnorm_alpha_sets_the_targets(alpha, expected):
    # Equal G = [2, 2]; r = [2/3, 4/3] (one loss halved): α = 0 makes every target Ḡ = G (no gradient),
    # α > 0 lowers the target of the faster task and raises the slower one's.
    weighting = make("gradnorm", tasks=[SST2, STSB], gradnorm_alpha=alpha)
    weighting.observe([1.0, 1.0], [2.0, 2.0])
    weighting.observe([0.5, 1.0], [2.0, 2.0])
    assert weighting.parameters()[0].grad.tolist() == expected


def test_gradnorm_keeps_a_weight_pushed_below_zero_positive():
    weighting = make("gradnorm", tasks=[SST2, STSB])
    with torch.no_grad():
        weighting.parameters()[0].copy_(torch.tensor([-0.3, 2.0]))
    weights = weighting.weights([1.0, 1.0])
    # raised to 1e-6 · max |w| = 2e-6, then renormalised to sum 2
    assert weights[0] == pytest.approx(4e-6 / (2 + 2e-6), rel=1e-12) and weights.sum() == pytest.approx(2.0, rel=1e-15)
    weighting.observe([1.0, 1.0], [1.0, 1.0])  # writes the renormalised values back: a fixed point
    np.testing.assert_allclose(weighting.weights([1.0, 1.0]), weights, rtol=1e-15)


def test_gradnorm_needs_the_probe_norms():
    with pytest.raises(ValueError, match="probe_norms"):
        make("gradnorm").observe([1.0, 1.0, 1.0])


# dwa -------------------------------------------------------------------------------------------------


def test_dwa_is_equal_until_two_windows_then_softmax_of_ratios():
    weighting = make("dwa", tasks=[SST2, STSB], dwa_window=2)
    losses = [[1.0, 4.0], [3.0, 4.0], [1.0, 4.0], [1.0, 2.0], [5.0, 5.0]]
    for step_losses in losses[:4]:
        assert weighting.weights(step_losses).tolist() == [1.0, 1.0]
        weighting.observe(step_losses)
    # windows: means [2, 4] then [1, 3]; r = [1/2, 3/4]; w = 2 softmax(r / 2)
    expected = 2 * np.exp([0.25, 0.375]) / (math.exp(0.25) + math.exp(0.375))
    np.testing.assert_allclose(weighting.weights([9.0, 9.0]), expected, rtol=1e-14)
    weighting.observe(losses[4])  # half a window: unchanged
    np.testing.assert_allclose(weighting.weights([9.0, 9.0]), expected, rtol=1e-14)
    assert weighting.state_dict()["window_steps"] == 1


# rlw -------------------------------------------------------------------------------------------------


def rlw_stream(weighting, steps):
    out = []
    for _ in range(steps):
        out.append(weighting.weights([1.0, 1.0, 1.0]))
        weighting.observe([1.0, 1.0, 1.0])
    return np.array(out)


def test_rlw_reproducible_fresh_every_step_and_sums_to_one():
    first, again = rlw_stream(make("rlw", seed=7), 6), rlw_stream(make("rlw", seed=7), 6)
    np.testing.assert_array_equal(first, again)
    assert len({tuple(w) for w in first}) == 6
    np.testing.assert_allclose(first.sum(1), 1.0, rtol=1e-15)
    assert not np.allclose(rlw_stream(make("rlw", seed=8), 1)[0], first[0])
    # The draw of step t is softmax of the t-th standard-normal triple, in alphabetical task order.
    z = np.random.default_rng(7).standard_normal((6, 3))[:, [1, 0, 2]]  # tasks sst2, mnli, stsb
    np.testing.assert_allclose(first, np.exp(z) / np.exp(z).sum(1, keepdims=True), rtol=1e-14)


def test_rlw_weights_stay_fixed_within_a_step():
    weighting = make("rlw")
    weights = weighting.weights([0.5, 2.0, 8.0])
    np.testing.assert_array_equal(weighting.weights([3.0, 1.0, 7.0]), weights)
    weighting.observe([0.5, 2.0, 8.0])
    np.testing.assert_allclose(autograd_weights(weighting, [1.0, 1.0, 1.0]), weights, rtol=1e-15)
    assert not np.allclose(weighting.weights([0.5, 2.0, 8.0]), weights)


def test_rlw_state_restores_the_stream_exactly():
    expected = rlw_stream(make("rlw", seed=3), 7)
    interrupted = make("rlw", seed=3)
    rlw_stream(interrupted, 4)
    resumed = make("rlw", seed=3)
    resumed.load_state_dict(json.loads(json.dumps(interrupted.state_dict())))
    np.testing.assert_array_equal(rlw_stream(resumed, 3), expected[4:])


def test_rlw_task_order_does_not_change_a_task_weight():
    forward, backward = make("rlw", tasks=TASKS), make("rlw", tasks=TASKS[::-1])
    np.testing.assert_allclose(rlw_stream(backward, 3)[:, ::-1], rlw_stream(forward, 3), rtol=1e-14)


# imtl_l ----------------------------------------------------------------------------------------------


def test_imtl_l_exact_values_and_observe_sets_the_objective_gradient():
    weighting = make("imtl_l")
    weighting.load_state_dict({"loss_scales": {"sst2": 0.0, "mnli": math.log(2), "stsb": -1.0}})
    losses = [0.5, 2.0, 8.0]
    np.testing.assert_allclose(weighting.weights(losses), [1.0, 2.0, 1 / math.e], rtol=1e-12)
    objective = weighting.objective(torch.tensor(losses, dtype=torch.float64))
    assert objective.item() == pytest.approx(0.5 + 4.0 + 8 / math.e - math.log(2) + 1.0, rel=1e-12)

    (expected,) = torch.autograd.grad(objective, weighting.parameters())
    weighting.observe(losses)
    s_grad = weighting.parameters()[0].grad
    torch.testing.assert_close(s_grad, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(s_grad, torch.tensor([-0.5, 3.0, 8 / math.e - 1], dtype=torch.float64))


def test_imtl_l_drives_every_scaled_loss_to_one():
    weighting = make("imtl_l")
    for _ in range(300):
        weighting.observe([0.5, 2.0, 8.0])
        sgd_update(weighting, lr=0.05)
    np.testing.assert_allclose(weighting.parameters()[0].tolist(), -np.log([0.5, 2.0, 8.0]), atol=1e-3)
    np.testing.assert_allclose(weighting.weights([0.5, 2.0, 8.0]) * [0.5, 2.0, 8.0], 1.0, atol=1e-3)


# stch ------------------------------------------------------------------------------------------------


def test_stch_warms_up_on_log_losses_then_normalises_by_their_mean():
    """Two warm-up steps (weights 1/L_i, nadir = their mean losses); the third step, and not a factor earlier,
    uses F = μK log Σ exp(log(L_i/L̄_i)/μ): dF/dL_i = K softmax(z)_i / L_i."""
    weighting = make("stch", stch_warmup_steps=2, stch_mu=0.5)
    warmup = [[1.0, 4.0, 0.5], [3.0, 2.0, 1.5]]
    for losses in warmup:
        np.testing.assert_allclose(weighting.weights(losses), 1 / np.array(losses), rtol=1e-12)
        factors = [weighting.task_log_factor(i, loss) for i, loss in enumerate(losses)]
        weighting.observe(losses)
        # The warm-up closed in observe: this step's common factor and objective stay the warm-up's.
        np.testing.assert_allclose(np.exp(np.array(factors) + weighting.common_log_factor(losses)), 1 / np.array(losses))
        np.testing.assert_allclose(autograd_weights(weighting, losses), 1 / np.array(losses), rtol=1e-12)
    nadir = np.mean(warmup, axis=0)
    np.testing.assert_allclose(weighting.nadir, nadir, rtol=1e-15)
    losses = np.array([1.0, 1.0, 2.0])
    z = np.log(losses / nadir) / 0.5
    expected = 3 * np.exp(z) / np.exp(z).sum() / losses
    np.testing.assert_allclose(weighting.weights(losses), expected, rtol=1e-12)
    np.testing.assert_allclose(autograd_weights(weighting, losses), expected, rtol=1e-12)
    objective = weighting.objective(torch.tensor(losses, dtype=torch.float64)).item()
    assert objective == pytest.approx(0.5 * 3 * np.log(np.exp(z).sum()), rel=1e-12)


def test_stch_tends_to_the_worst_task_as_mu_shrinks():
    """μ → 0: all weight on the task with the largest normalised loss (Tchebycheff); losses 1e-8 to 1e8 stay finite."""
    weighting = make("stch", stch_warmup_steps=0, stch_mu=1e-3)
    weights = weighting.weights([1e-8, 1e8, 1.0]) * [1e-8, 1e8, 1.0]
    np.testing.assert_allclose(weights, [0.0, 3.0, 0.0], atol=1e-12)


def test_stch_is_invariant_to_one_loss_scale_once_the_nadir_is_measured():
    def run(scale):
        weighting = make("stch", stch_warmup_steps=2)
        for losses in ([1.0, 4.0, 0.5], [3.0, 2.0, 1.5]):
            weighting.weights([losses[0], losses[1] * scale, losses[2]])
            weighting.observe([losses[0], losses[1] * scale, losses[2]])
        return weighting.weights([1.0, 2.0 * scale, 0.25]) * [1.0, scale, 1.0]  # dF/dθ uses w_i ∇(c L_i)

    np.testing.assert_allclose(run(1e4), run(1.0), rtol=1e-12)


# famo ------------------------------------------------------------------------------------------------


def test_famo_hand_worked_logit_update():
    weighting = make("famo")
    xi = weighting.parameters()[0]
    optimizer = torch.optim.AdamW([xi], lr=0.025, weight_decay=0.0)  # what the trainer adds for it
    weighting.observe([1.0, 1.0, 1.0])
    assert xi.grad is None  # no previous loss yet
    # δ = log L(t−1) − log L(t) = [1, 0, 0]; z = 1/3; J_zᵀδ = z (δ − z·δ) = [2/9, −1/9, −1/9]; ξ = 0: no decay
    weighting.observe([math.exp(-1), 1.0, 1.0])
    torch.testing.assert_close(xi.grad, torch.tensor([2 / 9, -1 / 9, -1 / 9], dtype=torch.float64), rtol=1e-14, atol=0)
    optimizer.step()  # Adam's first step moves each logit by lr against the sign of its gradient
    torch.testing.assert_close(xi.detach(), torch.tensor([-0.025, 0.025, 0.025], dtype=torch.float64), rtol=1e-6, atol=0)
    # the task that improved now weighs less: z ∝ e^ξ, and dF/dL_i ∝ z_i / L_i
    weights = weighting.weights([1.0, 1.0, 1.0])
    np.testing.assert_allclose(weights, np.exp([-0.025, 0.025, 0.025]) / np.exp([-0.025, 0.025, 0.025]).sum(), rtol=1e-6)

    # with ξ ≠ 0 the coupled decay γ ξ joins the gradient; unchanged losses (δ = 0) leave only it
    weighting.observe([math.exp(-1), 1.0, 1.0])
    torch.testing.assert_close(xi.grad, 0.001 * xi.detach(), rtol=1e-14, atol=0)


# The real trainer --------------------------------------------------------------------------------------

TRAIN_TASKS = conftest.TASKS


@pytest.fixture(scope="module")
def datasets(glue_dir, tokenizer):
    return conftest.tokenized_glue(glue_dir, tokenizer, eval_rows=8)[0]


def make_trainer(output_dir, datasets, tokenizer, name, **overrides):
    args = conftest.training_arguments(output_dir, **{"weighting": name, "max_steps": 3, "learning_rate": 1e-3,
                                                      "optim": "adamw_torch", **overrides})
    weighting = build_weighting(name, TRAIN_TASKS, hparams={"dwa_window": 1, "stch_warmup_steps": 1}, seed=3)
    return conftest.make_trainer(args, datasets, tokenizer, weighting=weighting)


@pytest.mark.parametrize("name", LEARNED)
def test_trainer_trains_logs_and_optimizes_the_strategy_parameters(name, tmp_path, datasets, tokenizer):
    trainer = make_trainer(tmp_path, datasets, tokenizer, name)
    initial = [p.detach().clone() for p in trainer.weighting.parameters()]
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 3
    weights = np.array([[h[f"weight_{t.name}"] for t in TRAIN_TASKS] for h in logs])
    assert np.all(np.isfinite(weights)) and np.all(weights > 0)
    if name in ("rlw", "famo"):
        np.testing.assert_allclose(weights.sum(1), 1.0, rtol=1e-6)
    if name in ("gradnorm", "dwa"):
        np.testing.assert_allclose(weights.sum(1), 3.0, rtol=1e-6)
    if name in ("uncertainty", "gradnorm", "dwa", "imtl_l"):
        assert weights[0].tolist() == [1.0, 1.0, 1.0]  # s = 0, w = 1, no DWA window yet
    assert not np.allclose(weights[0], weights[-1]), "the weights never changed"
    assert len(initial) == (1 if name in ("uncertainty", "gradnorm", "famo", "imtl_l") else 0)
    for before, after in zip(initial, trainer.weighting.parameters()):
        assert not torch.equal(before, after.detach()), "the strategy's parameters did not move"
        groups = [g for g in trainer.optimizer.param_groups if any(p is after for p in g["params"])]
        assert len(groups) == 1 and groups[0]["lr"] == 0.025 and groups[0]["weight_decay"] == 0.0


@pytest.mark.parametrize("parts", [1, 2])
def test_gradnorm_receives_each_task_gradient_norm_on_the_pooler(parts, datasets, tokenizer):
    model = tiny_model(TRAIN_TASKS).eval()
    weighting = build_weighting("gradnorm", TRAIN_TASKS)
    with torch.no_grad():  # unequal factors: the engine must divide them out of the probed gradient
        weighting.parameters()[0].copy_(torch.tensor([0.5, 2.0, 0.5]))
    seen = []
    observe = weighting.observe
    weighting.observe = lambda losses, norms=None: (seen.append(norms), observe(losses, norms))
    collate, size = TaskCollator(tokenizer), 8 // parts
    batches = [{t.name: collate([datasets[t.name][i] for i in range(p * size, (p + 1) * size)]) for t in TRAIN_TASKS}
               for p in range(parts)]
    TaskByTaskStep(weighting, [t.name for t in TRAIN_TASKS], Accelerator(cpu=True))(model, batches, step=0)

    full = {t.name: collate([datasets[t.name][i] for i in range(8)]) for t in TRAIN_TASKS}
    pooler = model.encoder.pooler.dense.weight
    expected = [torch.autograd.grad(model(**full[t.name]).loss, pooler)[0].norm().item() for t in TRAIN_TASKS]
    assert seen[0] == pytest.approx(expected, rel=1e-5)


def _assert_states_close(actual, expected, path="state"):
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys(), path
        for key in expected:
            _assert_states_close(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected)):
            _assert_states_close(a, e, f"{path}[{i}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-6, abs=1e-12), path
    else:
        assert actual == expected, path


@pytest.mark.parametrize("name", LEARNED)
def test_resumed_run_matches_an_uninterrupted_one(name, tmp_path, datasets, tokenizer):
    full = make_trainer(tmp_path / "full", datasets, tokenizer, name, max_steps=4)
    full.train()
    first = make_trainer(tmp_path / "part", datasets, tokenizer, name, max_steps=2, save_strategy="steps", save_steps=2)
    first.train()
    resumed = make_trainer(tmp_path / "part", datasets, tokenizer, name, max_steps=4)
    resumed.train(resume_from_checkpoint=str(tmp_path / "part" / "checkpoint-2"))
    assert resumed.state.global_step == 4
    _assert_states_close(resumed.weighting.state_dict(), full.weighting.state_dict())
    for (n, p_full), p_resumed in zip(full.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(p_resumed, p_full, rtol=1e-6, atol=1e-7, msg=n)
    full_logs = [h for h in full.state.log_history if "loss" in h]
    resumed_logs = [h for h in resumed.state.log_history if "loss" in h]
    for key in [f"weight_{t.name}" for t in TRAIN_TASKS]:
        assert resumed_logs[-1][key] == pytest.approx(full_logs[-1][key], rel=1e-6)
