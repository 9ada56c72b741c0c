"""`TaskKind`: what one kind of task (classification, token tagging, ...) brings, as one object.

A kind owns everything that differs between kinds, so the rest of the library asks it instead of
branching on `spec.kind`: how many outputs its head has and what the head reads (`level`), how labels
are validated and encoded, the label statistics that `init` and `prior` divide by, how a batch is
tokenised and collated, the loss, how outputs become metric inputs and predictions, and what
`hf-mtl export` writes. A new kind is one module with a `TaskKind` subclass plus one line in
`hf_mtl.kinds.KINDS`.

Labels in a prepared split (`hf_mtl.data.prepare_dataset`) are always in the column `label`; each kind
says its form in its docstring.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

from ..label_stats import LabelStatistics

if TYPE_CHECKING:
    import torch

    from ..tasks import TaskSpec

#: `locate(i)` names row i of the split being prepared (a file and line, or a split and row) for errors.
Locate = Callable[[int], str]
#: The label of a word piece (or padding) that no loss or metric reads, as in transformers.
IGNORE_INDEX = -100


class TaskKind:
    """The behaviour of one kind of task; stateless, one instance per kind in `hf_mtl.kinds.KINDS`."""

    name: ClassVar[str]
    description: ClassVar[str]
    #: What the head reads: `"sequence"` (one pooled vector per input), `"token"` (every token's hidden
    #: state) or `"choice"` (one pooled vector per (context, choice) pair, one score each).
    level: ClassVar[str] = "sequence"
    #: The `transformers` auto class a task of this kind exports as (`hf-mtl export`).
    export_class: ClassVar[str] = "AutoModelForSequenceClassification"
    #: The built-in metrics a task of this kind gets when it names none (`hf_mtl.metrics`).
    default_metrics: ClassVar[tuple[str, ...]] = ("accuracy",)
    #: How many text columns the kind takes (`TaskSpec.text_columns`), and what they are, for errors.
    text_columns_range: ClassVar[tuple[int, int]] = (1, 2)
    text_columns_help: ClassVar[str] = "one text column (single sentence) or two (sentence pair)"

    # ---- the spec ---------------------------------------------------------------------------------

    def check_spec(self, spec: TaskSpec) -> None:
        """Raise a ValueError naming the field if `spec` cannot describe a task of this kind."""
        low, high = self.text_columns_range
        if not low <= len(spec.text_columns) <= high:
            raise ValueError(f"TaskSpec {spec.name!r}: text_columns={list(spec.text_columns)!r} must name "
                             f"{self.text_columns_help} for a {self.name} task.")
        if spec.num_labels is not None and spec.num_labels < self.min_labels:
            raise ValueError(f"TaskSpec {spec.name!r}: a {self.name} task needs num_labels >= {self.min_labels}, "
                             f"got {spec.num_labels}.")

    min_labels: ClassVar[int] = 2

    def head_size(self, spec: TaskSpec) -> int:
        """Outputs of the task's linear layer."""
        return int(spec.num_labels)

    # ---- labels -----------------------------------------------------------------------------------

    def label_values(self, value: Any) -> list[Any]:
        """The class labels inside one raw label (one for a row-level label, several for a list), each as
        `plain_class` makes it (a missing one left out: the row checks name it)."""
        plain = plain_class(value)
        return [] if plain is None else [plain]

    def infer_label_names(self, train_labels: Sequence[Any]) -> tuple[str, ...] | None:
        """The label set when none is given: the sorted set of the training labels' names (numbers sort as
        numbers); None when the labels are already ids and no names can be read."""
        seen = {v for raw in train_labels if raw is not None for v in self.label_values(raw) if v is not None}
        if not seen:
            return None
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in seen):
            return None  # ids: num_labels from the largest id, names unknown
        return tuple(sorted((str(v) for v in seen), key=_natural_key))

    def prepare(self, spec: TaskSpec, dataset: Any, locate: Locate) -> Any:
        """Validate one split (a `datasets.Dataset` holding the spec's columns) and bring it to the prepared
        shape: the text columns, then `label` in the kind's form. Errors name the row (`locate`) and the fix."""
        for column in spec.text_columns:
            self.check_text(spec, column, arrow_column(dataset, column), locate)
        labels, feature = self.encode_labels(_ids_spec(spec, dataset), arrow_column(dataset, spec.label_column), locate)
        prepared = dataset.select_columns(list(spec.text_columns))
        for column in spec.text_columns:
            prepared = cast_text(prepared, column)
        values = labels.tolist() if isinstance(labels, np.ndarray) and labels.ndim > 1 else labels
        return prepared.add_column(LABEL_COLUMN, values, feature=feature)

    def check_text(self, spec: TaskSpec, column: str, values: pa.ChunkedArray, locate: Locate) -> None:
        """A text column holds a non-empty string in every row."""
        if not is_text(values.type):
            raise ValueError(
                f"task {spec.name!r}: {locate(0)}: text column {column!r} holds {values.type}, not strings. "
                "Point the task's text_columns at the text, or convert the column to strings."
            )
        texts = values.to_pandas()
        empty = np.flatnonzero((texts.isna() | (texts.str.strip() == "")).to_numpy())
        if empty.size:
            raise ValueError(
                f"task {spec.name!r}: {locate(int(empty[0]))}: text column {column!r} is empty "
                f"({empty.size} such row(s)). Fix or remove the row."
            )

    def placeholder_label(self, spec: TaskSpec, row: dict[str, Any]) -> Any:
        """A valid label for a row to predict (which has none): read by nothing, it only fills the column."""
        return 0

    def encode_labels(self, spec: TaskSpec, values: pa.ChunkedArray, locate: Locate) -> tuple[Any, Any]:
        """Validated labels of one split (an Arrow column) in the kind's prepared form, and their `datasets`
        feature; a bad label is a ValueError naming the row (`locate`), the value and the fix."""
        raise NotImplementedError

    def label_statistics(self, spec: TaskSpec, labels: list[Any]) -> LabelStatistics:
        """What `init` and `prior` read, from a prepared or tokenised split's labels."""
        raise NotImplementedError

    # ---- batches ----------------------------------------------------------------------------------

    def tokenize(self, spec: TaskSpec, batch: dict[str, list[Any]], tokenizer: Any, max_length: int) -> dict[str, list[Any]]:
        """Model inputs and `labels` for a batch of prepared rows (no padding: the collator pads)."""
        encoded = tokenizer(*(batch[column] for column in spec.text_columns), truncation=True, max_length=max_length)
        inputs = {key: encoded[key] for key in MODEL_INPUTS if key in encoded}
        inputs["labels"] = batch[LABEL_COLUMN]
        return inputs

    def collate(self, features: list[dict[str, Any]], tokenizer: Any, pad_to_multiple_of: int | None = None) -> dict[str, Any]:
        """One task's tokenised rows as a padded batch of tensors."""
        from transformers import DataCollatorWithPadding

        batch = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)(features)
        return _float_labels(batch)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The task's loss: a mean over the batch (see each kind for what it averages)."""
        raise NotImplementedError

    # ---- outputs ----------------------------------------------------------------------------------

    def metric_inputs(self, spec: TaskSpec, outputs: np.ndarray, references: np.ndarray) -> tuple[Any, Any]:
        """Raw outputs (logits) and labels of an evaluation split as what the metrics compare."""
        raise NotImplementedError

    def predictions(self, spec: TaskSpec, outputs: np.ndarray, positions: np.ndarray | None = None) -> list[Any]:
        """One prediction per row, as plain JSON values (label names, numbers, lists of them). `positions`:
        the tokenised rows' `labels` (token kinds read where the words start from it)."""
        raise NotImplementedError

    def export_config(self, spec: TaskSpec, config: Any) -> None:
        """Set `num_labels`, `problem_type`, `id2label` / `label2id` of the exported model's config."""
        names = label_names_or_ids(spec)
        config.num_labels = len(names)
        config.id2label = dict(enumerate(names))
        config.label2id = {name: i for i, name in enumerate(names)}


