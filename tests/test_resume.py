"""Exact resume: a run stopped at step n and resumed from its checkpoint ends where the uninterrupted run
ends at step 2n, for every registered strategy (and one composition), with SGD and AdamW, with and
without gradient accumulation. Tiny BERT, dropout off, synthetic data; runs cross an epoch boundary.

Also: what a checkpoint holds (no pickle in the weighting state), incomplete checkpoints are never
resumed from, and a real stop at step n (not just the checkpoint of a longer run) resumes exactly.
"""

from __future__ import annotations

import json
import math
import pickletools

import pytest
from transformers import TrainerCallback

from hf_mtl.checkpoint import (
    WEIGHTING_STATE_FILE,
    WEIGHTING_TENSORS_FILE,
    is_complete_checkpoint,
    last_complete_checkpoint,
)
from hf_mtl.weighting import WEIGHTINGS

from resume_worker import (
    assert_states_close,
    make_datasets,
    make_trainer,
    one_thread,
    parameters,
)

N = 3  # stop (checkpoint) at step N, compare at 2N; 32 rows at 8 rows per step: 4 steps per epoch
#: Every registered strategy (the registry grows: new strategies are picked up here) and one composition.
STRATEGIES = [*WEIGHTINGS, "geometric+grad_normalize",
              *(["dwa+pcgrad"] if {"dwa", "pcgrad"} <= set(WEIGHTINGS) else [])]
#: Both optimizers and both accumulation settings for every strategy, in two runs instead of four; the
#: other two combinations run with `-m slow`.
SETTINGS = [pytest.param("sgd", 2, id="sgd-accum2"), pytest.param("adamw_torch", 1, id="adamw-accum1"),
            pytest.param("sgd", 1, id="sgd-accum1", marks=pytest.mark.slow),
            pytest.param("adamw_torch", 2, id="adamw-accum2", marks=pytest.mark.slow)]


_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def train_data(tokenizer):
    return make_datasets(tokenizer, rows=32)


def run_settings(optim: str, accumulation: int) -> dict:
    return dict(optim=optim, gradient_accumulation_steps=accumulation, per_device_train_batch_size=8 // accumulation,
                learning_rate=0.05 if optim == "sgd" else 2e-3, max_steps=2 * N, save_steps=N)


def assert_parameters_close(actual: dict, expected: dict, rtol: float = 1e-6) -> None:
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        scale = value.abs().max().item() + 1e-12
        assert (actual[name] - value).abs().max().item() <= rtol * scale, name


def train_logs(trainer, after: int) -> list[dict]:
    return [{k: v for k, v in h.items() if k.startswith(("loss", "weight_", "grad_norm_", "cos_"))}
            for h in trainer.state.log_history if "loss" in h and h["step"] > after]


@pytest.mark.parametrize("optim, accumulation", SETTINGS)
@pytest.mark.parametrize("name", STRATEGIES)
def test_resumed_run_matches_the_uninterrupted_run(name, optim, accumulation, tmp_path, train_data, tokenizer):
    settings = run_settings(optim, accumulation)
    full = make_trainer(tmp_path / "full", train_data, tokenizer, name, **settings)
    full.train()
    assert full.state.global_step == 2 * N
    checkpoint = tmp_path / "full" / f"checkpoint-{N}"
    assert (checkpoint / WEIGHTING_STATE_FILE).is_file()

    resumed = make_trainer(tmp_path / "resumed", train_data, tokenizer, name, model_seed=1, **settings)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 2 * N
    expected, actual = parameters(full.model), parameters(resumed.model)
    assert_parameters_close(actual, expected)
    assert_states_close(resumed.weighting.state_dict(), full.weighting.state_dict())
    for got, want in zip(train_logs(resumed, N), train_logs(full, N), strict=True):
        assert got == pytest.approx(want, rel=1e-6, nan_ok=True)
    if optim != "sgd":  # AdamW's moments were restored, not restarted: a fresh optimizer would differ a lot
        assert resumed.optimizer.state_dict()["state"][0]["step"].item() == 2 * N


#: Every sampling mode besides the default (tests/test_sampling.py covers the sampler itself).
SAMPLING_MODES = {
    "sqrt": {"sampling_alpha": 0.5},
    "linear": {"sampling_schedule": "linear", "sampling_alpha": 1.0, "sampling_alpha_end": 0.0},
    "anneal": {"sampling_schedule": "anneal"},
    "one_per_step": {"task_sampling": "one_per_step", "sampling_alpha": 0.5},
}
#: A loss-level and a learned strategy in every mode; a gradient-level one and an aggregator where every task is in
#: every step (one task per step refuses them).
SAMPLING_CASES = [(mode, name) for mode in SAMPLING_MODES for name in ("geometric", "uncertainty")] + [
    (mode, name) for mode in ("sqrt", "linear", "anneal") for name in ("grad_normalize", "upgrad")]


@pytest.fixture(scope="module")
def uneven_data(train_data):
    """24, 10 and 6 rows: the shares differ, and every mode's epoch (3 steps at α = 0.5, 5 one-task steps) ends
    within the 2N steps."""
    return {name: ds.select(range(rows)) for (name, ds), rows in zip(train_data.items(), (24, 10, 6))}


