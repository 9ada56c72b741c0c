"""`token_classification`: one tag per word (NER, POS tagging, chunking), given as pre-split words.

Columns: `text_columns = (tokens_column,)`, a list of words per row, and the label column, a list of
tags of the same length (names, or ids). Prepared labels: a list of int64 tag ids, one per word.
Tokenisation splits each word into word pieces (a fast tokenizer's `word_ids`); the first piece of a word
carries its tag and the other pieces get −100, which no loss or metric reads. Words cut off by
`max_seq_length` are not trained on nor scored.

Loss: mean cross-entropy over the labelled pieces of the batch (one per word). `init`: log C for C tags;
`prior`: the entropy of the tag distribution over labelled words. Metrics: `accuracy` over words and, for
a BIO tag set (every tag `O`, `B-X` or `I-X`), entity-level `precision`, `recall` and `f1` (seqeval,
default mode). Exports as `AutoModelForTokenClassification`; predictions are one tag per word.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..label_stats import LabelStatistics
from .base import (
    IGNORE_INDEX,
    LABEL_COLUMN,
    MODEL_INPUTS,
    TaskKind,
    bad_label,
    class_counts_of,
    class_id,
    label_names_or_ids,
    plain_class,
    type_name,
    valid_classes,
)

if TYPE_CHECKING:
    import torch

    from ..tasks import TaskSpec


def is_bio(names: Any) -> bool:
    """Whether a tag set is BIO: every tag is `O` or `B-`/`I-` followed by a type, with at least one `B-`."""
    names = list(names or ())
    return bool(names) and any(n.startswith("B-") for n in names) and all(
        n == "O" or (n[:2] in ("B-", "I-") and len(n) > 2) for n in names)


class TokenClassification(TaskKind):
    name = "token_classification"
    description = "one tag per word (NER, POS): the first word piece of each word carries its tag"
    level = "token"
    export_class = "AutoModelForTokenClassification"
    default_metrics = ("accuracy", "seqeval")
    text_columns_range = (1, 1)
    text_columns_help = "one column of pre-split words (tokens_column)"

    def label_values(self, value: Any) -> list[Any]:
        values = value if isinstance(value, (list, tuple)) else [value]
        return [tag for tag in map(plain_class, values) if tag is not None]

    def check_text(self, spec: TaskSpec, column: str, values: pa.ChunkedArray, locate: Any) -> None:
        if not (pa.types.is_list(values.type) or pa.types.is_large_list(values.type)):
            raise ValueError(
                f"task {spec.name!r}: {locate(0)}: tokens column {column!r} holds {type_name(values.type)}, not "
                "lists of words. A token classification task reads pre-split words, e.g. {\"tokens\": [\"Tim\", \"Cook\"], \"tags\": "
                "[\"B-PERSON\", \"I-PERSON\"]}; point tokens_column at such a column."
            )
        for i, words in enumerate(values.to_pylist()):
            if not words:
                raise ValueError(f"task {spec.name!r}: {locate(i)}: tokens column {column!r} is empty (no word). "
                                 "Fix or remove the row.")
            for word in words:
                if not isinstance(word, str) or not word.strip():
                    raise ValueError(f"task {spec.name!r}: {locate(i)}: tokens column {column!r} holds the word "
                                     f"{word!r}; every word is a non-empty string without only spaces. Fix or remove "
                                     "the row (drop whitespace tokens).")

    def prepare(self, spec: TaskSpec, dataset: Any, locate: Any) -> Any:
        prepared = super().prepare(spec, dataset, locate)
        words = dataset.with_format("arrow")[spec.text_columns[0]]
        lengths = pc.list_value_length(words).to_numpy(zero_copy_only=False)
        tags = prepared.with_format("arrow")[LABEL_COLUMN]
        tag_lengths = pc.list_value_length(tags).to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(lengths != tag_lengths)
        if bad.size:
            row = int(bad[0])
            raise ValueError(
                f"task {spec.name!r}: {locate(row)}: {lengths[row]} words in {spec.text_columns[0]!r} but "
                f"{tag_lengths[row]} tags in {spec.label_column!r} ({bad.size} such row(s)); a token classification "
                "row has one tag per word. Fix or remove the row(s)."
            )
        return prepared

    def encode_labels(self, spec: TaskSpec, values: pa.ChunkedArray, locate: Any) -> tuple[Any, Any]:
        import datasets

        rows = values.to_pylist()
        encoded: list[list[int]] = []
        bad: list[tuple[int, Any, str]] = []  # (row, value, "tags" for a row that is not a list, else "tag")
        for i, row in enumerate(rows):
            if not isinstance(row, (list, tuple)):
                bad.append((i, row, "tags"))
                encoded.append([])
                continue
            ids = [class_id(tag, spec) for tag in row]
            if any(t is None for t in ids):
                bad.append((i, next(tag for tag, t in zip(row, ids) if t is None), "tag"))
            encoded.append([t if t is not None else 0 for t in ids])
        if bad:
            row, value, what = bad[0]
            raise bad_label(spec, locate, row, value, len(bad), f"lists of tags, each one of {valid_classes(spec)}",
                            what=what)
        return encoded, datasets.List(datasets.Value("int64"))

    def placeholder_label(self, spec: TaskSpec, row: dict[str, Any]) -> Any:
        return [0] * len(row[spec.text_columns[0]])

    def label_statistics(self, spec: TaskSpec, labels: Any) -> LabelStatistics:
        flat = np.concatenate([np.asarray(row, dtype=np.int64) for row in labels]) if len(labels) else np.zeros(0, np.int64)
        counts = class_counts_of(flat, int(spec.num_labels))
        return LabelStatistics(num_rows=len(labels), class_counts=counts,
                               prior_source="entropy of the tag distribution over labelled words")

    def tokenize(self, spec: TaskSpec, batch: dict[str, list[Any]], tokenizer: Any, max_length: int) -> dict[str, list[Any]]:
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"task {spec.name!r}: token classification needs a fast tokenizer (its word_ids() map word pieces to "
                f"words); {type(tokenizer).__name__} is a slow one. Use a model with a tokenizer.json, or load it with "
                "AutoTokenizer.from_pretrained(..., use_fast=True)."
            )
        encoded = tokenizer(batch[spec.text_columns[0]], is_split_into_words=True, truncation=True,
                            max_length=max_length)
        inputs = {key: encoded[key] for key in MODEL_INPUTS if key in encoded}
        aligned = []
        for i, tags in enumerate(batch[LABEL_COLUMN]):
            previous, row = None, []
            for word in encoded.word_ids(i):
                row.append(tags[word] if word is not None and word != previous else IGNORE_INDEX)
                previous = word
            aligned.append(row)
        inputs["labels"] = aligned
        return inputs

    def collate(self, features: list[dict[str, Any]], tokenizer: Any, pad_to_multiple_of: int | None = None) -> dict[str, Any]:
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=pad_to_multiple_of,
                                                  label_pad_token_id=IGNORE_INDEX)(features)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.long().reshape(-1),
                               ignore_index=IGNORE_INDEX)

    def metric_inputs(self, spec: TaskSpec, outputs: np.ndarray, references: np.ndarray) -> tuple[Any, Any]:
        """Tag-name sequences, one per row, over the labelled pieces (one per word), as seqeval takes them."""
        count = int(spec.num_labels)
        if outputs.ndim != 3 or outputs.shape[-1] != count:
            raise ValueError(f"task {spec.name!r}: predictions have shape {outputs.shape}; a token classification task "
                             f"takes logits of shape (n, tokens, {count}).")
        names = label_names_or_ids(spec)
        predicted = outputs.argmax(axis=-1)
        predictions, references_out = [], []
        for row_pred, row_ref in zip(predicted, references):
            keep = row_ref != IGNORE_INDEX
            predictions.append([names[t] for t in row_pred[keep]])
            references_out.append([names[t] for t in row_ref[keep]])
        return predictions, references_out

    def predictions(self, spec: TaskSpec, outputs: np.ndarray, positions: np.ndarray | None = None) -> list[Any]:
        """One tag per word that fits in max_seq_length: the tag predicted at the word's first piece (a word cut off
        by truncation has none; `hf_mtl.inference.predict_file` writes None for it)."""
        names = label_names_or_ids(spec)
        predicted = outputs.argmax(axis=-1)
        assert positions is not None, "token predictions need the tokenised rows' labels (word starts)"
        return [[names[t] for t in row[marks != IGNORE_INDEX]] for row, marks in zip(predicted, positions)]
