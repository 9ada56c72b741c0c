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
import dataclasses
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
import pyarrow as pa
import pyarrow.compute as pc

from .kinds import LABEL_COLUMN, get_kind
from .kinds.base import arrow_column
from .kinds.regression import float32, outside_range, valid_targets
from .label_stats import LabelStatistics
from .tasks import TaskSpec

logger = logging.getLogger(__name__)

_HUB_DATASET = "nyu-mll/glue"


# --------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------


def load_task(spec: TaskSpec, glue_dir: str | os.PathLike[str] | None = None) -> tuple[TaskSpec, datasets.DatasetDict]:
    """A task's prepared splits, and its spec with the label set resolved from the training data.

    A task with a `source` (declared in a task file) is read by that source (`hf_mtl.sources`): its label set
    is resolved from the raw training split (`resolve_labels`), then every split is validated and prepared,
    errors naming the file and row. A GLUE task is read by `load_task_splits`.
    """
    if spec.source is None:
        return spec, load_task_splits(spec, glue_dir)
    from .sources import get_source

    source = get_source(spec.name, spec.source)
    raw = source.load()
    wanted = ("train", *spec.eval_splits)
    spec = resolve_labels(spec, raw, where={split: source.describe(split) for split in raw},
                          locate={split: source.locate(split) for split in raw})
    return spec, datasets.DatasetDict({
        split: _prepare_split(spec, raw[split], where=source.describe(split), locate=source.locate(split))
        for split in wanted if split in raw
    })


def load_task_splits(spec: TaskSpec, glue_dir: str | os.PathLike[str] | None = None) -> datasets.DatasetDict:
    """The prepared splits of a GLUE task, from a local GLUE folder or from the Hub (a task with a `source`:
    see `load_task`).

    The source is, in order: `glue_dir` (a folder in the original GLUE layout, `SST-2/train.tsv`, ...),
    else the `GLUE_DIR` environment variable, else `datasets.load_dataset("nyu-mll/glue", spec.hub_config)`.
    The local folder comes first so that an offline machine never waits on the Hub.
    """
    if spec.source is not None:
        return load_task(spec, glue_dir)[1]
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
    """Validate one split and bring it to the prepared shape (the task kind's `prepare`).

    `where` names the split for whole-split errors (a file, or `split 'train'`); `locate(i)` names
    row i for row errors (a file and line, or a split and row index).
    """
    if not spec.resolved:
        raise ValueError(f"task {spec.name!r}: its label set is not known yet (num_labels=None); resolve it from the "
                         "raw splits first (spec = hf_mtl.data.resolve_labels(spec, dataset)), or give label_names.")
    required = (*spec.text_columns, spec.label_column)
    for column in required:
        if column not in dataset.column_names:
            raise ValueError(
                f"task {spec.name!r}, {where}: column {column!r} is missing; columns present: {dataset.column_names}. "
                "Rename it (dataset.rename_column) or point the task at it (text_columns, label_column, ...)."
            )
    if len(dataset) == 0:
        raise ValueError(
            f"task {spec.name!r}, {where} has no rows. Fill it, or leave the split out "
            "(remove the file / the DatasetDict entry) to train or evaluate without it."
        )
    return get_kind(spec.kind).prepare(spec, dataset, locate)


def resolve_labels(spec: TaskSpec, splits: Mapping[str, datasets.Dataset],
                   where: Mapping[str, str] | None = None,
                   locate: Mapping[str, Callable[[int], str]] | None = None) -> TaskSpec:
    """`spec` with its label set filled in from raw (unprepared) splits, when the task did not give one.

    `label_names` come from the training split's `ClassLabel` feature when it has one, else the sorted set of
    its labels (numbers sort as numbers); `num_labels` is their count (multiple choice: the number of choices;
    labels given as ids only: the largest id + 1). A label that an evaluation split holds but the training split
    lacks is refused here, naming the split, the row and the fix, so it does not surface at evaluation.
    `where` names each split's source (a file) for errors, `locate[split](i)` its row i.
    """
    where = dict(where or {})
    locators = dict(locate or {})
    kind = get_kind(spec.kind)
    if spec.resolved or "train" not in splits:
        if not spec.resolved:
            raise ValueError(f"task {spec.name!r}: no training split to read its labels from; give its label_names "
                             "(or num_labels) in the task file.")
        return spec
    train = splits["train"]
    if spec.label_column not in train.column_names:
        return spec  # _prepare_split names the missing column
    feature = train.features[spec.label_column]
    inner = getattr(feature, "feature", feature)
    if isinstance(inner, datasets.ClassLabel):
        names = tuple(inner.names)
        return dataclasses.replace(spec, label_names=names, num_labels=len(names))
    if spec.kind == "multiple_choice":
        return dataclasses.replace(spec, num_labels=_choice_count(spec, train, where.get("train", "split 'train'")))
    values = train[spec.label_column]
    names = kind.infer_label_names(values)
    if names is not None:
        known = set(names)
        for split, dataset in splits.items():
            if split == "train" or spec.label_column not in dataset.column_names:
                continue
            for row, raw in enumerate(dataset[spec.label_column]):
                unseen = [v for v in (kind.label_values(raw) if raw is not None else []) if str(v) not in known]
                if unseen:
                    place = locators[split](row) if split in locators else f"{where.get(split, f'split {split!r}')}, row {row}"
                    raise ValueError(
                        f"task {spec.name!r}: {place}: label {unseen[0]!r} "
                        f"does not occur in the training data ({where.get('train', 'split train')}), whose labels are "
                        f"{list(names)}. A head cannot learn a label it never sees: add training rows with it, or list "
                        "every label in the task's label_names (its output is then trained on no example)."
                    )
        if len(names) < kind.min_labels:
            raise ValueError(
                f"task {spec.name!r}: {where.get('train', 'split train')}: only the label {names[0]!r} occurs in the "
                f"training data; a {spec.kind} task needs at least {kind.min_labels}. Add rows "
                "with the other labels, or list every label in the task's label_names."
            )
        return dataclasses.replace(spec, label_names=names, num_labels=len(names))
    ids = [v for raw in values if raw is not None for v in kind.label_values(raw)]
    if spec.kind == "multi_label":
        lengths = {len(raw) for raw in values if isinstance(raw, (list, tuple)) and raw}
        if len(lengths) == 1:
            return dataclasses.replace(spec, num_labels=lengths.pop())
    numbers = [v for v in ids if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0]
    if not numbers or len(numbers) != len(ids):
        raise ValueError(f"task {spec.name!r}: cannot read a label set from the training labels of "
                         f"{where.get('train', 'split train')}; give label_names in the task file.")
    return dataclasses.replace(spec, num_labels=max(max(numbers) + 1, get_kind(spec.kind).min_labels))


