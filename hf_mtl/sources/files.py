"""`files`: local `train_file` / `validation_file` / `test_file`, read with datasets' own loaders.

The format comes from the extension (`.csv`, `.tsv`, `.json` / `.jsonl`, `.parquet`; `format:` overrides
it): csv through the `csv` builder (tsv with `delimiter="\\t"`), json and JSON Lines through `json`,
parquet through `parquet`. Relative paths are read from the current directory. An empty file, a
missing one, or one the loader cannot parse is refused with its path and the reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import SPLITS, Source

#: Extension -> (datasets builder, extra loader arguments).
FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    "csv": ("csv", {}),
    "tsv": ("csv", {"delimiter": "\t"}),
    "json": ("json", {}),
    "jsonl": ("json", {}),
    "parquet": ("parquet", {}),
}


class FileSource(Source):
    type = "files"
    selecting_keys = ("train_file", "validation_file", "test_file")
    keys = (*selecting_keys, "format")

    def __init__(self, task: str, source: dict[str, Any]) -> None:
        super().__init__(task, source)
        self.files = {split: str(source[f"{split}_file"]) for split in SPLITS if source.get(f"{split}_file")}
        if not self.files:
            raise ValueError(f"task {task!r}: a files source needs train_file and/or validation_file / test_file.")
        given = source.get("format")
        if given is not None and given not in FORMATS:
            raise ValueError(f"task {task!r}: format={given!r} is not one of {', '.join(FORMATS)}.")
        self.formats = {split: given or self._format(split, path) for split, path in self.files.items()}

    def _format(self, split: str, path: str) -> str:
        suffix = Path(path).suffix.lower().lstrip(".")
        if suffix not in FORMATS:
            raise ValueError(f"task {self.task!r}: {split}_file {path}: cannot tell its format from the extension "
                             f"{Path(path).suffix or '(none)'!r}; use .csv, .tsv, .json, .jsonl or .parquet, or set "
                             f"format: one of {', '.join(FORMATS)}.")
        return suffix

    def describe(self, split: str) -> str:
        return self.files.get(split, f"split {split!r}")

    def locate(self, split: str) -> Callable[[int], str]:
        path, form = self.files[split], self.formats[split]
        if form == "jsonl" or (form == "json" and _is_json_lines(path)):
            return lambda row: f"{path}, line {_json_line(path, row)}"
        if form in ("csv", "tsv"):
            return lambda row: f"{path}, data row {row + 1} (line {row + 2} if no field spans lines)"
        return lambda row: f"{path}, row {row}"

    def load(self) -> Any:
        import datasets

        splits = {}
        for split, path in self.files.items():
            splits[split] = self._read(split, path)
        return datasets.DatasetDict(splits)

    def _read(self, split: str, path: str) -> Any:
        import datasets

        key = f"{split}_file"
        if not os.path.exists(path):
            raise FileNotFoundError(f"task {self.task!r}: {key} {path}: no such file (a relative path is read from "
                                    f"{os.getcwd()}). Fix the path in the task file.")
        if os.path.isdir(path):
            raise ValueError(f"task {self.task!r}: {key} {path} is a folder; give the data file itself.")
        if os.path.getsize(path) == 0:
            raise ValueError(f"task {self.task!r}: {key} {path} is empty. Give a file with rows, or drop {key}.")
        builder, options = FORMATS[self.formats[split]]
        try:
            dataset = datasets.load_dataset(builder, data_files={split: path}, split=split, **options)
        except Exception as error:  # noqa: BLE001 - the builders raise many kinds
            cause = error.__cause__ or error
            if "corresponds to no data" in f"{error} {cause}":  # datasets' words for a file that parsed to zero rows
                raise ValueError(f"task {self.task!r}: {key} {path} has no rows (only a header, or blank lines?). Give "
                                 f"rows, or drop {key}.") from None
            raise ValueError(f"task {self.task!r}: {key} {path} cannot be read as {self.formats[split]}: "
                             f"{type(cause).__name__}: {str(cause)[:300].rstrip('.')}. Fix the file, or set format: if the "
                             "extension is misleading.") from None
        if len(dataset) == 0:
            raise ValueError(f"task {self.task!r}: {key} {path} has no rows (only a header?). Give rows, or drop {key}.")
        return dataset


def _is_json_lines(path: str) -> bool:
    """Whether a .json file holds JSON Lines (its first non-blank character opens an object, not a list)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip():
                return line.lstrip().startswith("{")
    return False


def _json_line(path: str, row: int) -> int:
    """The line number (from 1) of row `row` of a JSON Lines file: the loader skips blank lines, so count them."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        seen = -1
        for number, line in enumerate(handle, start=1):
            seen += bool(line.strip())
            if seen == row:
                return number
    return row + 1
