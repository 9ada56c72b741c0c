"""The task-by-task step against a one-graph reference, for every strategy, with and without accumulation."""

from __future__ import annotations

import math

import pytest
import torch
from accelerate import Accelerator

from hf_mtl.data import cap_rows, label_statistics, load_task_splits, tokenize_splits
from hf_mtl.engine import TaskByTaskStep
from hf_mtl.sampling import TaskCollator
from hf_mtl.tasks import GLUE_TASKS
from hf_mtl.weighting import WEIGHTINGS, WeightingOptions, build_weighting

from conftest import tiny_model

TASKS = [GLUE_TASKS["sst2"], GLUE_TASKS["stsb"], GLUE_TASKS["mrpc"]]
ROWS = 8


@pytest.fixture(scope="module")
def task_rows(glue_dir, tokenizer):
    """The first ROWS training rows of each task, tokenised by the real MiniLM tokenizer."""
    rows = {}
    for spec in TASKS:
        splits = tokenize_splits(cap_rows(load_task_splits(spec, glue_dir), ROWS, ROWS), spec, tokenizer, 64)
        rows[spec.name] = splits["train"]
    return rows


def make_weighting(name, task_rows, **options):
    stats = {t.name: label_statistics(task_rows[t.name], t) for t in TASKS}
    opts = WeightingOptions(task_weights={"sst2": 1.0, "stsb": 0.25, "mrpc": 2.0}, **options)
    return build_weighting(name, TASKS, stats, opts)


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


@pytest.mark.parametrize("name", list(WEIGHTINGS))
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
