"""What a task is: `TaskSpec`, and the registry of the nine GLUE tasks.

A `TaskSpec` says everything the rest of the library needs to know about one task: how to read its
text, what its labels are, which loss its head uses (cross-entropy for classification, mean squared
error for regression) and which metrics judge it. The GLUE specs use the column names and label ids
of the Hub dataset `nyu-mll/glue`; the local TSV reader in `hf_mtl.data` maps the original files
onto the same names, so everything downstream sees one shape whatever the source.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

TaskKind = Literal["classification", "regression"]
TASK_KINDS: tuple[str, ...] = ("classification", "regression")

# A metric is a GLUE metric name (see `hf_mtl.metrics.METRICS`), an object with
# `.compute(predictions=..., references=...)` (an `evaluate` module) or a callable
# `(predictions, references) -> dict[str, float]`.
Metric = str | Callable[..., dict[str, float]] | Any


@dataclass(frozen=True)
class TaskSpec:
    """One task of a multi-task run.

    Args:
        name: identifier used in CLI flags, head names and logged keys (`loss_<name>`, `eval_<name>_*`).
        kind: `"classification"` (cross-entropy over `num_labels` classes) or `"regression"`
            (mean squared error on one float output).
        num_labels: number of classes; 1 for regression.
        text_columns: one column (single sentence) or two (sentence pair) holding the text.
        label_column: the column holding the integer class id or the float target.
        label_names: class names in id order (classification); used for `id2label` and predictions.
        metrics: what judges the task on its evaluation splits; see `Metric`.
        eval_splits: the evaluation splits of the task's `DatasetDict`, in reporting order.
        hub_config: the configuration name of the task in `nyu-mll/glue` (GLUE tasks only).
        label_range: the valid targets `(low, high)`, both included, of a regression task (STS-B: `(0, 5)`);
            a target outside it is refused when the data is prepared, naming the row. None: any finite number.
    """

    name: str
    kind: TaskKind
    num_labels: int
    text_columns: tuple[str, ...]
    label_column: str = "label"
    label_names: tuple[str, ...] | None = None
    metrics: tuple[Metric, ...] = ("accuracy",)
    eval_splits: tuple[str, ...] = ("validation",)
    hub_config: str | None = None
    label_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(
                f"TaskSpec name={self.name!r} is not a valid task name: use letters, digits, '_' or '-'."
            )
        if self.kind not in TASK_KINDS:
            raise ValueError(
                f"TaskSpec {self.name!r}: kind={self.kind!r} is not supported; use one of {', '.join(TASK_KINDS)}."
            )
        if not 1 <= len(self.text_columns) <= 2:
            raise ValueError(
                f"TaskSpec {self.name!r}: text_columns={self.text_columns!r} must name one or two columns."
            )
        if self.kind == "regression" and self.num_labels != 1:
            raise ValueError(f"TaskSpec {self.name!r}: a regression task has num_labels=1, got {self.num_labels}.")
        if self.kind == "classification":
            if self.num_labels < 2:
                raise ValueError(
                    f"TaskSpec {self.name!r}: a classification task needs num_labels >= 2, got {self.num_labels}."
                )
            if self.label_names is not None and len(self.label_names) != self.num_labels:
                raise ValueError(
                    f"TaskSpec {self.name!r}: {len(self.label_names)} label_names for num_labels={self.num_labels}."
                )
        if not self.eval_splits:
            raise ValueError(f"TaskSpec {self.name!r}: eval_splits must name at least one split.")
        if self.label_range is not None:
            self._check_label_range()

    def _check_label_range(self) -> None:
        """`label_range` is two finite numbers, low < high, on a regression task; stored as a tuple of floats."""
        value = self.label_range
        if self.kind != "regression":
            raise ValueError(
                f"TaskSpec {self.name!r}: label_range={value!r} is for a regression task's targets; a {self.kind} "
                f"task's labels are the class ids 0..{self.num_labels - 1}. Drop label_range (leave it None)."
            )
        values = tuple(value) if isinstance(value, (list, tuple)) else ()
        if len(values) != 2 or not all(
            isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) for x in values
        ):
            raise ValueError(
                f"TaskSpec {self.name!r}: label_range={value!r} must be two finite numbers (low, high), "
                "e.g. label_range=(0, 5), or None for any finite target."
            )
        if not values[0] < values[1]:
            raise ValueError(
                f"TaskSpec {self.name!r}: label_range={value!r} has low >= high; give (low, high) with low < high, "
                "e.g. label_range=(0, 5)."
            )
        object.__setattr__(self, "label_range", (float(values[0]), float(values[1])))

    def eval_keys(self) -> dict[str, str]:
        """Split name -> key used in metric names: `validation` -> `mrpc`,
        `validation_matched` -> `mnli_matched` (a task with several evaluation splits)."""
        if len(self.eval_splits) == 1:
            return {self.eval_splits[0]: self.name}
        return {split: f"{self.name}_{split.removeprefix('validation_')}" for split in self.eval_splits}

    def to_dict(self) -> dict[str, Any]:
        """The part of the spec a saved model needs (no metrics: they may be callables)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "num_labels": self.num_labels,
            "text_columns": list(self.text_columns),
            "label_column": self.label_column,
            "label_names": list(self.label_names) if self.label_names is not None else None,
            "label_range": list(self.label_range) if self.label_range is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        known = {k: v for k, v in data.items() if k in {f.name for f in cls.__dataclass_fields__.values()}}
        for key in ("text_columns", "label_names", "metrics", "eval_splits"):
            if known.get(key) is not None:
                known[key] = tuple(known[key])
        glue = GLUE_TASKS.get(data.get("name"))  # type: ignore[arg-type]
        if "metrics" not in known and glue is not None:
            known["metrics"] = glue.metrics
        # A config saved before label_range existed: a GLUE task of the same kind gets GLUE's documented range.
        if "label_range" not in data and glue is not None and data.get("kind") == glue.kind:
            known["label_range"] = glue.label_range
        return cls(**known)


