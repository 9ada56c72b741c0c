"""Training curves of a multi-task run, drawn from the Trainer's log history (`trainer_state.json`).

`plot_run(RUN_DIR)` (and `hf-mtl plot RUN_DIR`) writes one PNG per quantity, each with one line per task:

* `loss.png`: the training loss of every task (`loss_<task>`) and their plain mean (`loss`);
* `weights.png`: every task's effective weight dF/dL_i (`weight_<task>`);
* `grad_norm.png`: every task's gradient norm (`grad_norm_<task>`), when the strategy logs it;
* `rows.png`: every task's training rows per optimizer step (`rows_<task>`, what the sampler drew) and
  `epochs.png` the passes over each task's training rows so far (`epochs_<task>`);
* `eval.png`: every task's evaluation metrics over steps (`eval_<task>_<metric>`, one line per task
  and metric) and the GLUE score;
* `training_curves.png`: all of the above in one figure; the model card shows this one.

matplotlib is an optional dependency (`pip install "hf_mtl[plot]"`). Figures are built with the
object-oriented API (`matplotlib.figure.Figure`), so no GUI backend and no global pyplot state is used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRAINER_STATE = "trainer_state.json"
EVAL_RESULTS = "eval_results.json"
#: The combined figure, embedded in the model card.
SUMMARY_PNG = "training_curves.png"
# Per-split bookkeeping the Trainer adds to every evaluation; not a metric worth a curve.
EVAL_BOOKKEEPING = ("loss", "runtime", "samples_per_second", "steps_per_second", "model_preparation_time")


def require_matplotlib() -> Any:
    """Import matplotlib's `Figure`, or fail with the install command."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            'Plotting needs matplotlib, an optional dependency of hf_mtl: pip install "hf_mtl[plot]"'
        ) from error
    return Figure


@dataclass
class Curves:
    """The series found in a log history, as (steps, values) per key.

    `loss`, `weight`, `grad_norm`, `rows` and `epochs` map a task name to its training series; `eval` maps a task name
    to {metric: series} (MNLI's splits appear as `matched_accuracy` / `mismatched_accuracy`);
    `mean_loss` and `glue_score` are single series.
    """

    loss: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    weight: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    grad_norm: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    rows: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    epochs: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    eval: dict[str, dict[str, tuple[list[int], list[float]]]] = field(default_factory=dict)
    mean_loss: tuple[list[int], list[float]] = field(default_factory=lambda: ([], []))
    glue_score: tuple[list[int], list[float]] = field(default_factory=lambda: ([], []))
    #: How the macro score is labelled: `eval_glue_score` (all tasks GLUE) or `eval_score`.
    score_label: str = "GLUE score"

    @property
    def empty(self) -> bool:
        return not (self.loss or self.weight or self.grad_norm or self.eval or self.mean_loss[0] or self.glue_score[0])


