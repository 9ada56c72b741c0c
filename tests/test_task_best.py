"""Each task's best evaluation during training: tracking, the trainer state, rotation protection, resume."""

from __future__ import annotations

import json
import math

import pytest
from conftest import (
    TASKS,
    glue_dir_or_skip,
    make_trainer,
    tokenized_glue,
    training_arguments,
)

from hf_mtl.task_best import (
    TaskBestCallback,
    best_checkpoint,
    parse_best_metrics,
    read_task_bests,
    rotate_checkpoints_keeping,
)


@pytest.fixture(scope="module")
def glue_data(tokenizer):
    return tokenized_glue(glue_dir_or_skip(), tokenizer, train_rows=48, eval_rows=24)


def _evaluations(log_history):
    return [entry for entry in log_history if "eval_glue_score" in entry]


def _train(tmp_path, glue_data, tokenizer, **overrides):
    train, evaluation = glue_data
    args = training_arguments(tmp_path / "run", **{
        "max_steps": 6, "eval_strategy": "steps", "eval_steps": 1, "save_strategy": "steps", "save_steps": 1,
        "per_device_eval_batch_size": 24, "learning_rate": 0.3, **overrides})
    trainer = make_trainer(args, train, tokenizer, eval_dataset=evaluation)
    trainer.train()
    return trainer


def _expected_bests(trainer, metrics_of):
    """Each task's best (value, step) from the log history, recomputed independently of the callback."""
    values: dict[str, dict[int, float]] = {}
    for entry in trainer.state.log_history:
        for spec in TASKS:
            metric = metrics_of(spec)
            if f"eval_{spec.name}_runtime" in entry:
                values.setdefault(spec.name, {})[entry["step"]] = metric(entry)
    best = {}
    for task, by_step in values.items():
        finite = {step: v for step, v in by_step.items() if not math.isnan(v)}
        top = max(finite.values())
        best[task] = (top, min(step for step, v in finite.items() if v == top))
    return best


def test_each_task_best_is_recorded_in_the_state_and_kept_from_rotation(tmp_path, glue_data, tokenizer):
    trainer = _train(tmp_path, glue_data, tokenizer, save_total_limit=1)
    run = tmp_path / "run"

    def score(spec):
        names = {"sst2": ["accuracy"], "mrpc": ["accuracy", "f1"], "stsb": ["pearson", "spearmanr"]}[spec.name]
        return lambda entry: sum(entry[f"eval_{spec.name}_{n}"] for n in names) / len(names)

    expected = _expected_bests(trainer, score)
    bests = trainer.task_best.best
    assert {task: record["step"] for task, record in bests.items()} == {task: step for task, (_, step) in expected.items()}
    assert {task: record["value"] for task, record in bests.items()} == pytest.approx(
        {task: value for task, (value, _) in expected.items()})
    assert all(record["metric"] == "score" and record["greater_is_better"] for record in bests.values())
    # The tasks' scores averaged at one step are that step's GLUE score.
    step = bests["sst2"]["step"]
    glue = next(e["eval_glue_score"] for e in _evaluations(trainer.state.log_history) if e["step"] == step)
    values = {t: score(s)(next(e for e in trainer.state.log_history if e.get("step") == step
                                and f"eval_{t}_runtime" in e)) for t, s in zip(["sst2", "stsb", "mrpc"], TASKS)}
    assert sum(values.values()) / 3 == pytest.approx(glue)
    # Rotation: the most recent checkpoint plus every task's best, nothing else.
    kept = sorted(p.name for p in run.glob("checkpoint-*"))
    wanted = sorted({"checkpoint-6", *(record["checkpoint"] for record in bests.values())})
    assert kept == wanted
    assert any(record["step"] != 6 for record in bests.values()), "no early best: the rotation was not exercised"
    # Every checkpoint's trainer_state.json holds the records as of that step.
    for name in kept:
        saved = read_task_bests(run / name / "trainer_state.json")
        assert all(record["step"] <= int(name.split("-")[1]) for record in saved.values())
    assert read_task_bests(run / "checkpoint-6" / "trainer_state.json") == bests
    trainer.save_state()  # what `hf-mtl train` does at the end: the run folder's trainer_state.json
    folder, record = best_checkpoint(run, "mrpc")
    assert folder == run / bests["mrpc"]["checkpoint"] and record == bests["mrpc"]


