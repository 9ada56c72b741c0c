"""`multi_label`: any subset of L labels per input (0, 1 or several): one sigmoid per label.

Labels are given as a list of label names (an empty list is allowed: no label applies) or as a 0/1 vector
of length L. Prepared labels: a float32 0/1 vector of length L. Loss: binary cross-entropy with logits,
averaged over the L labels and the batch's rows (transformers' `multi_label_classification` loss).
Consistently with that mean, `init` is log 2 (an untrained head outputs logit 0, probability ½, for
every label) and `prior` is the mean over labels of the binary entropy H(p_j) of each label's training
frequency p_j (the best constant prediction is p_j). Metrics: micro and macro F1 and exact match (the
share of rows whose whole label set is right), with a label predicted when its logit is > 0. Exports as
`AutoModelForSequenceClassification` with `problem_type="multi_label_classification"`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..label_stats import LabelStatistics, binary_entropy
from .base import TaskKind, bad_label, label_names_or_ids

if TYPE_CHECKING:
    import torch

    from ..tasks import TaskSpec


class MultiLabel(TaskKind):
    name = "multi_label"
    description = "any set of labels per text (a list of names, or a 0/1 vector): sigmoids and binary cross-entropy"
    default_metrics = ("f1_micro", "f1_macro", "exact_match")
    min_labels = 1

    def label_values(self, value: Any) -> list[Any]:
        if isinstance(value, (list, tuple)) and value and all(v in (0, 1) and not isinstance(v, str) for v in value):
            return []  # a 0/1 vector names no label
        return list(value) if isinstance(value, (list, tuple)) else [value]

    def infer_label_names(self, train_labels: Any) -> tuple[str, ...] | None:
        rows = list(train_labels)
        if rows and all(isinstance(r, (list, tuple)) and r and all(v in (0, 1) and not isinstance(v, str) for v in r)
                        for r in rows if r):
            return None  # 0/1 vectors: num_labels from their length
        return super().infer_label_names(rows)

    def encode_labels(self, spec: TaskSpec, values: pa.ChunkedArray, locate: Any) -> tuple[Any, Any]:
        import datasets

        count = int(spec.num_labels)
        names = {name: i for i, name in enumerate(spec.label_names or ())}
        rows = values.to_pylist()
        encoded = np.zeros((len(rows), count), dtype=np.float32)
        bad: list[tuple[int, Any]] = []
        for i, row in enumerate(rows):
            vector = self._vector(row, names, count)
            if vector is None:
                bad.append((i, row))
            else:
                encoded[i] = vector
        if bad:
            row, value = bad[0]
            valid = (f"a list of names from {list(spec.label_names)} (an empty list for none)" if spec.label_names else
                     "a list of label names (an empty list for none)") + f", or a 0/1 vector of length {count}"
            raise bad_label(spec, locate, row, value, len(bad), valid, fields="label_names, num_labels, kind")
        return encoded, datasets.Sequence(datasets.Value("float32"), length=count)

    @staticmethod
    def _vector(row: Any, names: dict[str, int], count: int) -> np.ndarray | None:
        if isinstance(row, str):  # one name given bare
            row = [row]
        if not isinstance(row, (list, tuple)):
            return None
        vector = np.zeros(count, dtype=np.float32)
        if row and all(not isinstance(v, str) and v in (0, 1) for v in row) and len(row) == count and not (
                names and all(isinstance(v, str) for v in row)):
            vector[:] = row
            return vector
        for value in row:
            if not isinstance(value, str) or value not in names:
                return None
            vector[names[value]] = 1.0
        return vector

    def placeholder_label(self, spec: TaskSpec, row: dict[str, Any]) -> Any:
        return []  # no label applies

    def label_statistics(self, spec: TaskSpec, labels: Any) -> LabelStatistics:
        matrix = np.asarray(labels, dtype=np.float64).reshape(len(labels), -1)
        frequencies = matrix.mean(axis=0)
        return LabelStatistics(
            num_rows=len(matrix),
            initial_loss=math.log(2.0), initial_source="log 2 (binary cross-entropy at logit 0, per label)",
            prior_loss=float(binary_entropy(frequencies).mean()),
            prior_source="mean over labels of the binary entropy of each label's training frequency",
        )

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())

    def metric_inputs(self, spec: TaskSpec, outputs: np.ndarray, references: np.ndarray) -> tuple[Any, Any]:
        count = int(spec.num_labels)
        if outputs.ndim != 2 or outputs.shape[1] != count:
            raise ValueError(f"task {spec.name!r}: predictions have shape {outputs.shape}; a multi_label task takes "
                             f"logits of shape (n, {count}).")
        return (outputs > 0).astype(np.int64), np.asarray(references).reshape(len(outputs), count).astype(np.int64)

    def predictions(self, spec: TaskSpec, outputs: np.ndarray, positions: np.ndarray | None = None) -> list[Any]:
        names = label_names_or_ids(spec)
        return [[names[j] for j in np.flatnonzero(row > 0)] for row in outputs]

    def export_config(self, spec: TaskSpec, config: Any) -> None:
        super().export_config(spec, config)
        config.problem_type = "multi_label_classification"
