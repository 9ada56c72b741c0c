"""Loading GLUE (Hub or a local folder of original TSVs) or any datasets.Dataset, tokenisation, label statistics.

Every source ends in the same shape, so nothing downstream needs to know where the data came from:
a `datasets.DatasetDict` with `"train"` and the task's `eval_splits`, holding the task's text columns
(the names of the Hub dataset `nyu-mll/glue`, as in `TaskSpec.text_columns`) and `label`
(int64 class ids, or float32 targets for regression), nothing else. Problems in the data are
reported before training with the task, the file and line (or split and row) and the fix.

`read_tsv` is the one reader of tab-separated files (the GLUE folders here, `hf-mtl predict` inputs in
`hf_mtl.inference`); `TsvTable.to_split` turns chosen columns of one into a prepared split.
"""

from __future__ import annotations

import csv
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa

from .label_stats import LabelStatistics
from .tasks import TaskSpec

logger = logging.getLogger(__name__)

#: The label column of every prepared dataset; `tokenize_splits` renames it to `labels` (what models take).
LABEL_COLUMN = "label"
#: The tokenizer outputs a model takes; anything else a tokenizer may return is dropped.
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_HUB_DATASET = "nyu-mll/glue"


# --------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------


def load_task_splits(spec: TaskSpec, glue_dir: str | os.PathLike[str] | None = None) -> datasets.DatasetDict:
    """The prepared splits of a GLUE task, from a local GLUE folder or from the Hub.

    The source is, in order: `glue_dir` (a folder in the original GLUE layout, `SST-2/train.tsv`, ...),
    else the `GLUE_DIR` environment variable, else `datasets.load_dataset("nyu-mll/glue", spec.hub_config)`.
    The local folder comes first so that an offline machine never waits on the Hub.
    """
    parameter = "--glue_dir"
    if glue_dir is None and os.environ.get("GLUE_DIR"):
        glue_dir, parameter = os.environ["GLUE_DIR"], "GLUE_DIR"
    if glue_dir is not None:
        return _read_glue_folder(spec, Path(glue_dir), parameter)
    if spec.hub_config is None:
        raise ValueError(
            f"task {spec.name!r} has no hub_config and no dataset was given. Pass its data through "
            f"prepare_dataset(spec, dataset), or set TaskSpec(hub_config=...) for a {_HUB_DATASET} configuration."
        )
    try:
        hub_splits = datasets.load_dataset(_HUB_DATASET, spec.hub_config)
    except ConnectionError as error:  # offline mode raises a ConnectionError subclass too
        raise ConnectionError(
            f"task {spec.name!r}: the Hugging Face Hub could not be reached to load {_HUB_DATASET} "
            f"({spec.hub_config!r}): {error}. Point at a local copy of GLUE in the original TSV layout "
            "with --glue_dir DIR (or the GLUE_DIR environment variable)."
        ) from error
    # The Hub's `test` splits have hidden labels (-1) and `idx` is not an input: prepare_dataset drops both.
    return prepare_dataset(spec, hub_splits)


def prepare_dataset(spec: TaskSpec, dataset: datasets.Dataset | datasets.DatasetDict) -> datasets.DatasetDict:
    """Check and normalise a user's dataset for `spec` (a `Dataset` alone is the train split).

    Keeps `"train"` and the spec's `eval_splits` (other splits, such as a `test` split without labels,
    are dropped), keeps only the text columns and the label (renamed from `spec.label_column` to
    `label`), maps string labels through `spec.label_names` and casts labels to int64 / float32.
    Fails on a missing column, an empty split, an empty text or an invalid label, naming the row.
    """
    if isinstance(dataset, datasets.Dataset):
        dataset = datasets.DatasetDict({"train": dataset})
    if not isinstance(dataset, datasets.DatasetDict):
        raise TypeError(
            f"task {spec.name!r}: dataset has type {type(dataset).__name__}; pass a datasets.Dataset "
            "(the train split) or a datasets.DatasetDict with 'train' and the task's eval_splits."
        )
    wanted = ("train", *spec.eval_splits)
    if not any(split in dataset for split in wanted):
        raise ValueError(
            f"task {spec.name!r}: the dataset has splits {list(dataset)}, none of {list(wanted)}. "
            "Rename the splits (DatasetDict({'train': ..., 'validation': ...})) or set TaskSpec(eval_splits=...)."
        )
    return datasets.DatasetDict({
        split: _prepare_split(
            spec, dataset[split], where=f"split {split!r}",
            locate=lambda row, split=split: f"split {split!r}, row {row}",
        )
        for split in wanted
        if split in dataset
    })


