"""Task sampling in the trainer: shares by --sampling_alpha, schedules, one task per step (the update, the strategies
it admits, the logs). The sampler alone is tested in test_sampling.py; the 1- vs 2-process comparison of every mode
in test_distributed.py, resume in test_resume.py."""

from __future__ import annotations

import dataclasses
import math
import re

import conftest
import pytest
import torch
from resume_worker import make_datasets, make_trainer, one_thread, tasks, training_args

from hf_mtl.training_args import MultiTaskTrainingArguments
from hf_mtl.weighting import WEIGHTINGS

_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)

SIZES = {"sst2": 40, "stsb": 12, "mrpc": 6}
#: The strategies whose factor is per task: the ones that may step on one task.
ONE_TASK_STRATEGIES = ["equal", "static", "init", "prior", "realtime", "geometric", "uncertainty", "imtl_l"]


@pytest.fixture(scope="module")
def uneven_data(tokenizer):
    data = make_datasets(tokenizer, rows=max(SIZES.values()))
    return {name: ds.select(range(SIZES[name])) for name, ds in data.items()}


def test_the_strategies_that_step_on_one_task():
    assert sorted(n for n, c in WEIGHTINGS.items() if c.one_task_steps) == sorted(ONE_TASK_STRATEGIES)


@pytest.mark.parametrize("name, reason", [
    ("pcgrad", "combines all K task gradients of a step at once"),
    ("grad_normalize", "normalises the task gradients of a step jointly"),
    ("power", "needs every task's loss in every step"),
    ("dwa", "needs every task's loss in every step"),
    ("geometric+grad_normalize", "grad_normalize cannot step on one task"),
])
def test_one_per_step_refuses_strategies_that_need_every_task(name, reason, tmp_path):
    with pytest.raises(ValueError, match=f"--task_sampling one_per_step --weighting {re.escape(name)}: .*{reason}"):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), weighting=name, task_sampling="one_per_step")


@pytest.mark.parametrize("flags, message", [
    ({"task_sampling": "random"}, "--task_sampling 'random' is not one of: all_per_step, one_per_step"),
    ({"sampling_alpha": -1.0}, "--sampling_alpha must be a finite number >= 0"),
    ({"sampling_schedule": "anneal", "sampling_alpha": 0.5}, "anneal sets α itself"),
    ({"sampling_schedule": "linear", "sampling_alpha": 1.0}, "--sampling_alpha_end is the end of"),
    ({"sampling_alpha_end": 0.5}, "drop it, or pass --sampling_schedule linear"),
])
def test_bad_sampling_flags_are_refused(flags, message, tmp_path):
    with pytest.raises(ValueError, match=re.escape(message)):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), **flags)


def test_shares_are_logged_per_step_with_passes_and_alpha(tmp_path, uneven_data, tokenizer):
    trainer = make_trainer(tmp_path, uneven_data, tokenizer, "geometric", sampling_alpha=1.0, max_steps=5,
                           save_strategy="no")
    trainer.train()
    sampler = trainer._train_batch_sampler
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 5
    # 4 rows per task at α = 0 -> 12 rows per step, split ∝ n: sst2 40, stsb 12, mrpc 6 -> 8, 3, 1
    assert [logs[0][f"rows_{t}"] for t in ("sst2", "stsb", "mrpc")] == [8.0, 3.0, 1.0]
    for step, entry in enumerate(logs, start=1):
        seen = sampler.rows_seen(step)
        assert [entry[f"epochs_{t}"] for t in ("sst2", "stsb", "mrpc")] == pytest.approx(
            [seen[i] / n for i, n in enumerate(SIZES.values())])
        assert entry["sampling_alpha"] == 1.0


def test_a_linear_schedule_is_logged_step_by_step(tmp_path, uneven_data, tokenizer):
    trainer = make_trainer(tmp_path, uneven_data, tokenizer, "equal", sampling_schedule="linear", sampling_alpha=1.0,
                           sampling_alpha_end=0.0, max_steps=5, save_strategy="no")
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["sampling_alpha"] for h in logs] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    assert [h["rows_mrpc"] for h in logs][-1] == 4.0 and logs[0]["rows_mrpc"] == 1.0