@pytest.mark.parametrize("optim, accumulation", SETTINGS[:2])
@pytest.mark.parametrize("mode, name", SAMPLING_CASES)
def test_every_sampling_mode_resumes_exactly(mode, name, optim, accumulation, tmp_path, uneven_data, tokenizer):
    settings = {**run_settings(optim, accumulation), **SAMPLING_MODES[mode]}
    full = make_trainer(tmp_path / "full", uneven_data, tokenizer, name, **settings)
    full.train()
    assert full._train_batch_sampler.steps_per_epoch < 2 * N
    resumed = make_trainer(tmp_path / "resumed", uneven_data, tokenizer, name, model_seed=1, **settings)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / f"checkpoint-{N}"))
    assert_parameters_close(parameters(resumed.model), parameters(full.model))
    assert_states_close(resumed.weighting.state_dict(), full.weighting.state_dict())
    keys = ("loss", "weight_", "rows_", "epochs_", "sampling_alpha")
    logs = [[{k: v for k, v in h.items() if k.startswith(keys)} for h in t.state.log_history if "loss" in h
             and h["step"] > N] for t in (resumed, full)]
    assert logs[0] and len(logs[0]) == len(logs[1])
    for got, want in zip(*logs):
        assert got == pytest.approx(want, rel=1e-6, nan_ok=True)