def _glue(name: str, kind: TaskKind, text: Sequence[str], labels: Sequence[str] | None, metrics: Sequence[str],
          eval_splits: Sequence[str] = ("validation",), label_range: tuple[float, float] | None = None) -> TaskSpec:
    return TaskSpec(
        name=name,
        kind=kind,
        num_labels=len(labels) if labels else 1,
        text_columns=tuple(text),
        label_names=tuple(labels) if labels else None,
        metrics=tuple(metrics),
        eval_splits=tuple(eval_splits),
        hub_config=name,
        label_range=label_range,
    )


#: The nine GLUE tasks (Wang et al. 2019), with the Hub dataset's column names and label ids.
GLUE_TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _glue("cola", "classification", ["sentence"], ["unacceptable", "acceptable"], ["matthews_correlation"]),
        _glue("sst2", "classification", ["sentence"], ["negative", "positive"], ["accuracy"]),
        _glue("mrpc", "classification", ["sentence1", "sentence2"], ["not_equivalent", "equivalent"],
              ["f1", "accuracy"]),
        # STS-B similarity scores are documented as 0 (unrelated) .. 5 (equivalent).
        _glue("stsb", "regression", ["sentence1", "sentence2"], None, ["pearson", "spearmanr"], label_range=(0, 5)),
        _glue("qqp", "classification", ["question1", "question2"], ["not_duplicate", "duplicate"],
              ["f1", "accuracy"]),
        _glue("mnli", "classification", ["premise", "hypothesis"], ["entailment", "neutral", "contradiction"],
              ["accuracy"], eval_splits=("validation_matched", "validation_mismatched")),
        _glue("qnli", "classification", ["question", "sentence"], ["entailment", "not_entailment"], ["accuracy"]),
        _glue("rte", "classification", ["sentence1", "sentence2"], ["entailment", "not_entailment"], ["accuracy"]),
        _glue("wnli", "classification", ["sentence1", "sentence2"], ["not_entailment", "entailment"], ["accuracy"]),
    )
}

# Spellings users type for GLUE tasks (the original folder names and common variants).
_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli", "mnli-mm": "mnli"}


def get_task(name: str | TaskSpec) -> TaskSpec:
    """Look a GLUE task up by name (case-insensitive, `SST-2` and `sst2` alike); a `TaskSpec` passes through."""
    if isinstance(name, TaskSpec):
        return name
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in GLUE_TASKS:
        raise ValueError(
            f"tasks: unknown task {name!r}. Valid GLUE tasks: {', '.join(GLUE_TASKS)}; "
            "for your own task pass a TaskSpec through the Python API."
        )
    return GLUE_TASKS[key]


def parse_tasks(tasks: str | Sequence[str | TaskSpec]) -> list[TaskSpec]:
    """`"sst2,mrpc"` or a list of names/specs -> specs, rejecting duplicates and an empty list."""
    items = [t for t in tasks.split(",") if t.strip()] if isinstance(tasks, str) else list(tasks)
    specs = [get_task(t) for t in items]
    if not specs:
        raise ValueError(f"tasks: got {tasks!r}, which names no task. Pass e.g. --tasks sst2,mrpc,stsb.")
    names = [s.name for s in specs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"tasks: {', '.join(duplicated)} given more than once in {names}; name each task once.")
    return specs
