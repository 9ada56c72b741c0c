"""The task-by-task step against a one-graph reference, for every strategy, with and without accumulation."""

from __future__ import annotations

import math

import pytest
import torch
from accelerate import Accelerator

from hf_mtl.data import cap_rows, label_statistics, load_task_splits, tokenize_splits
from hf_mtl.engine import TaskByTaskStep
from hf_mtl.sampling import TaskCollator
from hf_mtl.weighting import WEIGHTINGS, build_weighting

from conftest import TASKS, tiny_model

ROWS = 8


@pytest.fixture(scope="module")
def task_rows(glue_dir, tokenizer):
    """The first ROWS training rows of each task, tokenised by the real MiniLM tokenizer."""
    rows = {}
    for spec in TASKS:
        splits = tokenize_splits(cap_rows(load_task_splits(spec, glue_dir), ROWS, ROWS), spec, tokenizer, 64)
        rows[spec.name] = splits["train"]
    return rows


def make_weighting(name, task_rows, **hparams):
    stats = {t.name: label_statistics(task_rows[t.name], t) for t in TASKS}
    return build_weighting(name, TASKS, stats, {"task_weights": {"sst2": 1.0, "stsb": 0.25, "mrpc": 2.0}, **hparams})


def micro_batches(task_rows, tokenizer, parts):
    collate = TaskCollator(tokenizer)
    size = ROWS // parts
    return [
        {t.name: collate([task_rows[t.name][i] for i in range(p * size, (p + 1) * size)]) for t in TASKS}
        for p in range(parts)
    ]


def engine_gradient(model, weighting, batches):
    model.zero_grad(set_to_none=True)
    result = TaskByTaskStep(weighting, [t.name for t in TASKS], Accelerator(cpu=True))(model, batches, step=0)
    return result, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def reference_gradient(model, weighting, batch):
    """One graph over all tasks: backward of F(L_1..L_K) as the strategy defines it."""
    model.zero_grad(set_to_none=True)
    losses = torch.stack([model(**batch[t.name]).loss for t in TASKS]).double()
    weighting.objective(losses).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(actual, expected, rtol=2e-5):
    assert actual.keys() == expected.keys()
    for name in expected:
        scale = expected[name].abs().max().item() + 1e-12
        assert (actual[name] - expected[name]).abs().max().item() <= rtol * scale + 1e-9, name


@pytest.mark.parametrize("name", [n for n, cls in WEIGHTINGS.items() if cls.kind == "loss"])
@pytest.mark.parametrize("parts", [1, 2])
def test_engine_matches_one_graph_reference(name, parts, task_rows, tokenizer):
    model = tiny_model(TASKS).eval()
    weighting = make_weighting(name, task_rows)
    full = micro_batches(task_rows, tokenizer, 1)[0]
    expected = reference_gradient(model, weighting, full)
    result, actual = engine_gradient(model, weighting, micro_batches(task_rows, tokenizer, parts))
    assert_same(actual, expected)
    losses = torch.tensor(result.losses, dtype=torch.float64, requires_grad=True)
    weighting.objective(losses).backward()
    assert result.weights == pytest.approx(losses.grad.tolist(), rel=1e-9)


@pytest.mark.parametrize("gamma", [200.0, -200.0])
def test_power_extreme_gamma_stays_finite_and_picks_max_or_min(gamma, task_rows, tokenizer):
    model = tiny_model(TASKS).eval()
    weighting = make_weighting("power", task_rows, gamma=gamma)
    result, grads = engine_gradient(model, weighting, micro_batches(task_rows, tokenizer, 1))
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert all(math.isfinite(w) for w in result.weights)
    dominant = max(range(len(TASKS)), key=lambda i: result.losses[i] * (1 if gamma > 0 else -1))
    assert result.weights[dominant] == max(result.weights)
    # The power mean is homogeneous of degree 1 (Euler): sum_i w_i L_i = F, and F -> max/min L here.
    euler = sum(w * l for w, l in zip(result.weights, result.losses))
    assert euler == pytest.approx(result.losses[dominant], rel=0.02)