#: The label column of every prepared split (`tokenize_splits` renames it to `labels`, what models take).
LABEL_COLUMN = "label"
#: The tokenizer outputs a model takes; anything else a tokenizer may return is dropped.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def type_name(kind: pa.DataType) -> str:
    """An Arrow type as a message shows it: `text` for either string type (what a csv column of words is)."""
    return "text (one string per row)" if is_text(kind) else str(kind)


def arrow_column(dataset: Any, column: str) -> pa.ChunkedArray:
    """A column as Arrow data: the fast way to get a whole column (respects `select`/`shuffle`)."""
    return dataset.with_format("arrow")[column]


def cast_text(dataset: Any, column: str) -> Any:
    """`column` as `string` (not `large_string`, nor a list of them): one text type downstream."""
    import datasets

    feature = dataset.features[column]
    wanted = datasets.Value("string")
    if isinstance(feature, (datasets.Sequence, datasets.List, list)):
        wanted = datasets.List(datasets.Value("string"))
        current = getattr(feature, "feature", None)
        if current == datasets.Value("string"):
            return dataset
    elif feature == wanted:
        return dataset
    return dataset.cast_column(column, wanted)


def label_names_or_ids(spec: TaskSpec) -> list[str]:
    return list(spec.label_names) if spec.label_names else [f"LABEL_{i}" for i in range(int(spec.num_labels))]


