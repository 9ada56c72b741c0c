"""`disk`: a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk` (`load_from_disk`).

Keys: `load_from_disk` (the folder), and `train_split` / `validation_split` / `test_split` to map a
DatasetDict's split names onto ours. A folder holding one `Dataset` is the training split.
"""

from __future__ import annotations

import os
from typing import Any

from .base import SPLITS, Source


class DiskSource(Source):
    type = "disk"
    selecting_keys = ("load_from_disk",)
    keys = ("load_from_disk", *(f"{split}_split" for split in SPLITS))

    def __init__(self, task: str, source: dict[str, Any]) -> None:
        super().__init__(task, source)
        self.path = str(source["load_from_disk"])
        self.names = {split: source.get(f"{split}_split") or split for split in SPLITS}

    def describe(self, split: str) -> str:
        return f"{self.path} (split {self.names.get(split, split)!r})"

    def load(self) -> Any:
        import datasets

        if not os.path.isdir(self.path):
            raise FileNotFoundError(f"task {self.task!r}: load_from_disk {self.path}: no such folder (a relative path is "
                                    f"read from {os.getcwd()}).")
        try:
            loaded = datasets.load_from_disk(self.path)
        except Exception as error:  # noqa: BLE001
            raise ValueError(f"task {self.task!r}: load_from_disk {self.path} is not a folder written by save_to_disk: "
                             f"{type(error).__name__}: {str(error)[:300].rstrip('.')}.") from None
        if isinstance(loaded, datasets.Dataset):
            return datasets.DatasetDict({"train": loaded})
        named = [f"{split}_split={self.names[split]!r}" for split in SPLITS
                 if self.source.get(f"{split}_split") and self.names[split] not in loaded]
        if named:  # a split named in the task file must be there (a typo would drop the evaluation silently)
            raise ValueError(f"task {self.task!r}: {', '.join(named)}: no such split in {self.path}; it has "
                             f"{list(loaded)}.")
        splits = {split: loaded[self.names[split]] for split in SPLITS if self.names[split] in loaded}
        if not splits:
            raise ValueError(f"task {self.task!r}: {self.path} has splits {list(loaded)}; map them with "
                             "train_split: NAME, validation_split: NAME.")
        return datasets.DatasetDict(splits)
