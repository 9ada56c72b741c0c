"""`multiple_choice`: a context and N candidate endings; the model scores each (context, ending) pair.

Columns: `text_columns = (context_column, choices_column)` with a list of N choices per row, or
`(context_column, choice_1, ..., choice_N)` with one column per choice (N >= 2). `num_labels` is N, the
same in every row. Prepared labels: the int64 index of the right choice (an index, or the text of a
choice column's name when `label_names` lists them).

Each pair is encoded like a sentence pair and pooled; one linear layer shared by the choices gives one
score per choice (the shape of `AutoModelForMultipleChoice`). Loss: mean cross-entropy over the N
scores. `init`: log N; `prior`: the entropy of the right answer's position over the training rows.
Metric: accuracy. Exports as `AutoModelForMultipleChoice`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..label_stats import LabelStatistics
from .base import (
    LABEL_COLUMN,
    MODEL_INPUTS,
    TaskKind,
    bad_label,
    cast_text,
    class_id,
    type_name,
    valid_classes,
)

if TYPE_CHECKING:
    import torch

    from ..tasks import TaskSpec


def choice_columns(spec: TaskSpec) -> tuple[str, ...]:
    """The columns after the context: one list column, or one column per choice."""
    return tuple(spec.text_columns[1:])


class MultipleChoice(TaskKind):
    name = "multiple_choice"
    description = "a context and N candidate endings: one score per ending, softmax over the N"
    level = "choice"
    export_class = "AutoModelForMultipleChoice"
    default_metrics = ("accuracy",)
    text_columns_range = (2, 64)
    text_columns_help = "a context column and a choices column (a list), or a context column and one column per choice"

    def head_size(self, spec: TaskSpec) -> int:
        return 1

    def infer_label_names(self, train_labels: Any) -> None:
        return None  # the answer is an index; num_labels is the number of choices

    def check_text(self, spec: TaskSpec, column: str, values: pa.ChunkedArray, locate: Any) -> None:
        if column == spec.text_columns[0] or len(spec.text_columns) > 2:
            return super().check_text(spec, column, values, locate)
        if not (pa.types.is_list(values.type) or pa.types.is_large_list(values.type)):
            raise ValueError(f"task {spec.name!r}: {locate(0)}: choices column {column!r} holds {type_name(values.type)}, "
                             "not lists of texts. Give the choices as a list per row, or one column per choice (choice_columns).")
        count = int(spec.num_labels)
        for i, choices in enumerate(values.to_pylist()):
            if choices is None or len(choices) != count:
                found = "none" if choices is None else len(choices)
                raise ValueError(
                    f"task {spec.name!r}: {locate(i)}: {found} choices in {column!r}, but the task has {count} "
                    f"(num_labels, from {'the task' if spec.label_names else 'the first training row'}); every row of "
                    "a multiple-choice task has the same number of choices. Pad or fix the row, or remove it."
                )
            for choice in choices:
                if not isinstance(choice, str) or not choice.strip():
                    raise ValueError(f"task {spec.name!r}: {locate(i)}: choice {choice!r} in {column!r} is not a "
                                     "non-empty text. Fix or remove the row.")

    def check_spec(self, spec: TaskSpec) -> None:
        super().check_spec(spec)
        columns = len(spec.text_columns) - 1
        if columns > 1 and spec.num_labels is not None and spec.num_labels != columns:
            raise ValueError(f"TaskSpec {spec.name!r}: {columns} choice columns but num_labels={spec.num_labels}; "
                             "num_labels is the number of choices.")

    def prepare(self, spec: TaskSpec, dataset: Any, locate: Any) -> Any:
        prepared = super().prepare(spec, dataset, locate)
        for column in spec.text_columns:
            prepared = cast_text(prepared, column)
        return prepared

    def encode_labels(self, spec: TaskSpec, values: pa.ChunkedArray, locate: Any) -> tuple[Any, Any]:
        import datasets

        rows = values.to_pylist()
        ids = [class_id(value, spec) for value in rows]
        bad = [i for i, value in enumerate(ids) if value is None]
        if bad:
            raise bad_label(spec, locate, bad[0], rows[bad[0]], len(bad),
                            f"the index of the right choice, {valid_classes(spec)}")
        return np.asarray(ids, dtype=np.int64), datasets.Value("int64")

    def label_statistics(self, spec: TaskSpec, labels: Any) -> LabelStatistics:
        ids = np.asarray(labels, dtype=np.int64)
        return LabelStatistics(num_rows=len(ids), class_counts=np.bincount(ids, minlength=int(spec.num_labels)),
                               initial_source="log N for N choices",
                               prior_source="entropy of the right answer's position")

    def _choices(self, spec: TaskSpec, batch: dict[str, list[Any]]) -> list[list[str]]:
        columns = choice_columns(spec)
        if len(columns) == 1 and batch[columns[0]] and isinstance(batch[columns[0]][0], list):
            return batch[columns[0]]
        return [list(row) for row in zip(*(batch[c] for c in columns))]

    def tokenize(self, spec: TaskSpec, batch: dict[str, list[Any]], tokenizer: Any, max_length: int) -> dict[str, list[Any]]:
        contexts, choices = batch[spec.text_columns[0]], self._choices(spec, batch)
        count = len(choices[0]) if choices else 0
        firsts = [context for context in contexts for _ in range(count)]
        seconds = [choice for row in choices for choice in row]
        encoded = tokenizer(firsts, seconds, truncation=True, max_length=max_length)
        inputs = {key: [encoded[key][i: i + count] for i in range(0, len(firsts), count)]
                  for key in MODEL_INPUTS if key in encoded}
        inputs["labels"] = batch[LABEL_COLUMN]
        return inputs

    def collate(self, features: list[dict[str, Any]], tokenizer: Any, pad_to_multiple_of: int | None = None) -> dict[str, Any]:
        import torch
        from transformers import DataCollatorWithPadding

        count = len(features[0]["input_ids"])
        flat = [{key: feature[key][j] for key in MODEL_INPUTS if key in feature}
                for feature in features for j in range(count)]
        batch = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)(flat)
        batch = {key: value.reshape(len(features), count, -1) for key, value in batch.items()}
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([int(f["labels"]) for f in features], dtype=torch.long)
        return batch

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(logits.float(), labels.long())

    def metric_inputs(self, spec: TaskSpec, outputs: np.ndarray, references: np.ndarray) -> tuple[Any, Any]:
        if outputs.ndim != 2 or outputs.shape[1] != spec.num_labels:
            raise ValueError(f"task {spec.name!r}: predictions have shape {outputs.shape}; a multiple-choice task "
                             f"takes scores of shape (n, {spec.num_labels}).")
        return outputs.argmax(axis=-1), references.reshape(-1)

    def predictions(self, spec: TaskSpec, outputs: np.ndarray, positions: np.ndarray | None = None) -> list[Any]:
        names = list(spec.label_names) if spec.label_names else None
        return [names[i] if names else i for i in outputs.argmax(axis=-1).tolist()]

    def export_config(self, spec: TaskSpec, config: Any) -> None:
        config.num_labels = 1
