"""Each task's best moment during training: its best dev value, the step, and the checkpoint that holds it.

Tasks peak at different steps (small ones early, large ones late), while the `Trainer` keeps one "best" model
by one metric. `TaskBestCallback` follows every task on its own:

* At each evaluation during training it reads the task's value from the evaluation metrics: by default the
  task's score (`metrics.task_score`: the mean of its metrics, what the GLUE score averages), or the metric
  named for it with `--best_metric_for_task mrpc=f1,stsb=spearmanr` (`loss` or any name ending in `loss`:
  lower is better; every other metric: higher is better). A task evaluated on several splits (MNLI) counts
  the mean over its splits. A NaN value (a correlation of constant predictions) is never a best.
* The records live in the trainer state (`trainer_state.json`, key `stateful_callbacks.TaskBestCallback`,
  in the run folder and in every checkpoint), so a resumed run keeps them (`MultiTaskTrainer.train` restores
  them from the checkpoint it resumes from).
* The checkpoints that are some task's best are kept out of `save_total_limit`'s rotation
  (`rotate_checkpoints_keeping`): the limit counts the other checkpoints, so the run keeps up to one more
  checkpoint per task on disk (at most K extra, fewer when tasks share a best step).

A best step has a checkpoint only when a checkpoint is saved at that step: evaluate and save at the same
steps (`--save_steps` a multiple of `--eval_steps`); the callback warns when they are not aligned.
`best_checkpoint(RUN, task)` finds a task's best checkpoint in a run folder (`hf-mtl export --best`,
`hf-mtl evaluate --best`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, sort_checkpoints

from .tasks import TaskSpec

logger = logging.getLogger(__name__)

#: The default per-task value: the task's score (the mean of its metrics, `metrics.task_score`).
SCORE = "score"
#: Entries the Trainer adds to every split's evaluation metrics besides the task's own metrics.
_TRAINER_ENTRIES = ("loss", "runtime", "samples_per_second", "steps_per_second", "model_preparation_time",
                    "jit_compilation_time")
TRAINER_STATE = "trainer_state.json"


def greater_is_better(metric: str) -> bool:
    """Losses are better lower, every other metric higher."""
    return not metric.endswith("loss")


def parse_best_metrics(text: str | None, tasks: Sequence[TaskSpec]) -> dict[str, str]:
    """`--best_metric_for_task` (`task=metric,...`) as {task: metric} for every task, `score` where not given."""
    names = [t.name for t in tasks]
    chosen = dict.fromkeys(names, SCORE)
    for item in (text or "").split(","):
        if not item.strip():
            continue
        task, sep, metric = (part.strip() for part in item.partition("="))
        if not sep or not task or not metric:
            raise ValueError(f"--best_metric_for_task {text!r}: {item.strip()!r} is not TASK=METRIC; write e.g. "
                             "--best_metric_for_task mrpc=f1,stsb=spearmanr (metrics as in eval_<task>_<metric>, "
                             "or score / loss).")
        if task not in chosen:
            raise ValueError(f"--best_metric_for_task {text!r}: {task!r} is not a task of this run; its tasks are {names}.")
        chosen[task] = metric
    return chosen


class TaskBestCallback(TrainerCallback, ExportableState):
    """Tracks each task's best evaluation during training (see the module docstring).

    Args:
        eval_keys: task name -> its evaluation keys (`TaskSpec.eval_keys()` values: `mrpc`, `mnli_matched`, ...).
        metric_for_task: task name -> the metric that ranks its evaluations (`score`, `loss`, or a metric name).

    `best` maps each task to `{"metric", "value", "step", "epoch", "greater_is_better", "checkpoint"}` once it
    has an evaluation (`checkpoint` is the folder name `checkpoint-<step>`, relative to the run folder).
    """

    def __init__(self, eval_keys: Mapping[str, Sequence[str]], metric_for_task: Mapping[str, str]) -> None:
        self.eval_keys = {task: list(keys) for task, keys in eval_keys.items()}
        self.metric_for_task = dict(metric_for_task)
        self.best: dict[str, dict[str, Any]] = {}
        self._split_values: dict[str, dict[str, float]] = {}
        self._training = False

    def state(self) -> dict[str, Any]:
        return {"args": {"eval_keys": self.eval_keys, "metric_for_task": self.metric_for_task},
                "attributes": {"best": self.best}}

    def checkpoints(self) -> set[str]:
        """The checkpoint folder names that are some task's best."""
        return {record["checkpoint"] for record in self.best.values()}

    def restore(self, checkpoint: str | os.PathLike[str]) -> None:
        """The records saved in a checkpoint's trainer state (resuming a run). A task whose ranking metric was
        another in that run starts afresh, with a warning."""
        saved = read_task_bests(Path(checkpoint) / TRAINER_STATE)
        for task, record in saved.items():
            if task not in self.metric_for_task:
                continue
            if record.get("metric") != self.metric_for_task[task]:
                logger.warning("Task %s's best was ranked by %s in the checkpoint and by %s now: its best starts afresh.",
                               task, record.get("metric"), self.metric_for_task[task])
                continue
            self.best[task] = dict(record)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._training, self._split_values = True, {}
        evaluation, saving = _strategy(args.eval_strategy), _strategy(args.save_strategy)
        if evaluation == "no":
            return
        if saving == "no":
            logger.warning("Each task's best evaluation is recorded, but --save_strategy no saves no checkpoint to "
                           "keep it: `hf-mtl export/evaluate --best` will have no checkpoint to read.")
        elif saving != evaluation or (evaluation == "steps" and args.save_steps % (args.eval_steps or args.logging_steps)):
            logger.warning("Evaluation (%s, every %s) and checkpoints (%s, every %s) are not aligned: a task's best "
                           "step may have no checkpoint. Save at every evaluation (--save_steps a multiple of "
                           "--eval_steps, same strategy) to keep each task's best model.", args.eval_strategy,
                           args.eval_steps, args.save_strategy, args.save_steps)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._training = False

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Mapping[str, float] | None = None,
                    **kwargs: Any) -> None:
        """`MultiTaskTrainer.evaluate` evaluates one split at a time: each call holds one split's `eval_<key>_*`."""
        if not self._training or not metrics:
            return
        for task, keys in self.eval_keys.items():
            for key in keys:
                if f"eval_{key}_runtime" in metrics:
                    self._split_values.setdefault(task, {})[key] = self._split_value(task, key, metrics)
            values = self._split_values.get(task, {})
            if len(values) == len(keys):
                self._update(task, sum(values.values()) / len(values), state)
                del self._split_values[task]
        state.stateful_callbacks[type(self).__name__] = self.state()

    def _split_value(self, task: str, key: str, metrics: Mapping[str, float]) -> float:
        prefix = f"eval_{key}_"
        split = {name[len(prefix):]: value for name, value in metrics.items() if name.startswith(prefix)}
        metric = self.metric_for_task[task]
        if metric == SCORE:
            values = [float(v) for name, v in split.items() if name not in _TRAINER_ENTRIES]
            return sum(values) / len(values) if values else math.nan
        if metric not in split:
            known = sorted(name for name in split if name not in _TRAINER_ENTRIES[1:])
            raise ValueError(f"--best_metric_for_task {task}={metric}: the evaluation of {key!r} has no metric "
                             f"{metric!r}; it has {known}. Name one of them, or score (the mean of the task's metrics).")
        return float(split[metric])

    def _update(self, task: str, value: float, state: Any) -> None:
        if math.isnan(value):
            return
        metric = self.metric_for_task[task]
        higher = greater_is_better(metric)
        old = self.best.get(task)
        if old is not None and not (value > old["value"] if higher else value < old["value"]):
            return
        self.best[task] = {"metric": metric, "value": value, "step": state.global_step, "epoch": state.epoch,
                           "greater_is_better": higher, "checkpoint": f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"}


def _strategy(value: Any) -> str:
    """An interval strategy (an enum or its string) as its string."""
    return str(getattr(value, "value", value))


def rotate_checkpoints_keeping(output_dir: str, save_total_limit: int | None, keep: set[str],
                               best_model_checkpoint: str | None = None) -> None:
    """transformers' `rotate_checkpoints` with the folders named in `keep` (checkpoint folder names) left out:
    the `save_total_limit` most recent of the other checkpoints stay (the most recent and the Trainer's own best
    among them), the older ones are deleted, the kept ones never."""
    if not save_total_limit or save_total_limit <= 0:
        return
    checkpoints = sort_checkpoints(output_dir, use_mtime=True, best_model_checkpoint=best_model_checkpoint)
    if not checkpoints:
        return
    others = [path for path in checkpoints if Path(path).name not in keep]
    protected = {checkpoints[-1]} | ({str(Path(best_model_checkpoint))} if best_model_checkpoint else set())
    excess = len(others) - max(save_total_limit, len(protected & set(others)))
    for path in others:
        if excess <= 0:
            break
        if path not in protected:
            shutil.rmtree(path, ignore_errors=True)
            excess -= 1


def delete_checkpoints_except(output_dir: str, keep: set[str]) -> None:
    """Delete every `checkpoint-*` folder of `output_dir` whose name is not in `keep` (the end of a run with
    `save_total_limit=1`, where the Trainer keeps only its own best checkpoint: the tasks' bests stay too)."""
    for path in sort_checkpoints(output_dir):
        if Path(path).name not in keep:
            logger.info("Deleting checkpoint %s (save_total_limit=1 keeps the best checkpoints only)", path)
            shutil.rmtree(path, ignore_errors=True)


def read_task_bests(state_file: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The per-task best records of a `trainer_state.json` ({} when it has none)."""
    data = json.loads(Path(state_file).read_text(encoding="utf-8"))
    saved = (data.get("stateful_callbacks") or {}).get(TaskBestCallback.__name__) or {}
    if isinstance(saved, list):
        saved = saved[-1] if saved else {}
    return dict((saved.get("attributes") or {}).get("best") or {})


def run_task_bests(run: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The per-task best records of a run folder, refusing with the reason and the fix a run that has none."""
    run = Path(run)
    state_file = run / TRAINER_STATE
    if not run.is_dir():
        raise ValueError(f"--best: {run} is not a local run folder; the best checkpoints are folders of the run's "
                         "output_dir (a Hub upload has no checkpoints). Pass the output_dir of `hf-mtl train`.")
    if not state_file.is_file():
        raise ValueError(f"--best: {run} has no {TRAINER_STATE}, so no per-task best was recorded. Pass the output_dir "
                         "of a finished `hf-mtl train` run that evaluated during training.")
    bests = read_task_bests(state_file)
    if not bests:
        raise ValueError(f"--best: {run} recorded no per-task best: it did not evaluate during training. Train with "
                         "--do_eval --eval_strategy steps --eval_steps N --save_strategy steps --save_steps N (or "
                         "epoch for both), or leave out --best to use the final model.")
    return bests


def best_checkpoint(run: str | os.PathLike[str], task: str) -> tuple[Path, dict[str, Any]]:
    """The checkpoint folder of `task`'s best evaluation in run folder `run`, and its record."""
    bests = run_task_bests(run)
    if task not in bests:
        raise ValueError(f"--task {task!r} has no recorded best in {run}; the run recorded {sorted(bests)} (a task "
                         "whose every evaluation was NaN has none).")
    record = bests[task]
    folder = Path(run) / record["checkpoint"]
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"--best: task {task!r} was best at step {record['step']} ({record['metric']} = {record['value']:.4g}), "
            f"but {folder} holds no model: no checkpoint was saved at that step (--save_steps not a multiple of "
            "--eval_steps, or --save_strategy no) or it was deleted. Save at every evaluation to keep each task's best.")
    return folder, record
