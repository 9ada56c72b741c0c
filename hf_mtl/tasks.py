"""What a task is: `TaskSpec`, and the registry of the nine GLUE tasks.

A `TaskSpec` says everything the rest of the library needs to know about one task: its kind (see
`hf_mtl.kinds`: the head, loss, label encoding and metrics), how to read its text, what its labels are,
which metrics judge it and, for a task declared in a task file, where its data comes from (`source`) and
its own overrides (pooling, sequence length, row caps). The GLUE specs use the column names and label
ids of the Hub dataset `nyu-mll/glue`; the local TSV reader in `hf_mtl.data` maps the original files
onto the same names, so everything downstream sees one shape whatever the source.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .kinds import KINDS, get_kind

#: The task kinds (`hf_mtl.kinds.KINDS`): classification, regression, multi_label, token_classification,
#: multiple_choice.
TASK_KINDS: tuple[str, ...] = tuple(KINDS)
TaskKind = str
#: How a sentence-level head reads the encoder: its pooler output, the first token, or the mean over tokens.
POOLINGS: tuple[str, ...] = ("pooler", "cls", "mean")

# A metric is a built-in metric name (see `hf_mtl.metrics`), the name or local path of an `evaluate`
# module, an object with `.compute(predictions=..., references=...)` (a loaded `evaluate` module) or a
# callable `(predictions, references) -> dict[str, float]`.
Metric = str | Callable[..., dict[str, float]] | Any


@dataclass(frozen=True)
class TaskSpec:
    """One task of a multi-task run.

    Args:
        name: identifier used in CLI flags, head names and logged keys (`loss_<name>`, `eval_<name>_*`).
        kind: one of `TASK_KINDS` (`hf_mtl.kinds`): `"classification"` (cross-entropy over `num_labels`
            classes), `"regression"` (squared error on `num_labels` outputs, 1 by default), `"multi_label"`,
            `"token_classification"` or `"multiple_choice"`.
        num_labels: classes, tags, labels or choices (see the kind); None: from `label_names`, else from the
            training data (`hf_mtl.data.resolve_labels`), before the model is built. Regression: 1 when None.
        text_columns: the input columns, as the kind takes them: one or two text columns (sentence-level
            kinds), the words column (token classification), the context then the choices (multiple choice).
        label_column: the column holding the labels.
        label_names: label names in id order; used for `id2label` and predictions. None: from the training
            data's `ClassLabel` feature or the sorted set of its labels, when it has names.
        metrics: what judges the task on its evaluation splits; see `Metric`. Empty: the kind's defaults.
        eval_splits: the evaluation splits of the task's `DatasetDict`, in reporting order.
        hub_config: the configuration name of the task in `nyu-mll/glue` (GLUE tasks only).
        label_range: the valid targets `(low, high)`, both included, of a regression task (STS-B: `(0, 5)`);
            a target outside it is refused when the data is prepared, naming the row. None: any finite number.
        pooling: how this task's sentence-level head reads the encoder (`POOLINGS`); None: the run's default.
        max_seq_length / max_train_samples / max_eval_samples: this task's own values of the run's flags.
        weight: this task's `--task_weights` entry (for `--weighting static`), from a task file's `task_weight`.
        oversample: a factor on this task's share of a step's rows, or its draw probability (`hf_mtl.sampling`:
            ∝ oversample · n^α); None: 1.
        source: where the data comes from, for a task declared in a task file (`hf_mtl.sources`); None: GLUE.
    """

    name: str
    kind: TaskKind
    num_labels: int | None
    text_columns: tuple[str, ...]
    label_column: str = "label"
    label_names: tuple[str, ...] | None = None
    metrics: tuple[Metric, ...] = ()
    eval_splits: tuple[str, ...] = ("validation",)
    hub_config: str | None = None
    label_range: tuple[float, float] | None = None
    pooling: str | None = None
    max_seq_length: int | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    weight: float | None = None
    oversample: float | None = None
    source: dict[str, Any] | None = field(default=None, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(
                f"TaskSpec name={self.name!r} is not a valid task name: use letters, digits, '_' or '-'."
            )
        if self.kind not in TASK_KINDS:
            raise ValueError(
                f"TaskSpec {self.name!r}: kind={self.kind!r} is not supported; use one of {', '.join(TASK_KINDS)}."
            )
        if isinstance(self.text_columns, str) or not all(isinstance(c, str) for c in self.text_columns):
            raise ValueError(f"TaskSpec {self.name!r}: text_columns={self.text_columns!r} must be a list of column names.")
        object.__setattr__(self, "text_columns", tuple(self.text_columns))
        if self.label_names is not None:
            object.__setattr__(self, "label_names", tuple(str(n) for n in self.label_names))
            if len(set(self.label_names)) != len(self.label_names):
                raise ValueError(f"TaskSpec {self.name!r}: label_names {list(self.label_names)} name a label twice.")
            if self.num_labels is None:
                object.__setattr__(self, "num_labels", len(self.label_names))
        if self.num_labels is None and self.kind == "regression":
            object.__setattr__(self, "num_labels", 1)
        if self.num_labels is not None and (isinstance(self.num_labels, bool) or not isinstance(self.num_labels, int)):
            raise ValueError(f"TaskSpec {self.name!r}: num_labels={self.num_labels!r} must be a whole number.")
        get_kind(self.kind).check_spec(self)
        if self.label_names is not None and len(self.label_names) != self.num_labels:
            raise ValueError(
                f"TaskSpec {self.name!r}: {len(self.label_names)} label_names for num_labels={self.num_labels}."
            )
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise ValueError(f"TaskSpec {self.name!r}: pooling={self.pooling!r} is not one of {', '.join(POOLINGS)}.")
        for key in ("max_seq_length", "max_train_samples", "max_eval_samples"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"TaskSpec {self.name!r}: {key}={value!r} must be a whole number >= 1, or unset.")
        if self.oversample is not None and (isinstance(self.oversample, bool) or not isinstance(self.oversample, int | float)
                                            or not math.isfinite(self.oversample) or self.oversample <= 0):
            raise ValueError(f"TaskSpec {self.name!r}: oversample={self.oversample!r} must be a number > 0 (a factor on "
                             "the task's share of the rows or its draw probability; 2 doubles it), or unset.")
        if not self.metrics:
            object.__setattr__(self, "metrics", get_kind(self.kind).default_metrics)
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
                f"task's labels are {f'the class ids 0..{self.num_labels - 1}' if self.num_labels else 'class ids'}. "
                "Drop label_range (leave it None)."
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

    @property
    def resolved(self) -> bool:
        """Whether the label set is known (`num_labels`), as a model head needs."""
        return self.num_labels is not None

    def to_dict(self) -> dict[str, Any]:
        """The part of the spec a saved model needs: plain JSON (metrics only when they are names)."""
        data: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "num_labels": self.num_labels,
            "text_columns": list(self.text_columns),
            "label_column": self.label_column,
            "label_names": list(self.label_names) if self.label_names is not None else None,
            "label_range": list(self.label_range) if self.label_range is not None else None,
        }
        if self.metrics != get_kind(self.kind).default_metrics and all(isinstance(m, str) for m in self.metrics):
            data["metrics"] = list(self.metrics)
        if tuple(self.eval_splits) != ("validation",):
            data["eval_splits"] = list(self.eval_splits)
        for key in ("pooling", "max_seq_length", "max_train_samples", "max_eval_samples", "oversample"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.source is not None:
            data["source"] = dict(self.source)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        known = {k: v for k, v in data.items() if k in {f.name for f in cls.__dataclass_fields__.values()}}
        for key in ("text_columns", "label_names", "metrics", "eval_splits"):
            if known.get(key) is not None:
                known[key] = tuple(known[key])
        glue = GLUE_TASKS.get(data.get("name"))  # type: ignore[arg-type]
        if "metrics" not in known and glue is not None and glue.kind == data.get("kind"):
            known["metrics"] = glue.metrics
        if "eval_splits" not in known and glue is not None and glue.kind == data.get("kind") and not data.get("source"):
            known["eval_splits"] = glue.eval_splits
        if "hub_config" not in known and glue is not None and glue.kind == data.get("kind") and not data.get("source"):
            known["hub_config"] = glue.hub_config
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
            f"tasks: unknown task {name!r}. Valid GLUE tasks: {', '.join(GLUE_TASKS)}; declare your own task in a "
            "task file (--task_config FILE, or a train config's tasks: list) with name, kind and a source."
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