def _last_evaluation_per_step(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop an evaluation that a later one at the same step repeats (the final `--do_eval` after an
    in-training evaluation at the last step), so curves get one point per step."""
    def key(entry: dict[str, Any]) -> tuple:
        return entry.get("step"), frozenset(k for k in entry if k.startswith("eval_"))

    last = {key(e): i for i, e in enumerate(history) if any(k.startswith("eval_") for k in e)}
    return [e for i, e in enumerate(history) if not any(k.startswith("eval_") for k in e) or last[key(e)] == i]


def load_log_history(run: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The log history of a run: `RUN/trainer_state.json`, else the one of its last checkpoint.

    An `eval_results.json` next to the state (what `hf-mtl train --do_eval` writes after training)
    is added as one more evaluation entry at the last step when the history does not already hold
    those values, so a run that evaluated only at the end still gets its evaluation points.
    """
    run = Path(run)
    state_file = run if run.is_file() else run / TRAINER_STATE
    if not state_file.is_file() and run.is_dir():
        from transformers.trainer_utils import get_last_checkpoint

        checkpoint = get_last_checkpoint(str(run))
        if checkpoint is not None:
            state_file = Path(checkpoint) / TRAINER_STATE
    if not state_file.is_file():
        raise FileNotFoundError(
            f"{run} holds no {TRAINER_STATE} (nor a checkpoint-* folder with one). Pass the output_dir of a "
            "training run (hf-mtl train saves the state there), or the path of a trainer_state.json."
        )
    state = json.loads(state_file.read_text())
    history = _last_evaluation_per_step(state.get("log_history", []))
    eval_file = state_file.parent / EVAL_RESULTS
    if eval_file.is_file():
        final = {k: v for k, v in json.loads(eval_file.read_text()).items() if k.startswith("eval_")}
        logged = {k for entry in history for k in entry}
        missing = {k: v for k, v in final.items() if k not in logged}
        if missing:
            history.append({**missing, "step": state.get("global_step", 0)})
    return history


def collect_curves(log_history: Iterable[Mapping[str, Any]], tasks: Sequence[str] | None = None) -> Curves:
    """Sort a Trainer log history into per-task series.

    `tasks` names the tasks (longest match first, so `my_task` wins over `my`); by default they are
    the `<task>` of every `loss_<task>` / `weight_<task>` key, and of `eval_<task>_*` when a run has
    only evaluations.
    """
    history = [entry for entry in log_history if "step" in entry]
    names = list(tasks) if tasks is not None else _task_names(history)
    by_length = sorted(names, key=len, reverse=True)
    curves = Curves()

    def add(series: dict[str, tuple[list[int], list[float]]], key: str, step: int, value: Any) -> None:
        steps, values = series.setdefault(key, ([], []))
        steps.append(step)
        values.append(float(value))

    for entry in history:
        step = int(entry["step"])
        for key, value in entry.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if key == "loss":
                curves.mean_loss[0].append(step)
                curves.mean_loss[1].append(float(value))
            elif key in ("eval_glue_score", "eval_score"):  # the macro score over tasks (GLUE or not)
                curves.glue_score[0].append(step)
                curves.glue_score[1].append(float(value))
                curves.score_label = "GLUE score" if key == "eval_glue_score" else "score (mean over tasks)"
            elif key.startswith("eval_"):
                rest = key.removeprefix("eval_")
                task = next((t for t in by_length if rest.startswith(f"{t}_")), None)
                metric = rest[len(task) + 1:] if task else None
                if task and metric and not any(metric.endswith(b) for b in EVAL_BOOKKEEPING):
                    add(curves.eval.setdefault(task, {}), metric, step, value)
            else:
                for prefix, series in (("grad_norm_", curves.grad_norm), ("loss_", curves.loss),
                                       ("weight_", curves.weight), ("rows_", curves.rows), ("epochs_", curves.epochs)):
                    if key.startswith(prefix) and key.removeprefix(prefix) in names:
                        add(series, key.removeprefix(prefix), step, value)
                        break
    order = {name: index for index, name in enumerate(names)}  # tasks in run order, not the JSON's key order
    for attribute in ("loss", "weight", "grad_norm", "rows", "epochs", "eval"):
        setattr(curves, attribute, dict(sorted(getattr(curves, attribute).items(), key=lambda kv: order[kv[0]])))
    return curves


def _task_names(history: Sequence[Mapping[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for entry in history:
        for key in entry:
            for prefix in ("loss_", "weight_", "grad_norm_"):
                if key.startswith(prefix):
                    names.setdefault(key.removeprefix(prefix))
    if not names:  # an evaluation-only history: eval_<task>_loss names every evaluated task
        for entry in history:
            for key in entry:
                if key.startswith("eval_") and key.endswith("_loss"):
                    names.setdefault(key[len("eval_"):-len("_loss")])
    return list(names)


def plot_curves(curves: Curves, output_dir: str | os.PathLike[str], title: str | None = None) -> list[Path]:
    """Write the PNGs described in the module docstring for the series present; returns their paths."""
    Figure = require_matplotlib()
    if curves.empty:
        raise ValueError(
            "the log history holds no training or evaluation values to plot (no loss_<task>, weight_<task>, "
            "grad_norm_<task> or eval_* keys). Train with logging on (logging_steps) and save the state."
        )
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    panels = _panels(curves)
    written = []
    for name, draw in panels:
        figure = Figure(figsize=(6.4, 4.2), layout="constrained")
        draw(figure.add_subplot())
        if title:
            figure.suptitle(title)
        path = output / f"{name}.png"
        figure.savefig(path, dpi=100)
        written.append(path)
    columns = 2 if len(panels) > 1 else 1
    rows = -(-len(panels) // columns)
    summary = Figure(figsize=(6.4 * columns, 4.2 * rows), layout="constrained")
    for index, (_, draw) in enumerate(panels, 1):
        draw(summary.add_subplot(rows, columns, index))
    if title:
        summary.suptitle(title)
    path = output / SUMMARY_PNG
    summary.savefig(path, dpi=100)
    written.append(path)
    return written


def plot_run(run: str | os.PathLike[str], output_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Plot a run's `trainer_state.json` (see the module docstring); PNGs go to `output_dir` (default: RUN)."""
    history = load_log_history(run)
    tasks = None
    config_file = Path(run) / "config.json"
    if config_file.is_file():
        tasks = [t["name"] for t in json.loads(config_file.read_text()).get("tasks", [])] or None
    run_dir = Path(run) if Path(run).is_dir() else Path(run).parent
    return plot_curves(collect_curves(history, tasks), output_dir or run_dir, title=run_dir.resolve().name)


def _panels(curves: Curves) -> list[tuple[str, Any]]:
    """(file stem, draw(axes)) for every quantity that has data, in a fixed order."""
    from matplotlib.ticker import MaxNLocator

    panels: list[tuple[str, Any]] = []

    def lines(series: Mapping[str, tuple[list[int], list[float]]], ylabel: str, heading: str,
              extra: tuple[str, tuple[list[int], list[float]]] | None = None, log: bool = False) -> Any:
        def draw(ax: Any) -> None:
            for label, (steps, values) in series.items():
                ax.plot(steps, values, marker="o" if len(steps) < 3 else None, label=label)
            if extra is not None and extra[1][0]:
                ax.plot(*extra[1], color="black", linestyle="--", marker="s" if len(extra[1][0]) < 3 else None,
                        label=extra[0])
            if log and all(v > 0 for _, values in series.values() for v in values):
                ax.set_yscale("log")
            ax.set_xlabel("step")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(ylabel)
            ax.set_title(heading)
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
        return draw

    if curves.loss or curves.mean_loss[0]:
        panels.append(("loss", lines(curves.loss, "training loss", "Training loss per task",
                                     extra=("mean (loss)", curves.mean_loss), log=True)))
    if curves.weight:
        panels.append(("weights", lines(curves.weight, "dF/dL_i", "Effective task weight")))
    if curves.grad_norm:
        panels.append(("grad_norm", lines(curves.grad_norm, "gradient norm", "Gradient norm per task", log=True)))
    if curves.rows:
        panels.append(("rows", lines(curves.rows, "rows per step", "Training rows per step (sampling)")))
    if curves.epochs:
        panels.append(("epochs", lines(curves.epochs, "passes over the task's rows", "Epochs seen per task")))
    if curves.eval or curves.glue_score[0]:
        flat = {f"{task} {metric}": series for task, metrics in curves.eval.items() for metric, series in metrics.items()}
        panels.append(("eval", lines(flat, "metric", "Evaluation metrics", extra=(curves.score_label, curves.glue_score))))
    return panels
