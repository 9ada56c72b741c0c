"""`regression`: one number (`num_labels=1`) or a vector of D numbers (`num_labels=D`) per input.

Prepared labels: float32 targets, a list of D of them for a vector target (given as numbers, strings of
numbers, or lists). Loss: the squared error summed over the D dimensions, averaged over the batch's
rows, E‖ŷ − y‖² (for D = 1 the usual mean squared error). `init`: E‖y‖² (an untrained head outputs ~0);
`prior`: Σ_d Var(y_d) (the best constant predictor is the mean). Exports as
`AutoModelForSequenceClassification` with `problem_type="regression"`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ..label_stats import LabelStatistics
from .base import TaskKind, bad_label

if TYPE_CHECKING:
    import torch

    from ..tasks import TaskSpec


def float32(targets: np.ndarray) -> np.ndarray:
    """Targets as float32; a value too large for float32 becomes inf (and is then refused)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(targets).astype(np.float32)


def outside_range(targets: np.ndarray, spec: TaskSpec) -> np.ndarray:
    """Which float32 targets lie outside `spec.label_range` (bounds rounded to float32 as well, so a stored
    0.1 equals a bound of 0.1); all False without a range. NaN is not "outside": it is non-finite."""
    if spec.label_range is None:
        return np.zeros(targets.shape, dtype=bool)
    low, high = float32(np.array(spec.label_range, dtype=np.float64))
    return (targets < low) | (targets > high)


def valid_targets(spec: TaskSpec) -> str:
    shape = "" if spec.num_labels == 1 else f"lists of {spec.num_labels} "
    if spec.label_range is None:
        return f"{shape}finite numbers"
    low, high = spec.label_range
    return f"{shape}numbers from {low:g} to {high:g}, both included (TaskSpec label_range of {spec.name!r})"


class Regression(TaskKind):
    name = "regression"
    description = "a number (or a vector of num_labels numbers) per text: squared error"
    default_metrics = ("pearson", "spearmanr")
    min_labels = 1

    def head_size(self, spec: TaskSpec) -> int:
        return int(spec.num_labels or 1)

    def infer_label_names(self, train_labels: Any) -> None:
        return None

    def encode_labels(self, spec: TaskSpec, values: pa.ChunkedArray, locate: Any) -> tuple[Any, Any]:
        import datasets

        dims = int(spec.num_labels or 1)
        if dims == 1 and not pa.types.is_list(values.type) and not pa.types.is_large_list(values.type):
            raw = values.to_pandas()
            text = pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
            if text or pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
                numbers = pd.to_numeric(raw, errors="coerce") if text else raw
                # Checked as the float32 the model trains on: 1e39 is finite as text but inf in float32.
                array = float32(numbers.to_numpy(dtype=np.float64, na_value=np.nan))
            else:
                array = np.full(len(raw), np.nan, dtype=np.float32)
            bad = ~np.isfinite(array) | outside_range(array, spec)
            feature = datasets.Value("float32")
        else:
            rows = values.to_pylist()
            array = np.full((len(rows), dims), np.nan, dtype=np.float32)
            for i, row in enumerate(rows):
                if isinstance(row, (list, tuple)) and len(row) == dims:
                    try:
                        array[i] = float32(np.array(row, dtype=np.float64))
                    except (TypeError, ValueError):
                        pass
            bad = (~np.isfinite(array) | outside_range(array, spec)).any(axis=1)
            feature = datasets.Sequence(datasets.Value("float32"), length=dims) if dims > 1 else datasets.Value("float32")
            if dims == 1:
                array = array[:, 0]
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise bad_label(spec, locate, first, values[first].as_py(), int(bad.sum()), valid_targets(spec),
                            fields="label_range, num_labels, kind")
        return array, feature

    def placeholder_label(self, spec: TaskSpec, row: dict[str, Any]) -> Any:
        low = spec.label_range[0] if spec.label_range else 0.0
        dims = int(spec.num_labels or 1)
        return low if dims == 1 else [low] * dims

    def label_statistics(self, spec: TaskSpec, labels: Any) -> LabelStatistics:
        targets = np.asarray(labels, dtype=np.float64)
        targets = targets.reshape(len(targets), -1)
        return LabelStatistics(
            num_rows=len(targets),
            mean=float(targets.mean()),
            variance=float(targets.var(axis=0).sum()),
            mean_square=float((targets**2).sum(axis=1).mean()),
        )

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        outputs = logits.float().reshape(len(logits), -1)
        targets = labels.float().reshape(len(labels), -1)
        return (outputs - targets).pow(2).sum(dim=1).mean()

    def metric_inputs(self, spec: TaskSpec, outputs: np.ndarray, references: np.ndarray) -> tuple[Any, Any]:
        dims = int(spec.num_labels or 1)
        if outputs.ndim == 2 and outputs.shape[1] == dims:
            return outputs.reshape(-1), references.reshape(-1)
        if outputs.ndim == 1 and dims == 1:
            return outputs, references.reshape(-1)
        raise ValueError(
            f"task {spec.name!r}: predictions have shape {outputs.shape}; a regression task takes outputs of shape "
            f"(n, {dims})" + (" or (n,)" if dims == 1 else "") + f" (num_labels={dims})."
        )

    def predictions(self, spec: TaskSpec, outputs: np.ndarray, positions: np.ndarray | None = None) -> list[Any]:
        rows = outputs.reshape(len(outputs), -1).tolist()
        return [row[0] for row in rows] if int(spec.num_labels or 1) == 1 else rows

    def export_config(self, spec: TaskSpec, config: Any) -> None:
        dims = int(spec.num_labels or 1)
        names = list(spec.label_names) if spec.label_names else (
            [spec.name] if dims == 1 else [f"{spec.name}_{d}" for d in range(dims)])
        config.num_labels, config.problem_type = dims, "regression"
        config.id2label = dict(enumerate(names))
        config.label2id = {name: i for i, name in enumerate(names)}
