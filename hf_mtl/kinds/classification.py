"""`classification`: one class per input (sentence or pair), softmax over C classes, cross-entropy.

Prepared labels: int64 class ids 0..C−1 (given as ids, strings of digits, or names of `label_names`).
Loss: mean cross-entropy over the batch's rows. `init`: log C (an untrained head's uniform output);
`prior`: the entropy of the training class frequencies. Exports as `AutoModelForSequenceClassification`
(`problem_type="single_label_classification"`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ..label_stats import LabelStatistics
from .base import TaskKind, bad_label, label_names_or_ids, numeric_names, valid_classes

if TYPE_CHECKING:
    import torch

    from ..tasks import TaskSpec


class Classification(TaskKind):
    name = "classification"
    description = "one class per text (or text pair): softmax and cross-entropy"
    default_metrics = ("accuracy",)

    def encode_labels(self, spec: TaskSpec, values: pa.ChunkedArray, locate: Any) -> tuple[np.ndarray, Any]:
        import datasets

        raw = values.to_pandas()
        numeric = numeric_names(spec)  # numeric label names: a number names a label, it is not an id
        text = pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
        if pa.types.is_boolean(values.type):  # JSON true / false: the names "False" / "True" (`infer_label_names`)
            raw, text = raw.map(lambda v: str(bool(v)) if isinstance(v, (bool, np.bool_)) else None).astype(object), True
        if text:
            by_name = raw.map({name: index for index, name in enumerate(spec.label_names or ())})
            digits = pd.to_numeric(raw.where(raw.str.fullmatch(r"\d+", na=False)), errors="coerce")
            numbers = by_name.fillna(digits if numeric is None else digits.map(numeric))
        elif pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
            numbers = raw if numeric is None else raw.map(numeric)
        else:
            numbers = pd.Series(np.full(len(raw), np.nan))
        array = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(array) | (array % 1 != 0) | (array < 0) | (array >= spec.num_labels)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise bad_label(spec, locate, first, values[first].as_py(), int(bad.sum()), valid_classes(spec))
        return array.astype(np.int64), datasets.Value("int64")

    def label_statistics(self, spec: TaskSpec, labels: Any) -> LabelStatistics:
        ids = np.asarray(labels, dtype=np.int64)
        return LabelStatistics(num_rows=len(ids), class_counts=np.bincount(ids, minlength=spec.num_labels))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(logits.float(), labels.long())

    def metric_inputs(self, spec: TaskSpec, outputs: np.ndarray, references: np.ndarray) -> tuple[Any, Any]:
        if outputs.ndim != 2 or outputs.shape[1] != spec.num_labels:
            raise ValueError(
                f"task {spec.name!r}: predictions have shape {outputs.shape}; a classification task takes "
                f"logits of shape (n, {spec.num_labels}) (num_labels={spec.num_labels})."
            )
        return outputs.argmax(axis=-1), references.reshape(-1)

    def predictions(self, spec: TaskSpec, outputs: np.ndarray, positions: np.ndarray | None = None) -> list[Any]:
        names = label_names_or_ids(spec) if spec.label_names else [str(i) for i in range(spec.num_labels)]
        return [names[i] for i in outputs.argmax(axis=-1).tolist()]

    def export_config(self, spec: TaskSpec, config: Any) -> None:
        super().export_config(spec, config)
        config.problem_type = "single_label_classification"