class StopAt(TrainerCallback):
    """Stops the run at step `step` with a checkpoint: what the signal handler does, without the signal."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_save = control.should_training_stop = True


class StepCounter(TrainerCallback):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.seen.append(state.global_step)


@pytest.mark.parametrize("name", ["init", "geometric+grad_normalize"])
def test_a_run_really_stopped_at_n_resumes_to_the_same_parameters(name, tmp_path, train_data, tokenizer):
    settings = {**run_settings("adamw_torch", 2), "save_strategy": "no"}
    full = make_trainer(tmp_path / "full", train_data, tokenizer, name, **settings)
    full.train()
    stopped = make_trainer(tmp_path / "run", train_data, tokenizer, name, callbacks=[StopAt(N)], **settings)
    stopped.train()
    assert stopped.state.global_step == N and sorted(p.name for p in (tmp_path / "run").iterdir()) == [f"checkpoint-{N}"]
    resumed = make_trainer(tmp_path / "run", train_data, tokenizer, name, model_seed=5, **settings)
    resumed.train(resume_from_checkpoint=True)
    assert_parameters_close(parameters(resumed.model), parameters(full.model))
    assert_states_close(resumed.weighting.state_dict(), full.weighting.state_dict())


# What a checkpoint holds ---------------------------------------------------------------------------


def _holds_pickle(data: bytes) -> bool:
    """A raw pickle stream, or a zip archive (torch.save's format) with a pickle inside."""
    if data[:4] == b"PK\x03\x04":
        import io
        import zipfile

        return any(name.endswith(".pkl") for name in zipfile.ZipFile(io.BytesIO(data)).namelist())
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return True
    try:
        list(pickletools.genops(data))
    except Exception:
        return False
    return True


#: Strategies whose state holds a K × P tensor, and its key: it goes to safetensors.
TENSOR_STATES = {"db_mtl": "ema", "moco": "tracked", "excess_mtl": "squares"}


@pytest.mark.parametrize("name", ["init", *TENSOR_STATES])
def test_checkpoint_weighting_state_is_json_and_safetensors_only(name, tmp_path, train_data, tokenizer):
    if name not in WEIGHTINGS:
        pytest.skip(f"{name} is not registered")
    trainer = make_trainer(tmp_path, train_data, tokenizer, name, max_steps=2, save_steps=2)
    trainer.train()
    checkpoint = tmp_path / "checkpoint-2"
    files = sorted(p.name for p in checkpoint.iterdir())
    weighting_files = [f for f in files if f.startswith("weighting_state")]
    expected = {WEIGHTING_STATE_FILE, WEIGHTING_TENSORS_FILE} if name in TENSOR_STATES else {WEIGHTING_STATE_FILE}
    assert set(weighting_files) == expected
    state = json.loads((checkpoint / WEIGHTING_STATE_FILE).read_text())
    assert state["name"] == name
    if name == "init":
        assert all(math.isfinite(v) for v in state["state"]["reference_losses"].values())
    else:
        key = TENSOR_STATES[name]
        assert state["state"][key] == {"__tensor__": f"state.{key}"}
    for name in weighting_files:
        assert not _holds_pickle((checkpoint / name).read_bytes()), name
    assert _holds_pickle((checkpoint / "optimizer.pt").read_bytes())  # the check does see a torch.save file
    # The model itself is safetensors; the Trainer's own optimizer/scheduler/RNG files are torch.save
    # files (loaded by the Trainer with weights_only=True): that part is the Trainer's format, not ours.
    # training_args.bin is the Trainer's pickled TrainingArguments, kept for humans and never loaded on resume.
    assert "model.safetensors" in files and [f for f in files if f.endswith(".bin")] == ["training_args.bin"]
    assert {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= set(files)


def test_incomplete_checkpoints_are_never_resumed_from(tmp_path, train_data, tokenizer):
    trainer = make_trainer(tmp_path, train_data, tokenizer, "geometric", max_steps=4, save_steps=2)
    trainer.train()
    # A run killed while saving checkpoint-4: the Trainer's files are there, the weighting state
    # (written last) is not. And a folder a crash left empty.
    (tmp_path / "checkpoint-4" / WEIGHTING_STATE_FILE).unlink()
    (tmp_path / "checkpoint-6").mkdir()
    assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-2")
    with pytest.raises(ValueError, match=r"checkpoint-4 is incomplete.*checkpoint-2"):
        make_trainer(tmp_path, train_data, tokenizer, "geometric").train(
            resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    steps = StepCounter()
    resumed = make_trainer(tmp_path, train_data, tokenizer, "geometric", max_steps=4, save_steps=100,
                           callbacks=[steps])
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 4 and steps.seen == [3, 4]


def test_resuming_with_another_weighting_is_refused(tmp_path, train_data, tokenizer):
    make_trainer(tmp_path, train_data, tokenizer, "geometric", max_steps=2, save_steps=2).train()
    with pytest.raises(ValueError, match="--weighting geometric, not equal"):
        make_trainer(tmp_path, train_data, tokenizer, "equal", max_steps=4).train(resume_from_checkpoint=True)


# Rank agreement under 2 processes ------------------------------------------------------------------


@pytest.mark.distributed
def test_every_rank_holds_the_same_strategy_state_and_weights_at_every_logging_step(tmp_path):
    """One torchrun launch, 2 gloo processes: every registered strategy (and the compositions) for 3 steps,
    each rank dumping `weighting.state_dict()` and the model parameters (tensors by SHA-256: bitwise) and
    its logged values at every logging step; then a run in which only rank 1 receives SIGTERM: both ranks
    stop at the same step, with one complete checkpoint."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    worker = Path(__file__).resolve().parent / "resume_worker.py"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    steps = 3
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker),
               str(tmp_path / "runs"), "--weighting", ",".join(STRATEGIES), "--max_steps", str(steps),
               "--optim", "adamw_torch", "--rank_dumps", str(tmp_path / "dumps"), "--self_signal", "1:2",
               "--watchdog", "280"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=worker.parents[1])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    for name in STRATEGIES:
        folder = tmp_path / "dumps" / name
        for step in range(1, steps + 1):
            ranks = [json.loads((folder / f"rank{r}-step{step}.json").read_text()) for r in (0, 1)]
            assert ranks[0]["state"] == ranks[1]["state"], f"{name}, step {step}: the ranks' weighting states differ"
            assert ranks[0]["parameters"] == ranks[1]["parameters"], f"{name}, step {step}: the ranks' parameters differ"
            logged = {k: v for k, v in ranks[0]["logs"].items() if k.startswith(("loss", "weight_", "grad_norm", "cos_"))}
            assert any(k.startswith("weight_") for k in logged)
            assert {k: ranks[1]["logs"][k] for k in logged} == logged, f"{name}, step {step}: logged values differ"
    results = [json.loads((tmp_path / "runs" / "signal" / f"result.rank{r}.json").read_text()) for r in (0, 1)]
    assert results[0] == results[1] == {"global_step": 2, "interrupted_by": int(signal.SIGTERM),
                                        "checkpoints": ["checkpoint-2"]}
    assert is_complete_checkpoint(str(tmp_path / "runs" / "signal" / "checkpoint-2"))


@pytest.fixture(scope="module")
def every_kind(glue_dir, silver_dir, tokenizer):
    from conftest import every_kind_tasks

    specs, train, _ = every_kind_tasks(glue_dir, silver_dir, 32, tokenizer, max_seq_length=32)
    return specs, train


@pytest.mark.parametrize("name", ["geometric", "prior", "grad_normalize", "upgrad"])
def test_every_task_kind_resumes_exactly(name, tmp_path, every_kind, tokenizer):
    """One task of every kind (classification, regression, token tags, multi-label, multiple choice) on real text:
    the run resumed from step N's checkpoint ends where the uninterrupted run ends."""
    import conftest
    from resume_worker import training_args

    specs, train = every_kind
    settings = dict(run_settings("adamw_torch", 2), per_device_train_batch_size=4)

    def trainer(folder, seed):
        return conftest.make_trainer(training_args(tmp_path / folder, name, **settings), train, tokenizer, tasks=specs,
                                     model_seed=seed)

    full = trainer("full", 0)
    full.train()
    resumed = trainer("resumed", 1)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / f"checkpoint-{N}"))
    assert resumed.state.global_step == full.state.global_step == 2 * N
    assert_parameters_close(parameters(resumed.model), parameters(full.model))
    assert_states_close(resumed.weighting.state_dict(), full.weighting.state_dict())
    for got, want in zip(train_logs(resumed, N), train_logs(full, N), strict=True):
        assert got == pytest.approx(want, rel=1e-6, nan_ok=True)
        assert {f"loss_{spec.name}" for spec in specs} <= set(got)
