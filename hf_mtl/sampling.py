"""The multi-task training stream: one batch of every task in each micro-batch, the same on every rank.

What an epoch means: `steps_per_epoch = ceil(max_i n_i / global_batch)` optimizer steps, where
`global_batch = per_device_train_batch_size × world_size × gradient_accumulation_steps`, i.e. the
largest task's training rows are seen once. Every step draws `global_batch` rows from *every* task:
each task walks its own sequence of shuffled permutations (a fresh one each time it runs out), so
smaller tasks cycle several times per epoch. Permutations are seeded by (seed, epoch, task) only.

Why every micro-batch holds all tasks: accelerate deals whole batches to ranks round-robin, so a
sampler that alternated tasks would hand each rank a different task. Here micro-batch j holds rows
[j·b, (j+1)·b) of every task's stream; rank r gets micro-batches r, r+N, ... and the rows of global
step s are the same whatever the number of processes N (for the same global batch).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Sampler
from transformers import PreTrainedTokenizerBase

from .kinds import KINDS, get_kind
from .tasks import TaskSpec


class MultiTaskDataset(Dataset):
    """The tokenised training sets of all tasks behind one index: item `(task_index, row)`."""

    def __init__(self, datasets: Sequence[Any], task_names: Sequence[str]) -> None:
        self.datasets = list(datasets)
        self.task_names = list(task_names)
        for name, ds in zip(self.task_names, self.datasets):
            if len(ds) == 0:
                raise ValueError(f"train_dataset: task {name!r} has no training rows; give it data or drop the task.")

    @property
    def sizes(self) -> list[int]:
        return [len(ds) for ds in self.datasets]

    def __len__(self) -> int:
        return sum(self.sizes)

    def __getitem__(self, index: tuple[int, int]) -> dict[str, Any]:
        task, row = index
        return self.datasets[task][int(row)]

    def __getitems__(self, indices: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
        # One columnar read per task instead of one per row.
        items: list[dict[str, Any]] = []
        for task in dict.fromkeys(t for t, _ in indices):
            rows = [int(r) for t, r in indices if t == task]
            columns = self.datasets[task][rows]
            items.extend({k: v[i] for k, v in columns.items()} for i in range(len(rows)))
        return items


class MultiTaskBatchSampler(Sampler[list[tuple[int, int]]]):
    """Micro-batches of `batch_size` rows from every task (see the module docstring).

    Args:
        task_sizes: number of training rows of each task.
        batch_size: rows per task in one micro-batch (the per-device batch size).
        seed: base seed; permutations depend on (seed, epoch, task) only.
        batches_per_step: micro-batches that make one optimizer step across all ranks
            (world_size × gradient_accumulation_steps); the epoch length is a multiple of it so that
            every optimizer step is complete.
    """

    def __init__(self, task_sizes: Sequence[int], batch_size: int, seed: int = 0, batches_per_step: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"per_device_train_batch_size={batch_size} must be at least 1.")
        if batches_per_step < 1:
            raise ValueError(f"batches_per_step={batches_per_step} (processes x --gradient_accumulation_steps) must be "
                             "at least 1; pass --gradient_accumulation_steps 1 or more.")
        if not task_sizes:
            raise ValueError("task_sizes is empty: the multi-task stream needs at least one task with training rows.")
        self.task_sizes = list(task_sizes)
        self.rows_per_task = batch_size
        # accelerate's BatchSamplerShard reads `batch_size` as the number of indices in one batch to
        # tell full batches from a short last one: here that is one batch of every task.
        self.batch_size = batch_size * len(self.task_sizes)
        self.seed = seed
        self.batches_per_step = batches_per_step
        self.epoch = 0
        steps = math.ceil(max(self.task_sizes) / (batch_size * batches_per_step))
        self.num_batches = steps * batches_per_step

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def task_stream(self, task: int) -> np.ndarray:
        """The row order of one task for the current epoch: concatenated seeded permutations."""
        n = self.task_sizes[task]
        needed = self.num_batches * self.rows_per_task
        rng = np.random.default_rng([self.seed, self.epoch, task])
        return np.concatenate([rng.permutation(n) for _ in range(math.ceil(needed / n))])[:needed]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        streams = [self.task_stream(t) for t in range(len(self.task_sizes))]
        b = self.rows_per_task
        for j in range(self.num_batches):
            yield [(t, int(row)) for t, stream in enumerate(streams) for row in stream[j * b : (j + 1) * b]]


class TaskCollator:
    """Pads one task's examples the way its kind needs (`TaskKind.collate`: padded inputs, token labels padded
    with -100, choices stacked); keeps the task name as the string `task` for `MultiTaskModel.forward`.

    `tasks` (the run's `TaskSpec`s) says each task's kind; a task not in it is collated as a sentence-level one.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, tasks: Sequence[TaskSpec] = (),
                 pad_to_multiple_of: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.pad_to_multiple_of = pad_to_multiple_of
        self.kinds = {spec.name: get_kind(spec.kind) for spec in tasks}

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        names = {f.get("task") for f in features}
        if len(names) != 1:
            raise ValueError(f"TaskCollator: one batch must hold one task, got {sorted(map(str, names))}.")
        name = names.pop()
        kind = self.kinds.get(name, KINDS["classification"])
        batch = kind.collate([{k: v for k, v in f.items() if k != "task"} for f in features], self.tokenizer,
                             self.pad_to_multiple_of)
        return {"task": name, **batch}


class MultiTaskCollator:
    """Groups a micro-batch by task and pads each group: `{task: batch}`, tasks in sampler order."""

    def __init__(self, task_collator: TaskCollator) -> None:
        self.task_collator = task_collator

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for f in features:
            groups.setdefault(f["task"], []).append(f)
        return {task: self.task_collator(group) for task, group in groups.items()}
