"""Built-in metrics computed locally, `evaluate` modules, and the scores that summarise them.

`evaluate.load("glue", ...)` needs the Hub, so the GLUE metrics are recomputed here with sklearn and
scipy under the same names and definitions (`accuracy`, binary `f1`, `matthews_correlation`,
`pearson`, `spearmanr`); so are the token metrics (`accuracy` over words, `seqeval`: entity-level
precision, recall and F1 of a BIO tag set, with the `seqeval` package) and the multi-label ones
(`f1_micro`, `f1_macro`, `exact_match`). Values stay on their natural scale (0..1 or -1..1), not the
leaderboard's x100. Any other metric name is loaded with `evaluate.load(name)`: a local module path
works offline, a Hub name needs the Hub (or its cache).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from hf_mtl.kinds import get_kind
from hf_mtl.tasks import GLUE_TASKS, TaskSpec

MetricFn = Callable[[np.ndarray, np.ndarray], dict[str, float]]


def accuracy(predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
    return {"accuracy": float(accuracy_score(references, predictions))}


def f1(predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
    """Binary F1 of the positive class 1 (MRPC `equivalent`, QQP `duplicate`), as GLUE defines it."""
    # No positive prediction gives 0, as in GLUE, instead of sklearn's warning.
    return {"f1": float(f1_score(references, predictions, average="binary", pos_label=1, zero_division=0.0))}


def matthews_correlation(predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
    return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}


def pearson(predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
    """Pearson's r; NaN when predictions are constant (the correlation is undefined)."""
    return {"pearson": float(stats.pearsonr(predictions, references)[0])}