def _natural_key(text: str) -> tuple[int, float, str]:
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def _float_labels(batch: Any) -> Any:
    import torch

    if "labels" in batch and batch["labels"].dtype == torch.float64:
        batch["labels"] = batch["labels"].float()
    return batch


@functools.lru_cache(maxsize=64)
def _numeric_names(names: tuple[str, ...]) -> dict[int, int] | None:
    numeric = {}
    for index, name in enumerate(names):
        text = name.strip()
        if text.lstrip("-").isdigit() and str(int(text)) == text:
            numeric[int(text)] = index
    return numeric or None


def numeric_names(spec: TaskSpec) -> dict[int, int] | None:
    """{number: id} when some of `spec.label_names` are whole numbers (star ratings `[1, 2, 3, 4, 5]`), else None.

    A numeric label then names one of those labels rather than giving an id, whether the file stored it as
    text (`"5"`, JSON) or as a number (`5`, what the csv and parquet readers give): one meaning in every format.
    """
    return _numeric_names(tuple(spec.label_names)) if spec.label_names else None


def plain_class(value: Any) -> Any:
    """A raw class label as the label set is read from it: a whole float as the int id it stands for (a csv column
    of ids with a blank cell, or JSON `1.0`, is read as floats), NaN as missing (None); anything else unchanged."""
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        if float(value).is_integer():
            return int(value)
    return value


def class_id(value: Any, spec: TaskSpec) -> int | None:
    """A class label (an id, a string of digits, or a name of `spec.label_names`) as its id; None if invalid.
    With numeric label names (`numeric_names`), a number is read as a name, never as an id."""
    names = spec.label_names or ()
    if isinstance(value, (bool, np.bool_)):  # JSON true / false: the names "False" / "True" (`infer_label_names`)
        value = str(bool(value))
    if isinstance(value, str):
        if value in names:
            return names.index(value)
        if value.strip().isdigit():
            value = int(value.strip())
        else:
            return None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value) or value != int(value):
            return None
        value = int(value)
    if not isinstance(value, (int, np.integer)):
        return None
    numeric = numeric_names(spec)
    if numeric is not None:
        return numeric.get(int(value))
    return int(value) if 0 <= value < int(spec.num_labels) else None


def _ids_spec(spec: TaskSpec, dataset: Any) -> TaskSpec:
    """The spec to encode `dataset`'s labels with: a `ClassLabel` column (or a list of them) stores ids even when
    its names are numbers, so the numbers are not read as names there (`numeric_names`)."""
    import dataclasses

    import datasets

    feature = dataset.features.get(spec.label_column)
    inner = getattr(feature, "feature", feature)
    if isinstance(inner, datasets.ClassLabel) and numeric_names(spec) is not None:
        return dataclasses.replace(spec, label_names=None)
    return spec


def valid_classes(spec: TaskSpec) -> str:
    if numeric_names(spec) is not None:
        return f"the names {list(spec.label_names)} (numbers name labels here, they are not ids)"
    names = f" or the names {list(spec.label_names)}" if spec.label_names else ""
    return f"the ids 0..{int(spec.num_labels) - 1}{names}"


def bad_label(spec: TaskSpec, locate: Locate, row: int, value: Any, count: int, valid: str,
              fields: str = "num_labels, label_names, kind", what: str = "label") -> ValueError:
    """The error for invalid labels: the first bad row, its value, how many rows are bad, what is valid."""
    return ValueError(
        f"task {spec.name!r}: {locate(row)}: {what} {value!r} is not a valid {spec.kind} label ({count} such row(s)); "
        f"valid values are {valid}. Fix or remove the row(s), or fix the task's {fields} if it describes the task "
        "wrongly."
    )


def class_counts_of(ids: np.ndarray, num_labels: int) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    return np.bincount(ids[ids != IGNORE_INDEX], minlength=num_labels)