def test_one_task_step_is_that_tasks_own_factor_times_its_gradient(tmp_path, uneven_data, tokenizer):
    """One SGD step of `geometric` under one_per_step: θ' = θ − lr · ∇L_i / L_i for the drawn task i only; the
    other heads do not move; the logs hold the drawn task's loss and weight 1/L_i, and nothing for the others."""
    lr = 0.1
    trainer = make_trainer(tmp_path, uneven_data, tokenizer, "geometric", task_sampling="one_per_step",
                           sampling_alpha=0.5, max_steps=1, learning_rate=lr, save_strategy="no", max_grad_norm=0.0)
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    (task,) = batch
    model = trainer.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = trainer.compute_loss(model, batch[task])
    grads = dict(zip([n for n, _ in model.named_parameters()],
                     torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)))
    model.zero_grad(set_to_none=True)
    trainer.train()
    for name, p in model.named_parameters():
        expected = before[name] if grads[name] is None else before[name] - lr * grads[name] / loss.item()
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-7, msg=name)
        if name.startswith("heads.") and not name.startswith(f"heads.{task}."):
            assert torch.equal(p.detach(), before[name]), name
    entry = next(h for h in trainer.state.log_history if "loss" in h)
    assert entry[f"loss_{task}"] == pytest.approx(loss.item(), rel=1e-5)
    assert entry[f"weight_{task}"] == pytest.approx(1 / loss.item(), rel=1e-5)
    assert entry["loss"] == pytest.approx(loss.item(), rel=1e-5)
    others = [t for t in SIZES if t != task]
    assert not any(f"loss_{t}" in entry or f"weight_{t}" in entry for t in others)
    assert entry[f"rows_{task}"] == 4.0 and all(entry[f"rows_{t}"] == 0.0 for t in others)


@pytest.mark.parametrize("name", ONE_TASK_STRATEGIES)
def test_every_one_task_strategy_trains_with_one_task_per_step(name, tmp_path, uneven_data, tokenizer):
    trainer = make_trainer(tmp_path, uneven_data, tokenizer, name, task_sampling="one_per_step", sampling_alpha=0.5,
                           max_steps=6, save_strategy="no", gradient_accumulation_steps=2, per_device_train_batch_size=2)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    drawn = [[t for t in SIZES if h[f"rows_{t}"] > 0] for h in logs]
    assert all(len(tasks) == 1 for tasks in drawn) and len({tasks[0] for tasks in drawn}) > 1
    for entry, (task,) in zip(logs, drawn):
        assert math.isfinite(entry[f"loss_{task}"]) and entry[f"weight_{task}"] > 0
    state = trainer.weighting.state_dict()
    if name == "init":  # the initial losses are measured on every task, not on the first drawn one only
        assert sorted(state["reference_losses"]) == sorted(SIZES)
    if name in ("uncertainty", "imtl_l"):  # a learned value moves only for a task that was drawn
        values = state["log_variances" if name == "uncertainty" else trainer.weighting.state_key]
        for task in SIZES:
            assert (values[task] != 0.0) == any(task in tasks for tasks in drawn), task


def test_the_engine_refuses_a_missing_task_for_a_strategy_that_needs_all(tmp_path, uneven_data, tokenizer):
    trainer = make_trainer(tmp_path, uneven_data, tokenizer, "pcgrad", max_steps=1, save_strategy="no")
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    del batch["mrpc"]
    with pytest.raises(ValueError, match="no rows of task\\(s\\) \\['mrpc'\\], but weighting 'pcgrad' needs every task"):
        trainer.step_engine(trainer.model, [batch], step=1)


def test_oversample_from_a_task_file_reaches_the_sampler(tmp_path, uneven_data, tokenizer):
    specs = [dataclasses.replace(s, oversample=4.0) if s.name == "mrpc" else s for s in tasks()]
    args = training_args(tmp_path, "equal", max_steps=1, save_strategy="no")
    trainer = conftest.make_trainer(args, uneven_data, tokenizer, tasks=specs)
    trainer.get_train_dataloader()
    # α = 0: equal shares times the factors 1, 1, 4 -> 12 rows split 2, 2, 8
    assert trainer._train_batch_sampler.step_rows(0).tolist() == [2, 2, 8]


def test_a_task_files_oversample_is_checked():
    from hf_mtl.task_file import parse_task_list

    assert parse_task_list([{"glue": "wnli", "oversample": 3}])[0].oversample == 3
    with pytest.raises(ValueError, match="oversample=0 must be a number > 0"):
        parse_task_list([{"glue": "wnli", "oversample": 0}])