def _choice_count(spec: TaskSpec, train: datasets.Dataset, where: str) -> int:
    """A multiple-choice task's N: its choice columns, or the length of the first row's choices list."""
    columns = spec.text_columns[1:]
    if len(columns) > 1:
        return len(columns)
    if columns[0] not in train.column_names or len(train) == 0:
        return 2  # _prepare_split names the missing column or the empty split
    first = train[0][columns[0]]
    if not isinstance(first, list) or len(first) < 2:
        raise ValueError(f"task {spec.name!r}: {where}, row 0: the choices column {columns[0]!r} holds {first!r}; a "
                         "multiple-choice row has a list of at least 2 choices (or use one column per choice).")
    return len(first)


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


#: The held-out rows of --validation_split_percentage are the same in every run, whatever its --seed.
HOLD_OUT_SEED = 0


def hold_out(dataset_dict: datasets.DatasetDict, spec: TaskSpec, percentage: float) -> datasets.DatasetDict:
    """A fixed random `percentage`% of the `"train"` rows as every evaluation split of `spec`; training keeps the
    other rows, in their order. The draw depends on the number of rows only (`HOLD_OUT_SEED`), so every run of a
    search evaluates on the same rows."""
    train = dataset_dict["train"]
    held = round(len(train) * percentage / 100)
    if not 0 < held < len(train):
        raise ValueError(f"--validation_split_percentage={percentage}: task {spec.name!r} has {len(train)} training "
                         f"rows, so it would hold out {held}; give a percentage that leaves at least one row on each "
                         "side, or more training rows (--max_train_samples).")
    chosen = np.zeros(len(train), dtype=bool)
    chosen[np.random.default_rng(HOLD_OUT_SEED).choice(len(train), held, replace=False)] = True
    evaluation = train.select(np.flatnonzero(chosen))
    return datasets.DatasetDict({"train": train.select(np.flatnonzero(~chosen)),
                                 **{split: evaluation for split in spec.eval_splits}})


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
    # The closure holds the spec without its metrics: they may be callables that datasets cannot hash.
    kind, task, plain = get_kind(spec.kind), spec.name, dataclasses.replace(spec, metrics=())
    text_columns = spec.text_columns

    def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        inputs = kind.tokenize(plain, batch, tokenizer, max_seq_length)
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
        encoded = dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc=f"Tokenizing {task} {split}")
        # The prepared labels' type (float32 targets, fixed-length vectors), not what Arrow infers from Python lists.
        tokenized[split] = encoded.cast_column("labels", dataset.features[LABEL_COLUMN])
    return datasets.DatasetDict(tokenized)


def label_statistics(dataset: datasets.Dataset, spec: TaskSpec) -> LabelStatistics:
    """What `init` and `prior` read about a prepared or tokenised split's labels (the task kind's
    `label_statistics`: class counts, target moments, or the kind's own initial and prior losses).

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
    if spec.kind in ("classification", "regression"):
        _check_stored_labels(dataset, column, spec)
        labels = arrow_column(dataset, column).to_numpy(zero_copy_only=False)
        if spec.kind == "regression" and labels.dtype == object:
            labels = np.stack(labels)
    else:
        labels = dataset[column]
    return get_kind(spec.kind).label_statistics(spec, labels)


def _check_stored_labels(dataset: datasets.Dataset, column: str, spec: TaskSpec) -> None:
    """A split that did not come through prepare_dataset (a user's own tokenised data) is checked too: a NaN
    target or a fractional class id would otherwise only show up as a NaN loss, or silently truncated."""
    values = arrow_column(dataset, column)
    if pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type):
        values = pc.list_flatten(values)
    numbers = values.to_numpy(zero_copy_only=False).astype(np.float64)
    if spec.kind == "regression":
        stored = float32(numbers)
        bad = ~np.isfinite(stored) | outside_range(stored, spec)
        valid = f"; valid values are {valid_targets(spec)}"
    else:
        bad = ~np.isfinite(numbers) | (numbers % 1 != 0) | (numbers < 0) | (numbers >= spec.num_labels)
        valid = f"; valid values are the ids 0..{spec.num_labels - 1}"
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        if spec.kind != "regression" and np.isfinite(numbers).all() and not (numbers % 1 != 0).any():
            raise ValueError(
                f"task {spec.name!r}: labels span {numbers.min():g}..{numbers.max():g}, outside 0..{spec.num_labels - 1}. "
                "Prepare the data with prepare_dataset, which reports the offending row."
            )
        raise ValueError(
            f"task {spec.name!r}: row {first} has label {values[first].as_py()!r}, not a valid {spec.kind} label "
            f"({int(bad.sum())} such row(s)){valid}. Prepare the data with prepare_dataset, which reports the offending row."
        )
