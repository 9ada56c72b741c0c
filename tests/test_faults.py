"""Numerical faults and interrupted runs, end to end.

* `--nan_policy raise | skip_step | skip_task` for a non-finite loss, for a finite loss with a
  non-finite gradient, and for a combination that overflows; the error names the step, the task and
  the training rows of the batch.
* Losses at 0 (clamped), negative losses (an error for log-based strategies), 1e-8 next to 1e8 in the
  same run (every registered strategy), label statistics a strategy cannot use (constant regression
  labels and a single class under `prior`).
* SIGTERM to a real training process: it saves a checkpoint, stops, and the resumed run ends with the
  parameters of an uninterrupted one; SIGINT to `hf-mtl train`: exit status 130, then the same command
  resumes and finishes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from transformers import TrainerCallback

from hf_mtl.engine import TaskByTaskStep
from hf_mtl.sampling import MultiTaskBatchSampler, TaskCollator
from hf_mtl.checkpoint import is_complete_checkpoint
from hf_mtl.weighting import WEIGHTINGS, AggregatorWeighting, build_weighting

from conftest import tiny_model
from resume_worker import (
    TASK_NAMES,
    make_datasets,
    make_trainer,
    one_thread,
    parameters,
    strategy_args,
    tasks,
)

WORKER = Path(__file__).resolve().parent / "resume_worker.py"
_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def train_data(tokenizer):
    return make_datasets(tokenizer, rows=32)


# Fault injection ---------------------------------------------------------------------------------


def inject(model, fault) -> None:
    """Route every task loss through `fault(task, inputs, loss) -> loss` (the model's own forward otherwise)."""
    original = model.forward

    def forward(**inputs):
        out = original(**inputs)
        if out.loss is not None:
            out.loss = fault(inputs["task"], inputs, out.loss)
        return out

    model.forward = forward


def nan_gradient(model, task: str, loss: torch.Tensor) -> torch.Tensor:
    """`loss` unchanged in value, but with a NaN gradient on the task's head bias: d√u/du = ∞ at u = 0, times 0."""
    return loss + torch.sqrt(model.heads[task].classifier.bias.sum() * 0.0)


class Armed(TrainerCallback):
    """`armed` is True during the given (1-based) optimizer steps."""

    def __init__(self, steps) -> None:
        self.steps, self.armed = set(steps), False

    def on_step_begin(self, args, state, control, **kwargs):
        self.armed = state.global_step + 1 in self.steps


class Snapshots(TrainerCallback):
    def __init__(self, model) -> None:
        self.model, self.after = model, {}

    def on_step_end(self, args, state, control, **kwargs):
        self.after[state.global_step] = parameters(self.model)


def step_logs(trainer) -> dict[int, dict]:
    return {h["step"]: h for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h}


# The engine on its own: one step, brute-force references ----------------------------------------


def micro_batches(train_data, tokenizer, parts: int = 1, rows: int = 8) -> list[dict]:
    collate = TaskCollator(tokenizer)
    size = rows // parts
    return [{name: collate([train_data[name][i] for i in range(p * size, (p + 1) * size)]) for name in TASK_NAMES}
            for p in range(parts)]


def weighting_for(name: str):
    hparams = {k: v for k, v in strategy_args(name).items() if k in ("gamma", "task_weights")}
    return build_weighting(name, tasks(), hparams=hparams)


def engine_step(model, weighting, batches, policy: str, step: int = 1):
    model.zero_grad(set_to_none=True)
    engine = TaskByTaskStep(weighting, list(TASK_NAMES), Accelerator(cpu=True), nan_policy=policy)
    result = engine(model, batches, step=step)
    return result, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, engine


def task_gradients(model, batch) -> list[dict]:
    grads = []
    for name in TASK_NAMES:
        model.zero_grad(set_to_none=True)
        model(**batch[name]).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    return grads


def assert_grads_close(actual: dict, expected: dict, rtol: float = 2e-5) -> None:
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        assert (actual[name] - value).abs().max().item() <= rtol * (value.abs().max().item() + 1e-12) + 1e-9, name


@pytest.mark.parametrize("name", ["equal", "geometric", "power", "grad_normalize"])
@pytest.mark.parametrize("parts", [1, 2])
def test_skip_task_leaves_the_task_out_and_the_others_keep_their_factors(name, parts, train_data, tokenizer):
    model = tiny_model(tasks()).eval()
    batches = micro_batches(train_data, tokenizer, parts)
    grads = task_gradients(model, micro_batches(train_data, tokenizer, 1)[0])
    sst2_loss = model(**micro_batches(train_data, tokenizer, 1)[0]["sst2"]).loss.item()
    inject(model, lambda task, inputs, loss: loss * math.nan if task == "stsb" else loss)
    weighting = weighting_for(name)
    result, actual, engine = engine_step(model, weighting, batches, "skip_task")

    assert result.skipped_tasks == ["stsb"] and not result.skipped_step
    assert math.isnan(result.losses[1]) and result.weights[1] == 0.0
    assert engine.skipped_tasks == {"sst2": 0, "stsb": 1, "mrpc": 0} and engine.skip_counts() == {"nan_skipped_stsb": 1}
    kept = [0, 2]
    if name == "grad_normalize":  # Σ g_i/‖g_i‖ over the tasks left
        norms = [math.sqrt(sum(g.double().pow(2).sum().item() for g in grads[i].values())) for i in kept]
        factors = dict(zip(kept, [1 / n for n in norms]))
    else:  # the strategy's weights, the skipped task's loss replaced by the mean of the others
        assert result.losses[0] == pytest.approx(sst2_loss, rel=1e-5)
        filled = [result.losses[0], (result.losses[0] + result.losses[2]) / 2, result.losses[2]]
        weights = weighting.weights(filled)
        factors = {i: weights[i] for i in kept}
        assert [result.weights[i] for i in kept] == pytest.approx([weights[i] for i in kept], rel=1e-9)
    expected = {}
    for i in kept:
        for n, g in grads[i].items():
            expected[n] = expected[n] + g * factors[i] if n in expected else g * factors[i]
    assert_grads_close(actual, expected)


def test_skip_step_on_a_nan_loss_clears_every_gradient(train_data, tokenizer):
    model = tiny_model(tasks()).eval()
    inject(model, lambda task, inputs, loss: loss * math.inf if task == "mrpc" else loss)
    result, grads, engine = engine_step(model, weighting_for("geometric"), micro_batches(train_data, tokenizer), "skip_step")
    assert result.skipped_step and grads == {} and math.isnan(result.mean_loss)
    assert engine.skip_counts() == {"nan_skipped_steps": 1}
    assert result.losses[:2] == pytest.approx([result.losses[0], result.losses[1]]) and math.isinf(result.losses[2])


def _aggregator() -> str:
    return next((n for n in ("upgrad", "pcgrad", "mgda") if n in WEIGHTINGS), None) or pytest.skip("no aggregator")


@pytest.mark.parametrize("name, parts", [("equal", 1), ("geometric", 2), ("grad_normalize", 1), ("aggregator", 1)])
@pytest.mark.parametrize("policy", ["raise", "skip_step", "skip_task"])
def test_finite_loss_with_a_non_finite_gradient(name, parts, policy, train_data, tokenizer):
    name = _aggregator() if name == "aggregator" else name
    model = tiny_model(tasks()).eval()
    inject(model, lambda task, inputs, loss: nan_gradient(model, task, loss) if task == "mrpc" else loss)
    weighting = weighting_for(name)
    batches = micro_batches(train_data, tokenizer, parts)
    if policy == "raise":
        with pytest.raises(FloatingPointError, match=r"step 4: task\(s\) \['mrpc'\] have finite losses .* but "
                                                      r"non-finite gradients \('mrpc': micro-batch 1 of"):
            engine_step(model, weighting, batches, policy, step=4)
        return
    result, grads, engine = engine_step(model, weighting, batches, policy)
    if policy == "skip_step" or isinstance(weighting, AggregatorWeighting):  # aggregators need all K rows
        assert result.skipped_step and grads == {} and engine.skipped_steps == 1
        return
    assert result.skipped_tasks == ["mrpc"] and result.weights[2] == 0.0 and math.isfinite(result.losses[2])
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert not any(n.startswith("heads.mrpc.") for n in grads), "the dropped task's head must get no gradient"
    assert any(n.startswith("heads.stsb.") for n in grads)


@pytest.mark.parametrize("policy", ["raise", "skip_step"])
def test_a_combination_that_overflows_is_caught(policy, train_data, tokenizer):
    """Every task's own gradient is finite; weighted by 1e38 each, their sum is not (float32)."""
    model = tiny_model(tasks()).eval()
    weighting = build_weighting("static", tasks(), hparams={"task_weights": dict.fromkeys(TASK_NAMES, 1e38)})
    if policy == "raise":
        with pytest.raises(FloatingPointError, match=r"every task's loss and gradient is .*combination by 'static' overflowed"):
            engine_step(model, weighting, micro_batches(train_data, tokenizer), policy)
        return
    result, grads, _ = engine_step(model, weighting, micro_batches(train_data, tokenizer), policy)
    assert result.skipped_step and grads == {}


# Through the Trainer -----------------------------------------------------------------------------

POISON_ROW = 13


@pytest.fixture(scope="module")
def poisoned_data(tokenizer):
    """sst2 row 13 holds the word 'zebra', which no other row has."""
    def plant(name, columns):
        if name == "sst2":
            columns["sentence"][POISON_ROW] = "a zebra film"
    return make_datasets(tokenizer, rows=32, edit=plant)


def test_raise_names_the_step_the_task_and_the_training_rows(tmp_path, poisoned_data, tokenizer):
    """The poisoned row makes sst2's loss NaN from epoch 2 on (steps 5+: 4 steps per epoch), with
    2 micro-batches per step: the error must point at that row, at the step and micro-batch it is in."""
    zebra = tokenizer.convert_tokens_to_ids("zebra")
    armed = Armed(range(5, 100))
    trainer = make_trainer(tmp_path, poisoned_data, tokenizer, "geometric", callbacks=[armed], max_steps=8,
                           gradient_accumulation_steps=2, save_strategy="no")
    inject(trainer.model, lambda task, inputs, loss: loss * math.nan
           if armed.armed and task == "sst2" and (inputs["input_ids"] == zebra).any() else loss)
    sampler = MultiTaskBatchSampler([32, 32, 32], 4, seed=7, batches_per_step=2)
    sampler.set_epoch(1)
    position = list(sampler.task_stream(0)).index(POISON_ROW)  # where the row is in epoch 2's sst2 stream
    step, micro_batch = 5 + position // 8, (position % 8) // 4
    rows = sampler.task_stream(0)[micro_batch * 4 + (step - 5) * 8:][:4].tolist()
    with pytest.raises(FloatingPointError) as caught:
        trainer.train()
    message = str(caught.value)
    assert message.startswith(f"step {step}: weighting 'geometric': task 'sst2' has a non-finite loss nan"), message
    assert f"The batch: micro-batch {micro_batch + 1} of 2, training rows {rows}." in message
    assert POISON_ROW in rows and trainer.state.global_step == step - 1


def test_skip_step_no_update_scheduler_advances_counted_and_logged(tmp_path, train_data, tokenizer, caplog):
    settings = dict(max_steps=5, save_strategy="no", optim="adamw_torch", learning_rate=1e-3)
    reference = make_trainer(tmp_path / "ref", train_data, tokenizer, "equal", **settings)
    reference.train()
    armed = Armed([3])
    trainer = make_trainer(tmp_path / "run", train_data, tokenizer, "equal", callbacks=[armed], nan_policy="skip_step",
                           **settings)
    snapshots = Snapshots(trainer.model)
    trainer.add_callback(snapshots)
    inject(trainer.model, lambda task, inputs, loss: loss * math.nan if armed.armed and task == "stsb" else loss)
    with caplog.at_level(logging.WARNING, logger="hf_mtl.engine"):
        trainer.train()
    after = snapshots.after
    assert all(torch.equal(after[3][n], after[2][n]) for n in after[2]), "a skipped step must not move any parameter"
    assert any(not torch.equal(after[4][n], after[3][n]) for n in after[3])
    assert trainer.optimizer.state_dict()["state"][0]["step"].item() == 4  # AdamW: 5 steps, 1 skipped
    logs, ref_logs = step_logs(trainer), step_logs(reference)
    assert [logs[s].get("nan_skipped_steps") for s in range(1, 6)] == [None, None, 1, 1, 1]
    assert [logs[s]["learning_rate"] for s in range(1, 6)] == [ref_logs[s]["learning_rate"] for s in range(1, 6)]
    assert logs[2]["loss_stsb"] == ref_logs[2]["loss_stsb"] and "loss_stsb" not in logs[3]
    assert math.isnan(logs[3]["loss"]) and logs[4]["loss"] > 0  # no loss for the skipped step, not a made-up one
    assert any("step 3 skipped (--nan_policy skip_step): task 'stsb': non-finite loss nan" in r.message for r in caplog.records)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_skip_task_through_the_trainer_is_logged_and_checkpointed(tmp_path, train_data, tokenizer):
    armed = Armed([2])
    trainer = make_trainer(tmp_path, train_data, tokenizer, "geometric", callbacks=[armed], nan_policy="skip_task",
                           max_steps=3, save_steps=3)
    inject(trainer.model, lambda task, inputs, loss: loss * math.nan if armed.armed and task == "stsb" else loss)
    trainer.train()
    logs = step_logs(trainer)
    assert logs[2]["weight_stsb"] == 0.0 and "loss_stsb" not in logs[2]
    assert logs[2]["weight_sst2"] == pytest.approx(1 / logs[2]["loss_sst2"], rel=1e-6)
    assert logs[2]["nan_skipped_stsb"] == 1 and "nan_skipped_steps" not in logs[2] and "nan_skipped_stsb" not in logs[1]
    saved = json.loads((tmp_path / "checkpoint-3" / "weighting_state.json").read_text())
    assert saved["engine"] == {"skipped_steps": 0, "skipped_tasks": {"sst2": 0, "stsb": 1, "mrpc": 0}}
    resumed = make_trainer(tmp_path, train_data, tokenizer, "geometric", nan_policy="skip_task", max_steps=4)
    resumed.train(resume_from_checkpoint=True)
    assert step_logs(resumed)[4]["nan_skipped_stsb"] == 1  # the count survives the resume


def test_nan_policy_is_validated():
    from hf_mtl.trainer import MultiTaskTrainingArguments

    with pytest.raises(ValueError, match="--nan_policy 'ignore' is not one of: raise, skip_step, skip_task"):
        MultiTaskTrainingArguments(output_dir="unused", nan_policy="ignore")


# Loss values a strategy cannot take as they are ---------------------------------------------------


def test_a_zero_loss_is_clamped_counted_and_stays_finite(tmp_path, train_data, tokenizer):
    trainer = make_trainer(tmp_path, train_data, tokenizer, "geometric", max_steps=3, save_strategy="no")
    inject(trainer.model, lambda task, inputs, loss: loss * 0.0 if task == "mrpc" else loss)
    head = trainer.model.heads["mrpc"].classifier.weight.detach().clone()
    trainer.train()
    assert trainer.weighting.num_clamped == 3
    logs = step_logs(trainer)
    assert logs[1]["loss_mrpc"] == 0.0 and logs[1]["weight_mrpc"] == pytest.approx(1e8)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert torch.equal(trainer.model.heads["mrpc"].classifier.weight, head)  # 1e8 x a zero gradient


def _log_based(name: str) -> bool:
    return bool(getattr(WEIGHTINGS[name], "log_based", False))


@pytest.mark.parametrize("name", list(WEIGHTINGS))
def test_a_negative_loss_fails_under_log_based_strategies_only(name, tmp_path, train_data, tokenizer):
    trainer = make_trainer(tmp_path, train_data, tokenizer, name, max_steps=2, save_strategy="no")
    inject(trainer.model, lambda task, inputs, loss: loss - 10.0 if task == "stsb" else loss)
    if _log_based(name):
        # (`init` measures its initial losses first: the negative one is refused there, by name.)
        with pytest.raises(ValueError, match=r"task 'stsb' has a (negative loss|measured initial loss) -\d"):
            trainer.train()
        return
    trainer.train()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


@pytest.mark.parametrize("name", [*WEIGHTINGS, "geometric+grad_normalize"])
def test_losses_of_1e_minus_8_and_1e8_in_one_run_give_a_finite_update(name, tmp_path, train_data, tokenizer):
    """sst2's loss × 1e-8, stsb's × 1e8, mrpc's as it is: every strategy still makes finite updates."""
    scale = {"sst2": 1e-8, "stsb": 1e8, "mrpc": 1.0}
    trainer = make_trainer(tmp_path, train_data, tokenizer, name, max_steps=3, save_strategy="no", learning_rate=1e-3)
    inject(trainer.model, lambda task, inputs, loss: loss * scale[task])
    before = parameters(trainer.model)
    trainer.train()
    after = parameters(trainer.model)
    assert all(torch.isfinite(p).all() for p in after.values())
    assert any(not torch.equal(after[n], before[n]) for n in before)
    for log in step_logs(trainer).values():
        assert all(math.isfinite(log[f"weight_{t}"]) for t in TASK_NAMES), log


def test_label_statistics_prior_cannot_use_are_rejected_before_training(tmp_path, tokenizer):
    def constant(name, columns):
        if name == "stsb":
            columns["label"] = [2.5] * len(columns["label"])
        if name == "sst2":
            columns["label"] = [1] * len(columns["label"])

    data = make_datasets(tokenizer, rows=16, edit=constant)
    with pytest.raises(ValueError, match=r"weighting 'prior': task 'sst2' has a prior loss \(entropy of its training "
                                         r"label frequencies\) 0, .*labels are all the same"):
        make_trainer(tmp_path, data, tokenizer, "prior")
    # Strategies that do not divide by a label statistic train on the same data.
    trainer = make_trainer(tmp_path, data, tokenizer, "geometric", max_steps=2, save_strategy="no")
    trainer.train()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_all_zero_regression_labels_are_rejected_by_theoretical_init(tmp_path, tokenizer):
    def zeros(name, columns):
        if name == "stsb":
            columns["label"] = [0.0] * len(columns["label"])

    data = make_datasets(tokenizer, rows=16, edit=zeros)
    with pytest.raises(ValueError, match=r"weighting 'init': task 'stsb' has a theoretical initial loss .*all 0"):
        make_trainer(tmp_path, data, tokenizer, "init", init_estimate_batches=0)


# Signals -----------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _signal_after(proc: subprocess.Popen, marker: str, sig: int, timeout: float = 120) -> list[str]:
    """Read the process's output until a line contains `marker`, send `sig`, return the lines seen."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            proc.send_signal(sig)
            return lines
    proc.kill()
    pytest.fail(f"{marker!r} never appeared:\n{''.join(lines)[-3000:]}")


def test_sigterm_saves_a_checkpoint_and_the_resumed_run_matches_an_uninterrupted_one(tmp_path, train_data, tokenizer):
    out = tmp_path / "run"
    command = [sys.executable, str(WORKER), str(out), "--weighting", "famo", "--max_steps", "8", "--step_delay", "0.2"]
    proc = subprocess.Popen([*command, "--dump", str(tmp_path / "stopped.safetensors")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_env())
    lines = _signal_after(proc, "step 2", signal.SIGTERM)
    rest, _ = proc.communicate(timeout=120)
    output = "".join(lines) + rest
    assert proc.returncode == 0, output[-3000:]
    stopped_at = int(output.split("finished at step ")[1].split()[0])
    assert f"interrupted_by={int(signal.SIGTERM)}" in output and 2 <= stopped_at < 8, output[-2000:]
    checkpoints = sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint-"))
    assert checkpoints == [f"checkpoint-{stopped_at}"] and is_complete_checkpoint(str(out / checkpoints[0]))

    resumed = subprocess.run([*command, "--resume", "--dump", str(tmp_path / "resumed.safetensors")],
                             capture_output=True, text=True, env=_env(), timeout=180)
    assert resumed.returncode == 0 and "finished at step 8 interrupted_by=None" in resumed.stdout, resumed.stdout[-3000:]
    state = json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "loss" in h and "train_runtime" not in h] == list(range(1, 9))

    # The uninterrupted run, in this process (same code, same single thread).
    reference = make_trainer(tmp_path / "ref", train_data, tokenizer, "famo", max_steps=8, save_steps=1000,
                             optim="adamw_torch", learning_rate=1e-3, max_grad_norm=1.0)
    reference.train()
    expected, actual = parameters(reference.model), load_file(str(tmp_path / "resumed.safetensors"))
    for name, value in expected.items():
        assert (actual[name] - value).abs().max().item() <= 1e-6 * (value.abs().max().item() + 1e-12), name


def test_signal_handlers_in_process_second_signal_and_restore(tmp_path, train_data, tokenizer):
    """First SIGTERM: finish the step, checkpoint, stop. A second one goes to the handler that was there
    before training (here a recorder; by default it would end the process). After train() the previous
    handler is back."""
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))

    class TwoSignals(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step + 1 == 2:
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGTERM)

    try:
        trainer = make_trainer(tmp_path, train_data, tokenizer, "geometric", callbacks=[TwoSignals()], max_steps=6,
                               save_strategy="no")
        handler_before = signal.getsignal(signal.SIGTERM)
        sigint_before = signal.getsignal(signal.SIGINT)  # SIG_IGN when run in the background, as CI does
        trainer.train()
        assert received == [signal.SIGTERM] and trainer.interrupted_by == signal.SIGTERM
        assert trainer.state.global_step == 2 and is_complete_checkpoint(str(tmp_path / "checkpoint-2"))
        assert signal.getsignal(signal.SIGTERM) is handler_before
        assert signal.getsignal(signal.SIGINT) is sigint_before
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_checkpoint_on_signal_off_leaves_signals_alone_and_jit_checkpoint_is_superseded(tmp_path, caplog):
    from hf_mtl.trainer import MultiTaskTrainingArguments

    with caplog.at_level(logging.WARNING, logger="hf_mtl.trainer"):
        args = MultiTaskTrainingArguments(output_dir=str(tmp_path), enable_jit_checkpoint=True)
    assert not args.enable_jit_checkpoint and "replaced by hf_mtl's --checkpoint_on_signal" in caplog.text
    assert MultiTaskTrainingArguments(output_dir=str(tmp_path), enable_jit_checkpoint=True,
                                      checkpoint_on_signal=False).enable_jit_checkpoint


def _glue_folder(root: Path, rows: int = 64) -> Path:
    """A small GLUE folder (SST-2 and STS-B) of synthetic rows, in the original TSV layout."""
    from resume_worker import synthetic_rows

    from hf_mtl.tasks import GLUE_TASKS

    sst2, stsb = synthetic_rows(GLUE_TASKS["sst2"], rows, 1), synthetic_rows(GLUE_TASKS["stsb"], rows, 2)
    (root / "SST-2").mkdir(parents=True)
    (root / "STS-B").mkdir()
    body = "".join(f"{s}\t{label}\n" for s, label in zip(sst2["sentence"], sst2["label"]))
    (root / "SST-2" / "train.tsv").write_text("sentence\tlabel\n" + body)
    rows_b = zip(stsb["sentence1"], stsb["sentence2"], stsb["label"])
    (root / "STS-B" / "train.tsv").write_text(
        "index\tsentence1\tsentence2\tscore\n" + "".join(f"{i}\t{a}\t{b}\t{y}\n" for i, (a, b, y) in enumerate(rows_b)))
    return root


def test_sigint_to_hf_mtl_train_exits_130_and_the_same_command_resumes(tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "hf_mtl.cli", "train", "--model_name_or_path", tiny_checkpoint,
               "--tasks", "sst2,stsb", "--glue_dir", str(_glue_folder(tmp_path / "glue")), "--weighting", "dwa"
               if "dwa" in WEIGHTINGS else "geometric", "--do_train", "--max_steps", "100", "--logging_steps", "1",
               "--per_device_train_batch_size", "16", "--max_seq_length", "32", "--save_steps", "100000",
               "--output_dir", str(out), "--report_to", "none", "--disable_tqdm", "true", "--use_cpu", "true"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    lines = _signal_after(proc, "'loss_stsb'", signal.SIGINT, timeout=240)
    rest, _ = proc.communicate(timeout=120)
    output = "".join(lines) + rest
    assert proc.returncode == 128 + signal.SIGINT, output[-3000:]
    assert "SIGINT received: saving a checkpoint at step" in output and "run the same command again" in output
    (checkpoint,) = [p for p in out.iterdir() if p.name.startswith("checkpoint-")]
    stopped_at = int(checkpoint.name.split("-")[1])
    assert 1 <= stopped_at < 100 and is_complete_checkpoint(str(checkpoint))
    assert not (out / "model.safetensors").exists(), "an interrupted run must not look finished"

    again = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"resuming from {checkpoint}" in again.stdout + again.stderr
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 100
    assert [h["step"] for h in state["log_history"] if "loss" in h and "train_runtime" not in h] == list(range(1, 101))