def test_a_named_metric_and_a_loss_rank_the_evaluations(tmp_path, glue_data, tokenizer):
    trainer = _train(tmp_path, glue_data, tokenizer, max_steps=4, best_metric_for_task="mrpc=f1,stsb=loss")
    bests = trainer.task_best.best
    history = trainer.state.log_history
    f1 = {e["step"]: e["eval_mrpc_f1"] for e in history if "eval_mrpc_f1" in e}
    losses = {e["step"]: e["eval_stsb_loss"] for e in history if "eval_stsb_loss" in e}
    assert bests["mrpc"]["value"] == max(f1.values()) and bests["mrpc"]["metric"] == "f1"
    assert bests["stsb"]["value"] == min(losses.values()) and not bests["stsb"]["greater_is_better"]
    assert bests["stsb"]["step"] == min(losses, key=losses.get)


def test_resume_keeps_the_records(tmp_path, glue_data, tokenizer):
    train, evaluation = glue_data
    first = _train(tmp_path, glue_data, tokenizer, max_steps=6)
    run = tmp_path / "run"
    at_three = read_task_bests(run / "checkpoint-3" / "trainer_state.json")
    assert at_three and all(record["step"] <= 3 for record in at_three.values())
    args = training_arguments(run, max_steps=6, eval_strategy="steps", eval_steps=1, save_strategy="steps",
                              save_steps=1, per_device_eval_batch_size=24, learning_rate=0.3)
    resumed = make_trainer(args, train, tokenizer, eval_dataset=evaluation)
    resumed.train(resume_from_checkpoint=str(run / "checkpoint-3"))
    # Without the restore, a best of steps 1-3 would be lost: the resumed run only evaluates steps 4-6.
    assert any(record["step"] <= 3 for record in first.task_best.best.values()), "no early best to restore"
    assert {t: r["step"] for t, r in resumed.task_best.best.items()} == {t: r["step"] for t, r in first.task_best.best.items()}
    assert {t: r["value"] for t, r in resumed.task_best.best.items()} == pytest.approx(
        {t: r["value"] for t, r in first.task_best.best.items()})


def test_rotation_keeps_the_named_checkpoints_and_the_latest(tmp_path):
    for step in range(1, 7):
        (tmp_path / f"checkpoint-{step}").mkdir()
    rotate_checkpoints_keeping(str(tmp_path), 2, keep={"checkpoint-1", "checkpoint-3"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1", "checkpoint-3", "checkpoint-5",
                                                          "checkpoint-6"]
    rotate_checkpoints_keeping(str(tmp_path), 1, keep={"checkpoint-3"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-3", "checkpoint-6"]


def test_bad_best_metric_flags_are_refused():
    with pytest.raises(ValueError, match=r"'cola' is not a task of this run; its tasks are \['sst2', 'stsb', 'mrpc'\]"):
        parse_best_metrics("cola=matthews_correlation", TASKS)
    with pytest.raises(ValueError, match="'mrpc' is not TASK=METRIC"):
        parse_best_metrics("mrpc", TASKS)
    assert parse_best_metrics("mrpc=f1", TASKS) == {"sst2": "score", "stsb": "score", "mrpc": "f1"}
    callback = TaskBestCallback({"mrpc": ["mrpc"]}, {"mrpc": "auc"})
    callback._training = True
    with pytest.raises(ValueError, match=r"mrpc=auc: the evaluation of 'mrpc' has no metric 'auc'; it has \['accuracy', 'f1', 'loss'\]"):
        callback.on_evaluate(None, None, None, metrics={"eval_mrpc_accuracy": 0.5, "eval_mrpc_f1": 0.1,
                                                        "eval_mrpc_loss": 0.7, "eval_mrpc_runtime": 1.0})


def test_best_on_a_run_without_evaluation_is_refused(tmp_path, glue_data, tokenizer):
    train, _ = glue_data
    args = training_arguments(tmp_path / "run", max_steps=2, save_strategy="steps", save_steps=1)
    trainer = make_trainer(args, train, tokenizer)
    trainer.train()
    trainer.save_state()
    with pytest.raises(ValueError, match="recorded no per-task best: it did not evaluate during training"):
        best_checkpoint(tmp_path / "run", "mrpc")
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert not read_task_bests(tmp_path / "run" / "trainer_state.json") and "stateful_callbacks" in state


def test_the_end_of_a_run_with_save_total_limit_1_keeps_the_task_bests(tmp_path, glue_data, tokenizer):
    """With load_best_model_at_end and save_total_limit=1, the Trainer deletes every checkpoint but its own best
    when training ends; the tasks' bests stay."""
    trainer = _train(tmp_path, glue_data, tokenizer, save_total_limit=1, load_best_model_at_end=True,
                     metric_for_best_model="eval_glue_score")
    kept = {p.name for p in (tmp_path / "run").glob("checkpoint-*")}
    wanted = {record["checkpoint"] for record in trainer.task_best.best.values()}
    wanted.add(trainer.state.best_model_checkpoint.rsplit("/", 1)[-1])
    assert kept == wanted
    assert len(kept) > 1, "every best at one step: the clean-up was not exercised"