def test_loss_scale_does_not_change_geometric_update(task_rows, tokenizer):
    """Multiplying one task's loss by c > 0 leaves the realtime/geometric update unchanged, end to end."""
    model = tiny_model(TASKS).eval()
    batches = micro_batches(task_rows, tokenizer, 1)
    _, base = engine_gradient(model, make_weighting("geometric", task_rows), batches)

    original = model.forward

    def scaled_forward(**kwargs):
        out = original(**kwargs)
        if kwargs["task"] == "stsb":
            out.loss = out.loss * 1000.0
        return out

    model.forward = scaled_forward
    _, scaled = engine_gradient(model, make_weighting("geometric", task_rows), batches)
    assert_same(scaled, base, rtol=1e-4)


# Gradient-level: grad_normalize ---------------------------------------------------------------

def task_gradients(model, batch, forward=None):
    """Each task's gradient computed on its own (the brute-force reference)."""
    grads = []
    for t in TASKS:
        model.zero_grad(set_to_none=True)
        (forward or model)(**batch[t.name]).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    return grads


def normalised_reference(grads, scope="all", scale="unit"):
    def in_scope(name):
        return scope == "all" or not name.startswith("heads.")

    norms = [math.sqrt(sum(g.double().pow(2).sum().item() for n, g in gi.items() if in_scope(n))) for gi in grads]
    factor = {"unit": 1.0, "max": max(norms), "mean": sum(norms) / len(norms)}[scale]
    total = {}
    for gi, norm in zip(grads, norms):
        for n, g in gi.items():
            term = g * (factor / norm) if in_scope(n) else g
            total[n] = total[n] + term if n in total else term
    return total, norms


@pytest.mark.parametrize("scope", ["all", "shared"])
@pytest.mark.parametrize("scale", ["unit", "max", "mean"])
@pytest.mark.parametrize("parts", [1, 2])
def test_grad_normalize_matches_brute_force(scope, scale, parts, task_rows, tokenizer):
    model = tiny_model(TASKS).eval()
    expected, norms = normalised_reference(task_gradients(model, micro_batches(task_rows, tokenizer, 1)[0]), scope, scale)
    weighting = make_weighting("grad_normalize", task_rows, norm_scope=scope, norm_scale=scale)
    result, actual = engine_gradient(model, weighting, micro_batches(task_rows, tokenizer, parts))
    assert_same(actual, expected)
    assert result.grad_norms == pytest.approx(norms, rel=1e-5)
    factor = {"unit": 1.0, "max": max(norms), "mean": sum(norms) / len(norms)}[scale]
    assert result.weights == pytest.approx([factor / n for n in norms], rel=1e-5)


@pytest.mark.parametrize("transform", [lambda loss: loss * 250.0, lambda loss: loss * 1e-3, lambda loss: loss + 7.0])
def test_grad_normalize_is_scale_and_shift_invariant(transform, task_rows, tokenizer):
    model = tiny_model(TASKS).eval()
    batches = micro_batches(task_rows, tokenizer, 1)
    _, base = engine_gradient(model, make_weighting("grad_normalize", task_rows), batches)
    original = model.forward

    def transformed(**kwargs):
        out = original(**kwargs)
        if kwargs["task"] == "mrpc":
            out.loss = transform(out.loss)
        return out

    model.forward = transformed
    _, changed = engine_gradient(model, make_weighting("grad_normalize", task_rows), batches)
    assert_same(changed, base, rtol=1e-4)


def test_grad_normalize_ignores_task_order(task_rows, tokenizer):
    model = tiny_model(TASKS).eval()
    batches = micro_batches(task_rows, tokenizer, 1)
    _, forward_order = engine_gradient(model, make_weighting("grad_normalize", task_rows), batches)
    weighting = make_weighting("grad_normalize", task_rows)
    model.zero_grad(set_to_none=True)
    TaskByTaskStep(weighting, [t.name for t in reversed(TASKS)], Accelerator(cpu=True))(model, batches, step=0)
    assert_same({n: p.grad for n, p in model.named_parameters() if p.grad is not None}, forward_order)