# --------------------------------------------------------------------------------------------------
# The original GLUE TSV files
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _GlueLayout:
    """Where one GLUE task lives in the original distribution and how its columns map onto the Hub's.

    `columns` maps an output column to the file's header name, or to a field position for a file
    without a header (CoLA).
    """

    folder: str
    columns: Mapping[str, str | int]
    eval_files: Mapping[str, str] = field(default_factory=lambda: {"validation": "dev.tsv"})

    @property
    def has_header(self) -> bool:
        return all(isinstance(source, str) for source in self.columns.values())


_GLUE_LAYOUTS: dict[str, _GlueLayout] = {
    "cola": _GlueLayout("CoLA", {"sentence": 3, "label": 1}),
    "sst2": _GlueLayout("SST-2", {"sentence": "sentence", "label": "label"}),
    "mrpc": _GlueLayout("MRPC", {"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"}),
    "stsb": _GlueLayout("STS-B", {"sentence1": "sentence1", "sentence2": "sentence2", "label": "score"}),
    "qqp": _GlueLayout("QQP", {"question1": "question1", "question2": "question2", "label": "is_duplicate"}),
    "mnli": _GlueLayout(
        "MNLI",
        {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label"},
        eval_files={"validation_matched": "dev_matched.tsv", "validation_mismatched": "dev_mismatched.tsv"},
    ),
    "qnli": _GlueLayout("QNLI", {"question": "question", "sentence": "sentence", "label": "label"}),
    "rte": _GlueLayout("RTE", {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"}),
    "wnli": _GlueLayout("WNLI", {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"}),
}


def _read_glue_folder(spec: TaskSpec, glue_dir: Path, parameter: str) -> datasets.DatasetDict:
    """The splits of one task read from a GLUE folder; a split whose file is absent is left out."""
    if not glue_dir.is_dir():
        raise FileNotFoundError(
            f"{parameter} {str(glue_dir)!r} does not exist or is not a folder. Pass the folder that holds the "
            f"GLUE task folders ({', '.join(layout.folder for layout in _GLUE_LAYOUTS.values())}), "
            "or leave it unset to load GLUE from the Hub."
        )
    layout = _GLUE_LAYOUTS.get(spec.name)
    if layout is None:
        raise ValueError(
            f"task {spec.name!r} is not a GLUE task, so {parameter} {str(glue_dir)!r} cannot hold it "
            f"(GLUE tasks: {', '.join(_GLUE_LAYOUTS)}). Pass its data through prepare_dataset(spec, dataset)."
        )
    unknown = [split for split in spec.eval_splits if split not in layout.eval_files]
    if unknown:
        raise ValueError(
            f"task {spec.name!r}: eval_splits {unknown} have no file in the GLUE layout; "
            f"the local reader knows {list(layout.eval_files)}."
        )
    task_dir = glue_dir / layout.folder
    files = {"train": task_dir / "train.tsv",
             **{split: task_dir / layout.eval_files[split] for split in spec.eval_splits}}
    present = {split: path for split, path in files.items() if path.is_file()}
    for path in files.values():  # something named train.tsv that is not a readable file must not be skipped silently
        if path.is_symlink() and not path.exists():
            raise FileNotFoundError(
                f"task {spec.name!r}: {path} is a symbolic link to {os.readlink(path)!r}, which does not exist. "
                f"Point the link at the GLUE {layout.folder} file, or remove it to train or evaluate without that split."
            )
        if path.exists() and not path.is_file():
            raise ValueError(
                f"task {spec.name!r}: {path} is a folder, not a tab-separated file. Put the original GLUE "
                f"{layout.folder} file there, or remove {path} to train or evaluate without that split."
            )
    if not present:
        listed = task_dir if task_dir.is_dir() else glue_dir
        try:
            contents: Any = sorted(entry.name for entry in listed.iterdir())
        except OSError as error:  # e.g. a folder without read permission
            contents = f"nothing readable ({error.strerror})"
        raise FileNotFoundError(
            f"{parameter} {str(glue_dir)!r} has no files for task {spec.name!r}: expected "
            f"{' and/or '.join(str(path) for path in files.values())}; {str(listed)!r} contains {contents}. "
            f"Put the original GLUE files for {layout.folder} there, or drop {spec.name!r} from --tasks."
        )
    return datasets.DatasetDict({split: _read_glue_file(spec, layout, path) for split, path in present.items()})


def _read_glue_file(spec: TaskSpec, layout: _GlueLayout, path: Path) -> datasets.Dataset:
    """One GLUE TSV (read by `read_tsv`) as a prepared split."""
    table = read_tsv(path, header=layout.has_header)
    if not table.rows and not table.header:
        raise ValueError(
            f"task {spec.name!r}: {path} is empty (no line with text). Put the original GLUE {layout.folder} file "
            "there, or remove it to train or evaluate without that split."
        )
    if layout.has_header:
        header = table.header
        missing = [source for source in layout.columns.values() if source not in header]
        if missing:
            raise ValueError(
                f"task {spec.name!r}: {path} has no column {missing[0]!r}; its header has columns {header}. "
                f"Use the original GLUE {layout.folder} file, whose columns include {list(layout.columns.values())}."
            )
        positions = {column: header.index(source) for column, source in layout.columns.items()}
        width = len(header)
    else:
        positions = dict(layout.columns)
        width = max(positions.values()) + 1
    ragged = table.ragged(width)
    if ragged is not None:
        line, row = ragged
        raise ValueError(
            f"task {spec.name!r}: {path}, line {line} has {len(row)} tab-separated fields, expected {width}. "
            "Fewer fields means a missing text or label, more means a tab inside a text; fix or remove that line."
        )
    return table.to_split(spec, positions)


def glue_file(task: str, split: str, glue_dir: str | os.PathLike[str]) -> Path | None:
    """The file of `split` (`train`, `validation`, `validation_matched`, ...) of GLUE task `task` in a folder
    of the original layout, e.g. `glue_dir/MRPC/dev.tsv`; None for a task or split the layout does not know."""
    layout = _GLUE_LAYOUTS.get(task)
    if layout is None:
        return None
    name = "train.tsv" if split == "train" else layout.eval_files.get(split)
    return Path(glue_dir) / layout.folder / name if name else None


def glue_column_names(task: str) -> dict[str, str]:
    """The header name of each column of GLUE task `task` in its original TSV files, e.g. MRPC's
    `{"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"}`; empty for a task that
    is not in GLUE or whose files have no header (CoLA)."""
    layout = _GLUE_LAYOUTS.get(task)
    return {column: source for column, source in layout.columns.items() if isinstance(source, str)} if layout else {}


# --------------------------------------------------------------------------------------------------
# Tab-separated files
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TsvTable:
    """The rows of a tab-separated file (see `read_tsv`), each with its line number for error messages."""

    path: Path
    #: The first row when read with a header, else [] (also [] for a file with no rows at all).
    header: list[str]
    rows: list[list[str]]
    #: The file's line number (from 1) of each row: blank lines are skipped but still counted.
    lines: list[int]

    def ragged(self, width: int) -> tuple[int, list[str]] | None:
        """The line number and fields of the first row that does not have `width` fields, or None."""
        return next(((line, row) for line, row in zip(self.lines, self.rows) if len(row) != width), None)

    def to_split(self, spec: TaskSpec, positions: Mapping[str, int], default_label: str | None = None) -> datasets.Dataset:
        """The fields at `positions` (a text column or `label` -> field index) as a prepared split of `spec`.

        Every field stays a string until `spec`'s checks, whose row errors name the file and line. Without
        a `label` position, `default_label` fills the label column (a file to predict has no labels).
        """
        columns = {
            (spec.label_column if column == LABEL_COLUMN else column): [row[position] for row in self.rows]
            for column, position in positions.items()
        }
        if LABEL_COLUMN not in positions and default_label is not None:
            columns[spec.label_column] = [default_label] * len(self.rows)
        features = datasets.Features(dict.fromkeys(columns, datasets.Value("string")))
        raw = datasets.Dataset.from_dict(columns, features=features)
        path, lines = self.path, self.lines
        return _prepare_split(spec, raw, where=str(path), locate=lambda row: f"{path}, line {lines[row]}")


def read_tsv(path: str | os.PathLike[str], header: bool = True) -> TsvTable:
    """A tab-separated file as the GLUE files are written: the one TSV reader of hf_mtl (GLUE folders,
    `hf-mtl predict` inputs).

    Quoting is off because the GLUE files contain unbalanced `"` that would merge rows under CSV quoting;
    `utf-8-sig` drops MRPC's byte-order mark; blank lines carry no row but keep the line numbering.
    With `header`, the first row is the header rather than a row. A field may be of any length (the
    tokenizer truncates long texts). A file that is missing, is a folder, cannot be read or is not
    UTF-8 is refused with an error that names it (and the line of the first byte that is not UTF-8).
    """
    path = Path(path)
    try:
        with _TSV_FIELD_LIMIT_LOCK, path.open(encoding="utf-8-sig", newline="") as handle:
            previous = csv.field_size_limit(_TSV_FIELD_LIMIT)  # process-global: restored below
            try:
                numbered = [(line, row) for line, row
                            in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), 1) if row]
            finally:
                csv.field_size_limit(previous)
    except UnicodeDecodeError:
        raise ValueError(_not_utf8(path)) from None
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: no such file. Check the path; a relative path is read from {Path.cwd()}."
        ) from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder, not a tab-separated file. Pass the path of the .tsv file itself.") from None
    except PermissionError as error:
        raise ValueError(
            f"{path} cannot be read ({error.strerror}). Give this user read access (chmod u+r), or copy the file "
            "somewhere readable and pass that path."
        ) from None
    except OSError as error:
        raise ValueError(f"{path} cannot be read: {error.strerror or error}. Pass a regular, readable file.") from None
    names = numbered.pop(0)[1] if header and numbered else []
    return TsvTable(path=path, header=names, rows=[row for _, row in numbered], lines=[line for line, _ in numbered])


#: csv's default field limit is 131,072 characters; a long text is valid input (the tokenizer truncates it).
#: The limit is a C long, which is 32 bits on some platforms.
_TSV_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)
#: `csv.field_size_limit` is process-global: raised only while a file is read, one reader at a time.
_TSV_FIELD_LIMIT_LOCK = threading.Lock()


def _not_utf8(path: Path) -> str:
    """Where and why `path` is not UTF-8: its line, the byte, a look at the line, and how to convert it."""
    data = path.read_bytes()
    if data.startswith(b"\x1f\x8b"):
        return f"{path} is gzip-compressed, not a tab-separated text file. Decompress it (gunzip) and pass the .tsv."
    if data.startswith(b"PK\x03\x04"):
        return (f"{path} is a zip archive (or an .xlsx workbook), not a tab-separated text file. Extract the .tsv, or "
                "save the sheet as tab-separated UTF-8 text, and pass that.")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        start, reason = error.start, error.reason
    else:  # pragma: no cover - the file changed between the two reads
        return f"{path} is not valid UTF-8 text. Save it as UTF-8."
    line = data.count(b"\n", 0, start) + 1
    line_start = data.rfind(b"\n", 0, start) + 1
    line_end = data.find(b"\n", start)
    line_end = len(data) if line_end == -1 else line_end
    # The line around the bad byte, at most 30 bytes either side, bytes that are not UTF-8 shown as \xe9.
    left, right = max(line_start, start - 30), min(line_end, start + 31)
    shown = data[left:right].rstrip(b"\r").decode("utf-8", errors="backslashreplace")
    shown = "".join(char if char.isprintable() else repr(char)[1:-1] for char in shown)  # a tab as \t, NUL as \x00
    shown = ("..." if left > line_start else "") + shown + ("..." if right < line_end else "")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        guess, source = "it starts with a UTF-16 byte-order mark (Excel's 'Unicode Text')", "utf-16"
    else:  # Windows-1252 puts its curly quotes and dashes at 0x80..0x9f, where Latin-1 has control characters
        guess = "it looks like Latin-1 / Windows-1252"
        source = "cp1252" if 0x80 <= data[start] <= 0x9F else "latin1"
    return (
        f"{path}, line {line}: byte 0x{data[start]:02x} (column {start - line_start + 1}, in \"{shown}\") is not UTF-8 "
        f"({reason}); {guess}. Save the file as UTF-8, e.g. iconv -f {source} -t utf-8 {path} > utf8.tsv, and pass that."
    )


# --------------------------------------------------------------------------------------------------
# Validation shared by every source
# --------------------------------------------------------------------------------------------------


def _prepare_split(spec: TaskSpec, dataset: datasets.Dataset, where: str,
                   locate: Callable[[int], str]) -> datasets.Dataset:
    """Validate one split and bring it to the prepared shape.

    `where` names the split for whole-split errors (a file, or `split 'train'`); `locate(i)` names
    row i for row errors (a file and line, or a split and row index).
    """
    required = (*spec.text_columns, spec.label_column)
    for column in required:
        if column not in dataset.column_names:
            raise ValueError(
                f"task {spec.name!r}, {where}: column {column!r} is missing; columns present: {dataset.column_names}. "
                "Rename it (dataset.rename_column) or set TaskSpec(text_columns=..., label_column=...)."
            )
    if len(dataset) == 0:
        raise ValueError(
            f"task {spec.name!r}, {where} has no rows. Fill it, or leave the split out "
            "(remove the file / the DatasetDict entry) to train or evaluate without it."
        )
    for column in spec.text_columns:
        _check_texts(spec, column, _arrow_column(dataset, column), locate)
    labels = _encode_labels(spec, _arrow_column(dataset, spec.label_column), locate)
    label_feature = datasets.Value("int64" if spec.kind == "classification" else "float32")
    prepared = dataset.select_columns(list(spec.text_columns))
    for column in spec.text_columns:
        if prepared.features[column] != datasets.Value("string"):  # large_string: one text type downstream
            prepared = prepared.cast_column(column, datasets.Value("string"))
    return prepared.add_column(LABEL_COLUMN, labels, feature=label_feature)


def _arrow_column(dataset: datasets.Dataset, column: str) -> pa.ChunkedArray:
    """A column as Arrow data: the fast way to get a whole column (respects `select`/`shuffle`)."""
    return dataset.with_format("arrow")[column]


def _check_texts(spec: TaskSpec, column: str, values: pa.ChunkedArray, locate: Callable[[int], str]) -> None:
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise ValueError(
            f"task {spec.name!r}: text column {column!r} holds {values.type}, not strings. "
            "Point TaskSpec(text_columns=...) at the text, or convert the column to strings."
        )
    texts = values.to_pandas()
    empty = np.flatnonzero((texts.isna() | (texts.str.strip() == "")).to_numpy())
    if empty.size:
        raise ValueError(
            f"task {spec.name!r}: {locate(int(empty[0]))}: text column {column!r} is empty "
            f"({empty.size} such row(s)). Fix or remove the row."
        )


def _encode_labels(spec: TaskSpec, values: pa.ChunkedArray, locate: Callable[[int], str]) -> np.ndarray:
    """Labels as int64 class ids or float32 targets, vectorised over the column.

    Class labels may be ids (`1`, `"1"`) or names from `spec.label_names` (`"entailment"`), which is
    how the GLUE files mix them.
    """
    raw = values.to_pandas()
    is_text = pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
    if spec.kind == "regression":
        numbers = pd.to_numeric(raw, errors="coerce") if is_text else raw
        # Checked as the float32 the model trains on: 1e39 is finite as text but inf in float32.
        array = _float32(numbers.to_numpy(dtype=np.float64, na_value=np.nan))
        bad = ~np.isfinite(array) | _outside_range(array, spec)
        valid, dtype = _valid_targets(spec), np.float32
    else:
        if is_text:
            by_name = raw.map({name: index for index, name in enumerate(spec.label_names or ())})
            digits = raw.where(raw.str.fullmatch(r"\d+", na=False))
            numbers = by_name.fillna(pd.to_numeric(digits, errors="coerce"))
        else:
            numbers = raw
        array = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(array) | (array % 1 != 0) | (array < 0) | (array >= spec.num_labels)
        names = f" or the names {list(spec.label_names)}" if spec.label_names else ""
        valid, dtype = f"the ids 0..{spec.num_labels - 1}{names}", np.int64
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"task {spec.name!r}: {locate(first)}: label {values[first].as_py()!r} is not a valid {spec.kind} label "
            f"({int(bad.sum())} such row(s)); valid values are {valid}. Fix or remove the row(s), or fix the TaskSpec "
            f"({'label_range, kind' if spec.kind == 'regression' else 'num_labels, label_names, kind'}) "
            "if it describes the task wrongly."
        )
    return array.astype(dtype)