def spearmanr(predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
    """Spearman's rank correlation; NaN when predictions are constant."""
    return {"spearmanr": float(stats.spearmanr(predictions, references)[0])}


def seqeval(predictions: list[list[str]], references: list[list[str]]) -> dict[str, float]:
    """Entity-level precision, recall and F1 of BIO tag sequences (seqeval's default, conlleval-style
    matching: an entity counts when its type and span are both right); {} for a tag set that is not BIO."""
    from seqeval.metrics import f1_score as entity_f1
    from seqeval.metrics import precision_score, recall_score

    tags = {tag for row in references for tag in row} | {tag for row in predictions for tag in row}
    if not all(tag == "O" or (tag[:2] in ("B-", "I-") and len(tag) > 2) for tag in tags):
        return {}
    return {
        "precision": float(precision_score(references, predictions, zero_division=0)),
        "recall": float(recall_score(references, predictions, zero_division=0)),
        "f1": float(entity_f1(references, predictions, zero_division=0)),
    }


def f1_micro(predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
    """Multi-label F1 over all (row, label) decisions."""
    return {"f1_micro": float(f1_score(references, predictions, average="micro", zero_division=0.0))}


def f1_macro(predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
    """Multi-label F1 per label, averaged over the labels that occur in the references or the predictions
    (a label absent from both has no F1 to average)."""
    present = np.flatnonzero(np.asarray(references).any(axis=0) | np.asarray(predictions).any(axis=0))
    if present.size == 0:
        return {"f1_macro": 1.0}
    return {"f1_macro": float(f1_score(references, predictions, average="macro", labels=present, zero_division=0.0))}


def exact_match(predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
    """The share of rows whose predicted label set is exactly right (subset accuracy)."""
    return {"exact_match": float(np.mean(np.all(np.asarray(predictions) == np.asarray(references), axis=1)))}


#: Built-in metric name -> function `(predictions, references) -> {name: value}`.
METRICS: dict[str, MetricFn] = {
    fn.__name__: fn for fn in (accuracy, f1, matthews_correlation, pearson, spearmanr, f1_micro, f1_macro, exact_match)
}
#: Built-in metrics that read whole sequences (one list of tags per row) rather than one value per unit.
SEQUENCE_METRICS: dict[str, Callable[..., dict[str, float]]] = {"seqeval": seqeval}
_LOADED: dict[str, Any] = {}


def _flat(values: Any) -> np.ndarray:
    """Per-row sequences (token tags) as one flat array; anything else unchanged."""
    if isinstance(values, list) and values and isinstance(values[0], list):
        return np.asarray([v for row in values for v in row])
    return np.asarray(values)


def load_metric(spec: TaskSpec, name: str) -> Any:
    """The `evaluate` module called `name` (a name, or a local path to a module script or folder), loaded once."""
    if name not in _LOADED:
        try:
            import evaluate
        except ImportError as error:  # pragma: no cover - evaluate is a dependency
            raise ValueError(f"task {spec.name!r}: metric {name!r} is not built in and the evaluate package is not "
                             f"installed (pip install evaluate). Built-in metrics: {', '.join(builtin_metrics())}.") from error
        try:
            _LOADED[name] = evaluate.load(name)
        except Exception as error:  # noqa: BLE001 - evaluate raises many kinds (FileNotFoundError, ConnectionError, ...)
            raise ValueError(
                f"task {spec.name!r}: metric {name!r} is not a built-in metric ({', '.join(builtin_metrics())}) and "
                f"evaluate.load({name!r}) failed: {type(error).__name__}: {str(error)[:300].rstrip('.')}. Offline, pass the path of a "
                "local evaluate module (a folder or .py file), or use a built-in metric."
            ) from None
    return _LOADED[name]


def builtin_metrics() -> list[str]:
    return [*METRICS, *SEQUENCE_METRICS]


def check_metric_names(spec: TaskSpec) -> None:
    """Refuse, before training, a metric name that is neither built in nor loadable with `evaluate`."""
    for metric in spec.metrics:
        if isinstance(metric, str) and metric not in METRICS and metric not in SEQUENCE_METRICS:
            load_metric(spec, metric)


def compute_task_metrics(spec: TaskSpec, predictions: Any, references: Any) -> dict[str, float]:
    """Every metric of `spec` on one evaluation split, keyed by bare metric name (`f1`, `accuracy`).

    `predictions` are the model's raw outputs (logits), `references` the labels; the task's kind turns them
    into what metrics compare (`TaskKind.metric_inputs`): class ids, targets, 0/1 label matrices, or one list
    of tag names per row (token classification; built-in per-unit metrics see them flattened, `seqeval` and
    `evaluate` modules see the lists). Each entry of `spec.metrics` is a built-in name (`builtin_metrics()`),
    the name or local path of an `evaluate` module, an object with `.compute(predictions=..., references=...)`
    or a callable `(predictions, references) -> dict`.
    """
    predictions, references = get_kind(spec.kind).metric_inputs(spec, np.asarray(predictions), np.asarray(references))
    if not isinstance(predictions, list) and len(predictions) != len(references):
        raise ValueError(
            f"task {spec.name!r}: {len(predictions)} predictions for {len(references)} references; "
            "pass the outputs and labels of the same rows."
        )
    results: dict[str, float] = {}
    for metric in spec.metrics:
        if isinstance(metric, str) and metric in METRICS:
            values = METRICS[metric](_flat(predictions), _flat(references))
        elif isinstance(metric, str) and metric in SEQUENCE_METRICS:
            values = SEQUENCE_METRICS[metric](predictions, references)
        elif isinstance(metric, str):
            values = load_metric(spec, metric).compute(predictions=predictions, references=references)
        elif hasattr(metric, "compute"):
            values = metric.compute(predictions=predictions, references=references)
        elif callable(metric):
            values = metric(predictions, references)
        else:
            raise TypeError(
                f"task {spec.name!r}: metric {metric!r} is neither a name, an object with .compute nor a callable."
            )
        clashing = sorted(set(values) & set(results))
        if clashing:
            raise ValueError(
                f"task {spec.name!r}: metric {metric!r} returns {clashing}, already returned by another metric "
                "of the task; give each metric distinct keys."
            )
        results.update({name: float(value) for name, value in values.items()
                        if isinstance(value, (int, float, np.integer, np.floating))})
    return results


def task_score(metrics: Mapping[str, float]) -> float:
    """One number per task: the mean of its metrics (MRPC and QQP: mean of F1 and accuracy;
    STS-B: mean of Pearson and Spearman), as the GLUE leaderboard combines them."""
    if not metrics:
        raise ValueError("task_score: metrics is empty; pass the dict returned by compute_task_metrics.")
    return float(np.mean(list(metrics.values())))


def score_name(tasks: Any) -> str:
    """The name of the macro score over `tasks`: `glue_score` when every task is a GLUE task read as GLUE,
    else `score`."""
    def is_glue(spec: TaskSpec) -> bool:
        glue = GLUE_TASKS.get(spec.name)
        return glue is not None and glue.kind == spec.kind and spec.source is None

    return "glue_score" if all(is_glue(spec) for spec in tasks) else "score"


def glue_score(scores: Mapping[str, float]) -> float:
    """The GLUE score: macro average of per-task scores (each task counts once).

    A task evaluated on several splits counts once too: the caller averages its splits first
    (MNLI's score is the mean of its matched and mismatched task scores) and passes that average.
    """
    if not scores:
        raise ValueError("glue_score: scores is empty; pass {task: task_score(...)} for at least one task.")
    return float(np.mean(list(scores.values())))
