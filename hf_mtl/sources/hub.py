"""`hub`: a dataset on the Hugging Face Hub (or a local dataset folder) through `datasets.load_dataset`.

Keys: `dataset` (the Hub id, e.g. `conll2003`, or a local folder), `dataset_config` (its configuration),
`train_split` / `validation_split` / `test_split` (the dataset's split names for ours; default the same
names, with `dev` accepted for `validation`). Offline (`HF_DATASETS_OFFLINE=1`) only a cached dataset or a
local folder loads; the error then says so.
"""

from __future__ import annotations

from typing import Any

from .base import SPLITS, Source


class HubSource(Source):
    type = "hub"
    selecting_keys = ("dataset",)
    keys = ("dataset", "dataset_config", "revision", *(f"{split}_split" for split in SPLITS))

    def __init__(self, task: str, source: dict[str, Any]) -> None:
        super().__init__(task, source)
        self.dataset = str(source["dataset"])
        self.config = source.get("dataset_config")
        self.names = {split: source.get(f"{split}_split") for split in SPLITS}

    def describe(self, split: str) -> str:
        config = f" ({self.config})" if self.config else ""
        return f"dataset {self.dataset}{config}, split {self.names.get(split) or split!r}"

    def load(self) -> Any:
        import datasets

        try:
            loaded = datasets.load_dataset(self.dataset, self.config, revision=self.source.get("revision"))
        except Exception as error:  # noqa: BLE001 - offline mode, a missing id, a bad config: many kinds
            raise ValueError(
                f"task {self.task!r}: datasets.load_dataset({self.dataset!r}{', ' + repr(self.config) if self.config else ''}) "
                f"failed: {type(error).__name__}: {str(error)[:300].rstrip('.')}. Offline, only a dataset in the local cache or a "
                "local folder loads; or give train_file / validation_file instead."
            ) from None
        if isinstance(loaded, datasets.Dataset):
            loaded = datasets.DatasetDict({"train": loaded})
        splits = {}
        for split in SPLITS:
            name = self.names.get(split)
            candidates = [name] if name else ([split, "dev", "valid"] if split == "validation" else [split])
            found = next((c for c in candidates if c in loaded), None)
            if name and found is None:
                raise ValueError(f"task {self.task!r}: {split}_split={name!r} is not a split of {self.dataset}; it has "
                                 f"{list(loaded)}.")
            if found is not None:
                splits[split] = loaded[found]
        if not splits:
            raise ValueError(f"task {self.task!r}: {self.dataset} has splits {list(loaded)}, none of which is train / "
                             "validation / test; map them with train_split: NAME, validation_split: NAME.")
        return datasets.DatasetDict(splits)