def test_zero_gradient_task_contributes_nothing_and_is_counted(task_rows, tokenizer):
    model = tiny_model(TASKS).eval()
    batches = micro_batches(task_rows, tokenizer, 1)
    original = model.forward

    def stsb_frozen(**kwargs):
        out = original(**kwargs)
        if kwargs["task"] == "stsb":
            out.loss = out.loss * 0.0
        return out

    grads = task_gradients(model, batches[0], forward=stsb_frozen)
    expected, _ = normalised_reference([grads[0], grads[2]])
    weighting = make_weighting("grad_normalize", task_rows)
    model.forward = stsb_frozen
    result, actual = engine_gradient(model, weighting, batches)
    assert_same({n: g for n, g in actual.items() if not n.startswith("heads.stsb.")}, expected)
    assert all(torch.isfinite(g).all() for g in actual.values())
    assert result.grad_norms[1] == 0.0 and result.weights[1] == 0.0
    assert weighting.state_dict()["num_skipped"] == 1


@pytest.mark.parametrize("name", ["equal", "grad_normalize"])
def test_nan_loss_names_the_task_and_step(name, task_rows, tokenizer):
    model = tiny_model(TASKS).eval()
    original = model.forward

    def broken(**kwargs):
        out = original(**kwargs)
        if kwargs["task"] == "stsb":
            out.loss = out.loss * float("nan")
        return out

    model.forward = broken
    step = TaskByTaskStep(make_weighting(name, task_rows), [t.name for t in TASKS], Accelerator(cpu=True))
    with pytest.raises(FloatingPointError, match=r"step 7: .*'stsb'.*non-finite loss"):
        step(model, micro_batches(task_rows, tokenizer, 1), step=7)


def test_grad_normalize_exact_factors_and_state():
    from hf_mtl.weighting import build_weighting

    for scale, expected in {"unit": [1 / 3, 1 / 4], "max": [4 / 3, 1.0], "mean": [3.5 / 3, 3.5 / 4]}.items():
        w = build_weighting("grad_normalize", TASKS[:2], hparams={"norm_scale": scale})
        common = w.gradient_common_log_factor([3.0, 4.0], [1.0, 1.0])
        assert [math.exp(w.gradient_log_factor(i, n) + common) for i, n in enumerate([3.0, 4.0])] == pytest.approx(expected)
    w = build_weighting("grad_normalize", TASKS[:2])
    assert w.gradient_log_factor(0, 0.0) == -math.inf and w.gradient_log_factor(1, math.nan) == -math.inf
    fresh = build_weighting("grad_normalize", TASKS[:2])
    fresh.load_state_dict(w.state_dict())
    assert fresh.state_dict() == w.state_dict() == {"num_clamped": 0, "num_skipped": 2}
    with pytest.raises(ValueError, match="--norm_scale 'huge'"):
        build_weighting("grad_normalize", TASKS[:2], hparams={"norm_scale": "huge"})


# All task gradients at once (aggregators) and composition --------------------------------------

class MeanOfRows(__import__("hf_mtl.weighting", fromlist=["AggregatorWeighting"]).AggregatorWeighting):
    """A minimal aggregator for testing the engine's K x P path: the mean task gradient."""

    name = "mean_of_rows"
    description = "test aggregator"

    def aggregate(self, grads, losses):
        return grads.mean(0)


def test_matrix_path_stacks_shared_gradients_and_keeps_heads_raw(task_rows, tokenizer):
    model = tiny_model(TASKS).eval()
    grads = task_gradients(model, micro_batches(task_rows, tokenizer, 1)[0])
    expected = {}
    for gi in grads:
        for n, g in gi.items():
            term = g if n.startswith("heads.") else g / len(TASKS)
            expected[n] = expected[n] + term if n in expected else term
    result, actual = engine_gradient(model, MeanOfRows(TASKS), micro_batches(task_rows, tokenizer, 2))
    assert_same(actual, expected)
    assert result.weights == pytest.approx([1 / 3] * 3, rel=1e-4)
    flat = [torch.cat([g.flatten() for n, g in gi.items() if not n.startswith("heads.")]) for gi in grads]
    cos01 = torch.nn.functional.cosine_similarity(flat[0], flat[1], dim=0).item()
    assert result.cosines[0][1] == pytest.approx(cos01, rel=1e-4) and result.cosines[1][1] == pytest.approx(1.0)


