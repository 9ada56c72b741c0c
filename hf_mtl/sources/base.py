"""`Source`: reads the raw splits of one task and says where each split and row comes from."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

#: The split names a source may give, and the task-file suffix of each (`train_file`, `validation_split`, ...).
SPLITS = ("train", "validation", "test")


class Source:
    """One task's data source, from the task's `source` dict (keys depend on the source type)."""

    type: ClassVar[str]
    #: Task-file keys that select this source (the first one found decides).
    selecting_keys: ClassVar[tuple[str, ...]]
    #: Every key this source reads from a task entry (besides `type`).
    keys: ClassVar[tuple[str, ...]]

    def __init__(self, task: str, source: dict[str, Any]) -> None:
        self.task = task
        self.source = dict(source)
        unknown = sorted(set(self.source) - set(self.keys) - {"type"})
        if unknown:
            raise ValueError(f"task {task!r}: unknown key(s) {unknown} for a {self.type} source; it takes "
                             f"{', '.join(self.keys)}.")

    def load(self) -> Any:
        """The raw splits as a `datasets.DatasetDict` (keys among `SPLITS`)."""
        raise NotImplementedError

    def describe(self, split: str) -> str:
        """Where `split` comes from, for messages (a file path, or a dataset and split name)."""
        raise NotImplementedError

    def locate(self, split: str) -> Callable[[int], str]:
        """`locate(i)` names row i of `split` for errors (`file, line 7`)."""
        where = self.describe(split)
        return lambda row: f"{where}, row {row}"
