"""GLUE metrics computed locally, and the scores that summarise them.

`evaluate.load("glue", ...)` needs the Hub, so the GLUE metrics are recomputed here with sklearn and
scipy under the same names and definitions (`accuracy`, binary `f1`, `matthews_correlation`,
`pearson`, `spearmanr`). Values stay on their natural scale (0..1 or -1..1), not the leaderboard's x100.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from hf_mtl.tasks import TaskSpec

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


#: GLUE metric name -> function `(predictions, references) -> {name: value}`.
METRICS: dict[str, MetricFn] = {
    fn.__name__: fn for fn in (accuracy, f1, matthews_correlation, pearson, spearmanr)
}


def compute_task_metrics(spec: TaskSpec, predictions: Any, references: Any) -> dict[str, float]:
    """Every metric of `spec` on one evaluation split, keyed by bare metric name (`f1`, `accuracy`).

    `predictions` are the model's raw outputs: logits of shape (n, num_labels) for classification
    (reduced to class ids by argmax) or (n, 1) / (n,) for regression. Each entry of `spec.metrics` is a
    name from `METRICS`, an object with `.compute(predictions=..., references=...)` (an `evaluate`
    module) or a callable `(predictions, references) -> dict`; all receive the class ids or targets.
    """
    predictions, references = _predicted_values(spec, np.asarray(predictions), np.asarray(references))
    results: dict[str, float] = {}
    for metric in spec.metrics:
        if isinstance(metric, str):
            if metric not in METRICS:
                raise ValueError(
                    f"task {spec.name!r}: unknown metric {metric!r}. Valid names: {', '.join(METRICS)}; "
                    "or pass an evaluate module or a callable (predictions, references) -> dict in TaskSpec.metrics."
                )
            values = METRICS[metric](predictions, references)
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
        results.update({name: float(value) for name, value in values.items()})
    return results


def _predicted_values(spec: TaskSpec, predictions: np.ndarray,
                      references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits -> class ids (classification) or a flat vector of targets (regression)."""
    if spec.kind == "classification":
        if predictions.ndim != 2 or predictions.shape[1] != spec.num_labels:
            raise ValueError(
                f"task {spec.name!r}: predictions have shape {predictions.shape}; a classification task takes "
                f"logits of shape (n, {spec.num_labels}) (num_labels={spec.num_labels})."
            )
        predictions = predictions.argmax(axis=-1)
    else:
        if predictions.ndim == 2 and predictions.shape[1] == 1:
            predictions = predictions[:, 0]
        if predictions.ndim != 1:
            raise ValueError(
                f"task {spec.name!r}: predictions have shape {predictions.shape}; a regression task takes "
                "outputs of shape (n, 1) or (n,)."
            )
    references = references.reshape(-1)
    if len(predictions) != len(references):
        raise ValueError(
            f"task {spec.name!r}: {len(predictions)} predictions for {len(references)} references; "
            "pass the outputs and labels of the same rows."
        )
    return predictions, references


def task_score(metrics: Mapping[str, float]) -> float:
    """One number per task: the mean of its metrics (MRPC and QQP: mean of F1 and accuracy;
    STS-B: mean of Pearson and Spearman), as the GLUE leaderboard combines them."""
    if not metrics:
        raise ValueError("task_score: metrics is empty; pass the dict returned by compute_task_metrics.")
    return float(np.mean(list(metrics.values())))


def glue_score(scores: Mapping[str, float]) -> float:
    """The GLUE score: macro average of per-task scores (each task counts once).

    A task evaluated on several splits counts once too: the caller averages its splits first
    (MNLI's score is the mean of its matched and mismatched task scores) and passes that average.
    """
    if not scores:
        raise ValueError("glue_score: scores is empty; pass {task: task_score(...)} for at least one task.")
    return float(np.mean(list(scores.values())))
