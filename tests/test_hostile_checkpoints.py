"""Hostile checkpoints (issue #17): nothing lost, nothing silent.

* A damaged checkpoint (a truncated or empty `model.safetensors`, `optimizer.pt`, `scheduler.pt`,
  `rng_state.pth`, `trainer_state.json`, `weighting_state.json`, `weighting_state.safetensors`) is skipped
  by the automatic resume with a warning naming the file; an explicit resume from it is an error naming
  the file and the last intact checkpoint; when every checkpoint is damaged the run refuses (starting over
  would overwrite them).
* A saved weighting state that does not fit (a NaN or inf anywhere, another type or shape, other task
  names, a missing key, a negative count) is refused on load, naming the file, the line, the key and the fix,
  for a learned strategy (uncertainty), a history one (dwa), famo, an EMA one (db_mtl) and compositions.

Real tokenizer, tiny real BERT, real checkpoints written by real runs, damaged on disk.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from resume_worker import make_datasets, make_trainer, one_thread
from transformers import TrainerCallback

from hf_mtl.checkpoint import (
    WEIGHTING_STATE_FILE,
    WEIGHTING_TENSORS_FILE,
    last_complete_checkpoint,
)

_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def train_data(tokenizer):
    return make_datasets(tokenizer, rows=16)


@pytest.fixture(scope="module")
def run(tmp_path_factory, train_data, tokenizer) -> Path:
    """A real run with checkpoints 2, 4 and 6 (`geometric`, AdamW: optimizer.pt holds moments)."""
    out = tmp_path_factory.mktemp("run") / "out"
    make_trainer(out, train_data, tokenizer, "geometric", optim="adamw_torch", learning_rate=1e-3, max_steps=6,
                 save_steps=2).train()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    return out


def copy_run(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "out"))


def cut_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def empty(path: Path) -> None:
    path.write_bytes(b"")


def not_json(path: Path) -> None:
    path.write_text('{\n  "name": "geometric",\n  "state": {"num_clamped": 0,,}\n}\n')


def no_state_key(path: Path) -> None:
    saved = json.loads(path.read_text())
    del saved["state"]
    path.write_text(json.dumps(saved, indent=2))


DAMAGES = {"half": cut_half, "empty": empty, "not_json": not_json, "no_state_key": no_state_key}
#: (file, damage): every file the Trainer reads on resume, cut in half or emptied; the weighting state also
#: not JSON at all, or JSON without its "state".
DAMAGED_FILES = [
    ("model.safetensors", "half"), ("model.safetensors", "empty"), ("optimizer.pt", "half"), ("optimizer.pt", "empty"),
    ("scheduler.pt", "half"), ("scheduler.pt", "empty"), ("rng_state.pth", "half"), ("trainer_state.json", "half"),
    ("config.json", "empty"), (WEIGHTING_STATE_FILE, "half"), (WEIGHTING_STATE_FILE, "not_json"),
    (WEIGHTING_STATE_FILE, "no_state_key"),
]


class StepCounter(TrainerCallback):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.seen.append(state.global_step)


# Case 1 and 3: damaged checkpoints ------------------------------------------------------------------


@pytest.mark.parametrize("name, damage", DAMAGED_FILES, ids=[f"{f}-{d}" for f, d in DAMAGED_FILES])
def test_a_damaged_checkpoint_is_skipped_naming_the_file_and_an_explicit_resume_from_it_is_refused(
        name, damage, run, tmp_path, train_data, tokenizer, caplog):
    out = copy_run(run, tmp_path)
    damaged = out / "checkpoint-6" / name
    DAMAGES[damage](damaged)
    with caplog.at_level(logging.WARNING, logger="hf_mtl.checkpoint"):
        assert last_complete_checkpoint(str(out)) == str(out / "checkpoint-4")
    assert f"Skipping {out / 'checkpoint-6'}: {damaged}" in caplog.text
    line = r", line \d+, column \d+: not valid JSON" if damage == "not_json" or name.endswith(".json") and damage == "half" else ""
    with pytest.raises(ValueError, match=rf"checkpoint-6 is damaged: {damaged}{line}.*--resume_from_checkpoint {out / 'checkpoint-4'}"):
        make_trainer(out, train_data, tokenizer, "geometric").train(resume_from_checkpoint=str(out / "checkpoint-6"))


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt", WEIGHTING_STATE_FILE])
def test_resuming_past_a_damaged_checkpoint_trains_on_from_the_last_intact_one(name, run, tmp_path, train_data,
                                                                                 tokenizer):
    out = copy_run(run, tmp_path)
    cut_half(out / "checkpoint-6" / name)
    steps = StepCounter()
    trainer = make_trainer(out, train_data, tokenizer, "geometric", optim="adamw_torch", learning_rate=1e-3,
                           max_steps=6, save_steps=100, callbacks=[steps])
    trainer.train(resume_from_checkpoint=True)
    assert steps.seen == [5, 6] and trainer.state.global_step == 6
    assert trainer.optimizer.state_dict()["state"][0]["step"].item() == 6  # AdamW's moments came from checkpoint-4


def test_two_damaged_checkpoints_in_a_row_are_both_skipped(run, tmp_path, caplog):
    out = copy_run(run, tmp_path)
    empty(out / "checkpoint-6" / "optimizer.pt")
    cut_half(out / "checkpoint-4" / "model.safetensors")
    with caplog.at_level(logging.WARNING, logger="hf_mtl.checkpoint"):
        assert last_complete_checkpoint(str(out)) == str(out / "checkpoint-2")
    assert str(out / "checkpoint-6" / "optimizer.pt") in caplog.text
    assert str(out / "checkpoint-4" / "model.safetensors") in caplog.text


def test_when_every_checkpoint_is_damaged_the_resume_refuses_and_deletes_nothing(run, tmp_path, train_data, tokenizer):
    out = copy_run(run, tmp_path)
    cut_half(out / "checkpoint-6" / "model.safetensors")
    empty(out / "checkpoint-4" / "scheduler.pt")
    not_json(out / "checkpoint-2" / WEIGHTING_STATE_FILE)
    before = {p: p.stat().st_size for p in out.rglob("*") if p.is_file()}
    pattern = (rf"no intact checkpoint.*{out / 'checkpoint-6' / 'model.safetensors'}.*"
               rf"{out / 'checkpoint-4' / 'scheduler.pt'}.*{out / 'checkpoint-2' / WEIGHTING_STATE_FILE}.*delete")
    with pytest.raises(ValueError, match=pattern):
        last_complete_checkpoint(str(out))
    with pytest.raises(ValueError, match=pattern):
        make_trainer(out, train_data, tokenizer, "geometric", max_steps=8).train(resume_from_checkpoint=True)
    assert {p: p.stat().st_size for p in out.rglob("*") if p.is_file()} == before


def test_only_incomplete_checkpoints_still_mean_a_fresh_start_and_a_missing_folder_is_named(run, tmp_path, train_data,
                                                                                            tokenizer):
    out = copy_run(run, tmp_path)
    for step in (2, 4, 6):  # every run was killed while writing its checkpoint: nothing to lose
        (out / f"checkpoint-{step}" / WEIGHTING_STATE_FILE).unlink()
    assert last_complete_checkpoint(str(out)) is None
    with pytest.raises(FileNotFoundError, match=r"checkpoint-66 is not a folder"):
        make_trainer(out, train_data, tokenizer, "geometric").train(resume_from_checkpoint=str(out / "checkpoint-66"))


# Case 2: a weighting state that does not fit -------------------------------------------------------

STRATEGY_RUNS = {  # strategy -> extra training arguments (dwa: windows of one step, so its history is filled)
    "uncertainty": {}, "dwa": {"dwa_window": 1}, "famo": {}, "db_mtl": {}, "uncertainty+pcgrad": {},
    "geometric+grad_normalize": {},
}


@pytest.fixture(scope="module")
def saved_states(tmp_path_factory, train_data, tokenizer) -> dict[str, Path]:
    """strategy -> a real checkpoint-3 of a 3-step run with that strategy."""
    root = tmp_path_factory.mktemp("states")
    folders = {}
    for name, extra in STRATEGY_RUNS.items():
        out = root / name.replace("+", "_")
        make_trainer(out, train_data, tokenizer, name, max_steps=3, save_steps=3, **extra).train()
        folders[name] = out / "checkpoint-3"
    return folders


def edit_json(folder: Path, edit) -> None:
    path = folder / WEIGHTING_STATE_FILE
    saved = json.loads(path.read_text())
    edit(saved)
    path.write_text(json.dumps(saved, indent=2))


def put(path: str, value):
    """An edit that sets `saved[path]` ("state.window_means.1.stsb": list indices as numbers)."""

    def edit(saved):
        *parents, last = path.split(".")
        node = saved
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value

    return edit


def drop(path: str):
    def edit(saved):
        *parents, last = path.split(".")
        node = saved
        for key in parents:
            node = node[key]
        del node[last]

    return edit


def rename_task(path: str, old: str, new: str):
    def edit(saved):
        node = saved
        for key in path.split("."):
            node = node[key]
        node[new] = node.pop(old)

    return edit


NAN, INF = float("nan"), float("inf")
JSON_LINE = rf"{WEIGHTING_STATE_FILE}, line \d+: key "
BAD_STATES = [  # (strategy, edit, message)
    ("uncertainty", put("state.log_variances.sst2", NAN), JSON_LINE + r"state.log_variances.sst2 is nan, expected a finite"),
    ("uncertainty", put("state.log_variances", [0.0, 0.0, 0.0]), r"key state.log_variances is a list, expected a mapping"),
    ("uncertainty", rename_task("state.log_variances", "mrpc", "cola"),
     (r"state.log_variances holds values for tasks \['cola', 'sst2', 'stsb'\], but this run trains \['sst2', 'stsb', "
      r"'mrpc'\].*Resume with the same --tasks")),
    ("dwa", put("state.window_means.1.stsb", INF), JSON_LINE + r"state.window_means\[1\].stsb is inf"),
    ("dwa", put("state.window_sums.mrpc", NAN), JSON_LINE + r"state.window_sums.mrpc is nan"),
    ("dwa", put("state.window_steps", -3), r"state.window_steps is -3, expected a count >= 0"),
    ("dwa", put("state.window_steps", 1.5), r"state.window_steps is 1.5, expected a whole number"),
    ("dwa", drop("state.window_sums"), r"key state has no key 'window_sums'"),
    ("famo", put("state.logits.mrpc", NAN), JSON_LINE + r"state.logits.mrpc is nan"),
    ("famo", put("state.previous_losses.sst2", -INF), JSON_LINE + r"state.previous_losses.sst2 is -inf"),
    ("famo", put("state.previous_losses", {"sst2": 1.0}), r"does not fit.*previous losses for tasks \['sst2'\]"),
    ("db_mtl", put("state.steps", NAN), JSON_LINE + r"state.steps is nan"),
    ("uncertainty+pcgrad", put("state.loss.log_variances.stsb", NAN), JSON_LINE + r"state.loss.log_variances.stsb is nan"),
    ("uncertainty+pcgrad", put("state.gradient.steps", "3"), r"state.gradient.steps is '3', expected a number"),
    ("geometric+grad_normalize", put("state.gradient.num_skipped", INF), r"state.gradient.num_skipped is inf"),
    ("geometric+grad_normalize", drop("state.loss"), r"key state has no key 'loss'"),
    ("geometric+grad_normalize", put("engine.skipped_steps", NAN), JSON_LINE + r"engine.skipped_steps is nan"),
    ("famo", drop("name"), rf"checkpoint-3 is damaged: .*{WEIGHTING_STATE_FILE} is damaged: it has no key 'name'"),
]


@pytest.mark.parametrize("name, edit, message", BAD_STATES,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD_STATES)])
def test_a_weighting_state_that_does_not_fit_is_refused_naming_file_key_and_fix(
        name, edit, message, saved_states, tmp_path, train_data, tokenizer):
    checkpoint = Path(shutil.copytree(saved_states[name], tmp_path / "out" / "checkpoint-3"))
    edit_json(checkpoint, edit)
    trainer = make_trainer(tmp_path / "out", train_data, tokenizer, name, max_steps=5, **STRATEGY_RUNS[name])
    with pytest.raises(ValueError, match=message) as raised:
        trainer.train(resume_from_checkpoint=str(checkpoint))
    assert str(checkpoint) in str(raised.value)
    if "--tasks" not in message:  # the fix: no earlier checkpoint here, so delete this one to start over
        assert f"elete {checkpoint}" in str(raised.value)
    assert trainer.state.global_step == 0


def test_a_non_finite_uncertainty_state_with_skip_step_is_refused_instead_of_skipping_every_step(
        saved_states, tmp_path, train_data, tokenizer):
    out = tmp_path / "out"
    shutil.copytree(saved_states["uncertainty"], out / "checkpoint-3")
    shutil.copytree(saved_states["uncertainty"], out / "checkpoint-2")  # an earlier intact one: the fix names it
    edit_json(out / "checkpoint-3", put("state.log_variances.stsb", NAN))
    trainer = make_trainer(out, train_data, tokenizer, "uncertainty", max_steps=5, nan_policy="skip_step")
    with pytest.raises(ValueError, match=rf"state.log_variances.stsb is nan.*Resume from the earlier {out / 'checkpoint-2'}"):
        trainer.train(resume_from_checkpoint=True)


def test_a_non_finite_or_missing_db_mtl_average_names_the_safetensors_file(saved_states, tmp_path, train_data,
                                                                             tokenizer):
    from safetensors.torch import load_file, save_file

    checkpoint = Path(shutil.copytree(saved_states["db_mtl"], tmp_path / "out" / "checkpoint-3"))
    tensors_path = checkpoint / WEIGHTING_TENSORS_FILE
    tensors = load_file(tensors_path)
    ema = tensors["state.ema"].clone()
    ema[1, 7] = float("nan")
    save_file({"state.ema": ema}, tensors_path)
    trainer = make_trainer(tmp_path / "out", train_data, tokenizer, "db_mtl", max_steps=5)
    with pytest.raises(ValueError, match=rf"{tensors_path}: tensor state.ema holds 1 non-finite value.*index \[1, 7\]"):
        trainer.train(resume_from_checkpoint=str(checkpoint))
    save_file({"other": ema}, tensors_path)  # the JSON points at a tensor the file does not hold
    with pytest.raises(ValueError, match=rf"state.ema refers to tensor 'state.ema', but {tensors_path} has only \['other'\]"):
        trainer.train(resume_from_checkpoint=str(checkpoint))
    tensors_path.write_bytes(b"\x08")  # cut to almost nothing: damage, like any other file
    with pytest.raises(ValueError, match=rf"checkpoint-3 is damaged: {tensors_path} is truncated"):
        trainer.train(resume_from_checkpoint=str(checkpoint))
    assert torch.isfinite(tensors["state.ema"]).all()


# The command line, end to end on real GLUE files ---------------------------------------------------

CLI_RUN = ["--tasks", "sst2,stsb", "--weighting", "uncertainty", "--max_train_samples", "32", "--save_steps", "2",
           "--per_device_train_batch_size", "4", "--do_train", "--report_to", "none", "--disable_tqdm", "true"]


def error_line(stderr: str) -> str:
    """The `hf-mtl: error: ...` line of stderr (progress bars come before it)."""
    return [line for line in stderr.splitlines() if line.startswith("hf-mtl: error:")][-1]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, glue_dir, tiny_checkpoint) -> tuple[Path, list[str]]:
    from hf_mtl.cli import main

    out = tmp_path_factory.mktemp("cli") / "out"
    flags = ["--model_name_or_path", tiny_checkpoint, "--glue_dir", str(glue_dir), *CLI_RUN]
    assert main(["train", *flags, "--max_steps", "4", "--output_dir", str(out)]) == 0
    return out, flags


def test_hf_mtl_train_resumes_past_a_damaged_checkpoint_and_refuses_when_all_are_damaged(cli_run, tmp_path, capsys,
                                                                                           caplog):
    from hf_mtl.cli import main

    run_dir, flags = cli_run
    out = copy_run(run_dir, tmp_path)
    cut_half(out / "checkpoint-4" / "optimizer.pt")
    assert main(["train", *flags, "--max_steps", "6", "--output_dir", str(out)]) == 0
    assert f"Skipping {out / 'checkpoint-4'}: {out / 'checkpoint-4' / 'optimizer.pt'} is truncated" in caplog.text
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 6

    out = Path(shutil.copytree(run_dir, tmp_path / "all-damaged"))
    empty(out / "checkpoint-4" / "model.safetensors")
    cut_half(out / "checkpoint-2" / "rng_state.pth")
    capsys.readouterr()
    assert main(["train", *flags, "--max_steps", "6", "--output_dir", str(out)]) == 2
    error = error_line(capsys.readouterr().err)
    assert error.startswith(f"hf-mtl: error: {out}: no intact checkpoint") and "rng_state.pth" in error
    assert (out / "checkpoint-4" / "model.safetensors").stat().st_size == 0  # nothing overwritten


def test_hf_mtl_train_refuses_a_nan_weighting_state_naming_file_and_key(cli_run, tmp_path, capsys):
    from hf_mtl.cli import main

    run_dir, flags = cli_run
    out = copy_run(run_dir, tmp_path)
    edit_json(out / "checkpoint-4", put("state.log_variances.sst2", NAN))
    capsys.readouterr()
    assert main(["train", *flags, "--max_steps", "6", "--output_dir", str(out)]) == 2
    error = error_line(capsys.readouterr().err)
    assert error.startswith(f"hf-mtl: error: {out / 'checkpoint-4' / WEIGHTING_STATE_FILE}, line ")
    assert "key state.log_variances.sst2 is nan" in error and f"--resume_from_checkpoint {out / 'checkpoint-2'}" in error