def test_geometric_then_grad_normalize_takes_the_max_scale_over_log_loss_gradients(task_rows, tokenizer):
    model = tiny_model(TASKS).eval()
    batch = micro_batches(task_rows, tokenizer, 1)
    grads = task_gradients(model, batch[0])
    losses = [model(**batch[0][t.name]).loss.item() for t in TASKS]
    unit, norms = normalised_reference(grads)
    scale = max(n / loss for n, loss in zip(norms, losses))  # max_i ‖∇ log L_i‖
    weighting = make_weighting("geometric+grad_normalize", task_rows, norm_scale="max")
    assert weighting.name == "geometric+grad_normalize"
    _, actual = engine_gradient(model, weighting, batch)
    assert_same(actual, {n: g * scale for n, g in unit.items()})


@pytest.mark.parametrize(
    "name, message",
    [("geometric+prior", r"kinds are loss\+loss"), ("grad_normalize+geometric", r"kinds are gradient\+loss"),
     ("equal+prior+grad_normalize", "at most two"), ("magic+grad_normalize", "unknown strategy 'magic'")],
)
def test_compositions_that_make_no_sense_are_rejected(name, message):
    from hf_mtl.trainer import MultiTaskTrainingArguments

    with pytest.raises(ValueError, match=message):
        MultiTaskTrainingArguments(output_dir="unused", weighting=name)


def test_a_learning_loss_transform_keeps_learning_inside_a_composition():
    from hf_mtl.weighting import build_weighting

    composed = build_weighting("uncertainty+grad_normalize", TASKS)
    alone = build_weighting("uncertainty", TASKS)
    assert [p.shape for p in composed.parameters()] == [p.shape for p in alone.parameters()]
    composed.observe([0.5, 2.0, 8.0])
    alone.observe([0.5, 2.0, 8.0])
    torch.testing.assert_close(composed.parameters()[0].grad, alone.parameters()[0].grad)
    assert build_weighting("gradnorm+pcgrad", TASKS).probes_last_shared_layer


# The compute_loss hook -------------------------------------------------------------------------

def _stsb_tripled(model, batch):
    loss = model(**batch).loss
    return loss * 3.0 if batch["task"] == "stsb" else loss


@pytest.mark.parametrize("parts", [1, 2])
def test_compute_loss_hook_changes_the_step_exactly(parts, task_rows, tokenizer):
    """Every task loss comes from `compute_loss`: tripling stsb's triples its term of the `equal` update."""
    model = tiny_model(TASKS).eval()
    grads = task_gradients(model, micro_batches(task_rows, tokenizer, 1)[0])
    batches = micro_batches(task_rows, tokenizer, parts)
    _, base = engine_gradient(model, make_weighting("equal", task_rows), batches)
    model.zero_grad(set_to_none=True)
    engine = TaskByTaskStep(make_weighting("equal", task_rows), [t.name for t in TASKS], Accelerator(cpu=True),
                            compute_loss=_stsb_tripled)
    result = engine(model, batches, step=0)
    actual = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    expected = {}
    for factor, gi in zip([1.0, 3.0, 1.0], grads):
        for n, g in gi.items():
            term = g * (factor / len(TASKS))
            expected[n] = expected[n] + term if n in expected else term
    assert_same(actual, expected)
    assert not all(torch.allclose(actual[n], base[n]) for n in base)
    plain = [model(**micro_batches(task_rows, tokenizer, 1)[0][t.name]).loss.item() for t in TASKS]
    assert result.losses == pytest.approx([plain[0], 3 * plain[1], plain[2]], rel=1e-5)


def test_compute_loss_hook_is_used_by_the_fault_re_run(task_rows, tokenizer):
    """A NaN gradient that only `compute_loss` makes: the re-run that names the faulty task must go through
    the hook too (through the model's own loss every task looks finite, and the error would blame an overflow)."""
    model = tiny_model(TASKS).eval()

    def nan_gradient_for_mrpc(model, batch):
        loss = model(**batch).loss
        if batch["task"] == "mrpc":  # value unchanged, gradient NaN: d√u/du = ∞ at u = 0, times 0
            loss = loss + torch.sqrt(model.heads["mrpc"].classifier.bias.sum() * 0.0)
        return loss

    engine = TaskByTaskStep(make_weighting("equal", task_rows), [t.name for t in TASKS], Accelerator(cpu=True),
                            compute_loss=nan_gradient_for_mrpc)
    with pytest.raises(FloatingPointError, match=r"step 3: task\(s\) \['mrpc'\] have finite losses"):
        engine(model, micro_batches(task_rows, tokenizer, 1), step=3)