def _float32(targets: np.ndarray) -> np.ndarray:
    """Regression targets as float32; a value too large for float32 becomes inf (and is then refused)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(targets).astype(np.float32)


def _outside_range(targets: np.ndarray, spec: TaskSpec) -> np.ndarray:
    """Which float32 targets lie outside `spec.label_range` (bounds rounded to float32 as well, so a stored
    0.1 equals a bound of 0.1); all False without a range. NaN is not "outside": it is non-finite."""
    if spec.label_range is None:
        return np.zeros(targets.shape, dtype=bool)
    low, high = _float32(np.array(spec.label_range, dtype=np.float64))
    return (targets < low) | (targets > high)


def _valid_targets(spec: TaskSpec) -> str:
    if spec.label_range is None:
        return "finite numbers"
    low, high = spec.label_range
    return f"numbers from {low:g} to {high:g}, both included (TaskSpec label_range of {spec.name!r})"


# --------------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------------


def cap_rows(dataset_dict: datasets.DatasetDict, max_train_samples: int | None = None,
             max_eval_samples: int | None = None) -> datasets.DatasetDict:
    """Keep the first N rows of each split, as `run_glue.py` does for quick runs and debugging.

    `max_train_samples` caps `"train"`, `max_eval_samples` every other (evaluation) split; None keeps all.
    """
    for flag, value in (("--max_train_samples", max_train_samples), ("--max_eval_samples", max_eval_samples)):
        if value is not None and value < 1:
            raise ValueError(
                f"{flag}={value} would leave no rows; pass a positive number, or omit it to keep all rows."
            )
    capped = {}
    for split, dataset in dataset_dict.items():
        cap = max_train_samples if split == "train" else max_eval_samples
        capped[split] = dataset.select(range(cap)) if cap is not None and cap < len(dataset) else dataset
    return datasets.DatasetDict(capped)


def tokenize_splits(dataset_dict: datasets.DatasetDict, spec: TaskSpec, tokenizer: Any,
                    max_seq_length: int = 128) -> datasets.DatasetDict:
    """Tokenise prepared splits into model inputs: `input_ids`, `attention_mask`, `token_type_ids`
    (when the tokenizer makes them), `labels`, and `task` (= spec.name, read by the evaluation collator).

    Sequences are truncated to `max_seq_length` but not padded: the collator pads each batch to its
    own longest row, which is much cheaper than padding everything to the maximum.
    """
    if max_seq_length < 1:
        raise ValueError(f"--max_seq_length={max_seq_length} must be positive (128 is the usual GLUE value).")
    model_max_length = getattr(tokenizer, "model_max_length", None)
    if model_max_length is not None and max_seq_length > model_max_length:
        logger.warning("--max_seq_length=%d exceeds the tokenizer's model_max_length=%d; using %d.",
                       max_seq_length, model_max_length, model_max_length)
        max_seq_length = model_max_length
    # The closure holds plain values, not the spec: its metrics may be callables that datasets cannot hash.
    text_columns, task = spec.text_columns, spec.name

    def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        encoded = tokenizer(*(batch[column] for column in text_columns), truncation=True, max_length=max_seq_length)
        inputs = {key: encoded[key] for key in _MODEL_INPUTS if key in encoded}
        inputs["task"] = [task] * len(batch[text_columns[0]])
        return inputs

    tokenized = {}
    for split, dataset in dataset_dict.items():
        missing = [column for column in (*text_columns, LABEL_COLUMN) if column not in dataset.column_names]
        if missing:
            raise ValueError(
                f"task {task!r}, split {split!r}: column {missing[0]!r} is missing; columns present: "
                f"{dataset.column_names}. Pass splits from load_task_splits or prepare_dataset."
            )
        dropped = [column for column in dataset.column_names if column != LABEL_COLUMN]
        encoded = dataset.map(encode, batched=True, remove_columns=dropped, desc=f"Tokenizing {task} {split}")
        tokenized[split] = encoded.rename_column(LABEL_COLUMN, "labels")
    return datasets.DatasetDict(tokenized)


def label_statistics(dataset: datasets.Dataset, spec: TaskSpec) -> LabelStatistics:
    """Label counts (classification) or moments (regression) of a prepared or tokenised split.

    Loss weightings such as `prior` and `init` read these before training, so they are computed on
    the whole label column at once rather than row by row.
    """
    column = next((name for name in ("labels", LABEL_COLUMN) if name in dataset.column_names), None)
    if column is None:
        raise ValueError(
            f"task {spec.name!r}: the dataset has no 'labels' or 'label' column (columns: {dataset.column_names}). "
            "Pass a split from load_task_splits, prepare_dataset or tokenize_splits."
        )
    if len(dataset) == 0:
        raise ValueError(f"task {spec.name!r}: label statistics need at least one row; the split is empty.")
    labels = _arrow_column(dataset, column).to_numpy(zero_copy_only=False)
    # A split that did not come through prepare_dataset (a user's own tokenised data) is checked here too:
    # a NaN target or a fractional class id would otherwise only show up as a NaN loss, or silently truncated.
    numbers = labels.astype(np.float64)
    if spec.kind == "regression":
        stored = _float32(numbers)
        bad = ~np.isfinite(stored) | _outside_range(stored, spec)
        valid = f"; valid values are {_valid_targets(spec)}"
    else:
        bad, valid = ~np.isfinite(numbers) | (numbers % 1 != 0), ""
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"task {spec.name!r}: row {first} has label {_arrow_column(dataset, column)[first].as_py()!r}, not a valid {spec.kind} label "
            f"({int(bad.sum())} such row(s)){valid}. Prepare the data with prepare_dataset, which reports the offending row."
        )
    if spec.kind == "regression":
        targets = numbers
        return LabelStatistics(num_rows=len(targets), mean=float(targets.mean()), variance=float(targets.var()),
                               mean_square=float(np.mean(targets**2)))
    if labels.min() < 0 or labels.max() >= spec.num_labels:
        raise ValueError(
            f"task {spec.name!r}: labels span {labels.min()}..{labels.max()}, outside 0..{spec.num_labels - 1}. "
            "Prepare the data with prepare_dataset, which reports the offending row."
        )
    counts = np.bincount(labels.astype(np.int64), minlength=spec.num_labels)
    return LabelStatistics(num_rows=len(labels), class_counts=counts)
