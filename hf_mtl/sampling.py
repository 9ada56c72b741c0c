"""The multi-task training stream: which rows of which task each micro-batch holds, the same on every rank.

Two modes (`--task_sampling`):

* `all_per_step` (the default): every optimizer step holds rows of *every* task, so every strategy sees all K
  losses. The step's rows, `per_device_train_batch_size × K × world_size × gradient_accumulation_steps`, are
  split between the tasks ∝ o_i · n_i^α (`--sampling_alpha` α: 0 = equal rows, the default; 0.5 = square
  root; 1 = proportional to the task's training rows n_i; o_i the task's `oversample` factor, default 1), by
  largest remainders, with at least one row of every task in every micro-batch. A task's rows in a step are
  cut into the step's micro-batches as evenly as they go (so micro-batches may differ by a row per task).
  Losses stay per-task means.
* `one_per_step` (MT-DNN, tasknet): each optimizer step draws *one* task with probability ∝ o_i · n_i^α and
  takes all `per_device_train_batch_size × world_size × gradient_accumulation_steps` rows from it. Only the
  strategies whose factor is per task can step on one task (`Weighting.one_task_steps`).

α may change during training (`--sampling_schedule`): `constant`; `linear` from `--sampling_alpha` at the first
step to `--sampling_alpha_end` at the last; `anneal`, the BERT-and-PALs schedule α_e = 1 − 0.8·e/(E − 1) for
epoch e = 0..E−1 of E (Stickland & Murray 2019, arXiv:1902.02671; α = 1 when the run is one epoch or less).

What an epoch is: `all_per_step`, the steps in which the task that needs the most steps sees each of its rows
once, with the shares of the schedule's first α (at α = 0: the largest task once, `ceil(max n_i / rows per task
and step)`); `one_per_step`, `ceil(Σ n_i / rows per step)` steps, the steps that one pass over every task's rows
takes in one-task batches (MT-DNN's epoch). An epoch's length is fixed for the run. Each task walks its own
sequence of shuffled permutations (a fresh one each time it runs out), so a task can be seen several times, or
partly, in an epoch; `rows_seen` says how many of its rows were drawn (the logged `epochs_<task>`).

Everything is a pure function of (seed, epoch, step): permutations are seeded by (seed, epoch, task), the draws
of `one_per_step` by (seed, epoch). Micro-batch j of an epoch is micro-batch j % B of step j // B (B =
`batches_per_step`); accelerate deals micro-batches to ranks round-robin (rank r gets r, r+N, ...), so the rows
of global step s are the same whatever the number of processes N, for the same global batch. This is also what
makes a resumed run draw exactly what the uninterrupted one draws.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Sampler
from transformers import PreTrainedTokenizerBase

from .kinds import KINDS, get_kind
from .tasks import TaskSpec

#: The values of `--task_sampling` (see the module docstring).
TASK_SAMPLING_MODES = ("all_per_step", "one_per_step")
#: The values of `--sampling_schedule`.
SAMPLING_SCHEDULES = ("constant", "linear", "anneal")
#: Keeps the seed of `one_per_step`'s draws apart from the tasks' permutation seeds (seed, epoch, task).
_DRAW_STREAM = 2**31 - 1


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


def sampling_weights(sizes: Sequence[int], alpha: float, oversample: Sequence[float] | None = None) -> np.ndarray:
    """o_i · n_i^α for every task, normalised to sum to 1 (float64)."""
    weights = np.asarray(sizes, dtype=np.float64) ** alpha
    if oversample is not None:
        weights = weights * np.asarray(oversample, dtype=np.float64)
    return weights / weights.sum()


def split_rows(total: int, weights: Sequence[float], minimum: int = 1) -> np.ndarray:
    """`total` rows split ∝ `weights`, each task at least `minimum`: tasks whose share falls short get the
    minimum and the rest is shared among the others (again, until every share reaches it); then whole rows by
    largest remainders, ties to the earlier task. Sums to `total` exactly."""
    w = np.asarray(weights, dtype=np.float64)
    if total < minimum * len(w):
        raise ValueError(f"split_rows: {total} rows cannot give {len(w)} tasks at least {minimum} each.")
    pinned = np.zeros(len(w), dtype=bool)
    while True:
        free_rows = total - minimum * int(pinned.sum())
        ideal = np.where(pinned, float(minimum), free_rows * w / w[~pinned].sum())
        short = ~pinned & (ideal < minimum)
        if not short.any():
            break
        pinned |= short
    counts = np.where(pinned, minimum, np.floor(ideal)).astype(np.int64)
    left = total - int(counts.sum())
    remainders = np.where(pinned, -1.0, ideal - counts)
    for i in sorted(range(len(w)), key=lambda k: (-remainders[k], k))[:left]:
        counts[i] += 1
    return counts


@dataclass(frozen=True)
class SamplingSchedule:
    """α over training (see the module docstring): `kind` is one of `SAMPLING_SCHEDULES`; `alpha` the constant
    value or `linear`'s start, `alpha_end` `linear`'s end (`anneal` takes neither)."""

    kind: str = "constant"
    alpha: float = 0.0
    alpha_end: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in SAMPLING_SCHEDULES:
            raise ValueError(f"--sampling_schedule {self.kind!r} is not one of: {', '.join(SAMPLING_SCHEDULES)}.")
        for flag, value in (("sampling_alpha", self.alpha), ("sampling_alpha_end", self.alpha_end)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or not math.isfinite(value) or value < 0):
                raise ValueError(f"--{flag} must be a finite number >= 0 (0 = equal rows per task, 0.5 = square "
                                 f"root of the task sizes, 1 = proportional), got {value!r}.")
        if (self.kind == "linear") != (self.alpha_end is not None):
            raise ValueError(
                "--sampling_alpha_end is the end of --sampling_schedule linear and only of it: "
                + ("give it with the linear schedule, e.g. --sampling_alpha 1 --sampling_alpha_end 0.5." if
                   self.kind == "linear" else f"drop it, or pass --sampling_schedule linear (got {self.kind})."))

    @property
    def equal(self) -> bool:
        """α = 0 throughout: every task gets the same rows (today's default)."""
        return self.kind == "constant" and self.alpha == 0

    def alpha_at(self, step: int, total_steps: int, steps_per_epoch: int) -> float:
        """α at optimizer step `step` (0-based) of a run of `total_steps` steps."""
        if self.kind == "constant":
            return float(self.alpha)
        if self.kind == "linear":
            last = max(total_steps - 1, 1)
            return float(self.alpha + (self.alpha_end - self.alpha) * min(step, last) / last)
        epochs = max(1, math.ceil(total_steps / steps_per_epoch))
        epoch = min(step // steps_per_epoch, epochs - 1)
        return 1.0 if epochs == 1 else 1.0 - 0.8 * epoch / (epochs - 1)


@dataclass
class _EpochPlan:
    """One epoch's draws: `step_rows[s, i]`, task i's rows in step s (all ranks and micro-batches together),
    `starts[s, i]` where they begin in task i's stream, and the streams (built on first use)."""

    step_rows: np.ndarray
    starts: np.ndarray
    streams: dict[int, np.ndarray]


class MultiTaskBatchSampler(Sampler[list[tuple[int, int]]]):
    """Micro-batches `[(task, row), ...]` of the multi-task stream (see the module docstring).

    Args:
        task_sizes: number of training rows of each task.
        batch_size: the per-device batch size: rows of each task per micro-batch at α = 0 (`all_per_step`; the
            micro-batch holds `batch_size × K` rows whatever α), or the rows of the drawn task (`one_per_step`).
        seed: base seed; the draws depend on (seed, epoch, step) only.
        batches_per_step: micro-batches that make one optimizer step across all ranks
            (world_size × gradient_accumulation_steps); the epoch length is a multiple of it so that
            every optimizer step is complete.
        mode: one of `TASK_SAMPLING_MODES`.
        schedule: α over training (`SamplingSchedule`; default: α = 0).
        oversample: a factor per task on its share or draw probability (default 1 each).
        total_steps: the run's optimizer steps, which `linear` and `anneal` need (set it before iterating;
            default one epoch).
    """

    def __init__(self, task_sizes: Sequence[int], batch_size: int, seed: int = 0, batches_per_step: int = 1, *,
                 mode: str = "all_per_step", schedule: SamplingSchedule | None = None,
                 oversample: Sequence[float] | None = None, total_steps: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"per_device_train_batch_size={batch_size} must be at least 1.")
        if batches_per_step < 1:
            raise ValueError(f"batches_per_step={batches_per_step} (processes x --gradient_accumulation_steps) must be "
                             "at least 1; pass --gradient_accumulation_steps 1 or more.")
        if not task_sizes:
            raise ValueError("task_sizes is empty: the multi-task stream needs at least one task with training rows.")
        if mode not in TASK_SAMPLING_MODES:
            raise ValueError(f"--task_sampling {mode!r} is not one of: {', '.join(TASK_SAMPLING_MODES)}.")
        self.task_sizes = list(task_sizes)
        self.mode = mode
        self.schedule = schedule or SamplingSchedule()
        if oversample is not None and (len(oversample) != len(self.task_sizes)
                                       or not all(math.isfinite(o) and o > 0 for o in oversample)):
            raise ValueError(f"oversample={list(oversample)} must be one positive factor per task "
                             f"({len(self.task_sizes)} tasks).")
        self.oversample = None if oversample is None else [float(o) for o in oversample]
        self.rows_per_task = batch_size
        self.batches_per_step = batches_per_step
        self.seed = seed
        self.epoch = 0
        k = len(self.task_sizes)
        #: Rows of one optimizer step, all ranks and micro-batches together.
        self.rows_per_step = batch_size * batches_per_step * (k if mode == "all_per_step" else 1)
        if mode == "one_per_step":
            steps = math.ceil(sum(self.task_sizes) / self.rows_per_step)
        else:
            first = self._shares(self.schedule.alpha_at(0, 1, 1))
            steps = max(math.ceil(n / r) for n, r in zip(self.task_sizes, first))
        self.steps_per_epoch = steps
        self.num_batches = steps * batches_per_step
        self._plans: dict[int, _EpochPlan] = {}
        self._epoch_rows: dict[int, np.ndarray] = {}
        self.total_steps = total_steps or steps
        # accelerate's BatchSamplerShard reads `batch_size` as the number of indices in one micro-batch, to tell
        # full batches from a short last one; None where micro-batches differ in length (uneven shares).
        constant = mode == "one_per_step" or (self.schedule.equal and self.oversample is None)
        self.batch_size = batch_size * (1 if mode == "one_per_step" else k) if constant else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def total_steps(self) -> int:
        return self._total_steps

    @total_steps.setter
    def total_steps(self, steps: int) -> None:
        # The schedules depend on it: what was drawn for another length is forgotten.
        self._total_steps = int(steps)
        self._plans.clear()
        self._epoch_rows.clear()

    def __len__(self) -> int:
        return self.num_batches

    # ---- what each step draws -------------------------------------------------------------------

    def alpha_at(self, step: int) -> float:
        """α at optimizer step `step` (0-based)."""
        return self.schedule.alpha_at(step, self.total_steps, self.steps_per_epoch)

    def _shares(self, alpha: float) -> np.ndarray:
        """`all_per_step`: each task's rows in one step at this α (at least one per micro-batch)."""
        weights = sampling_weights(self.task_sizes, alpha, self.oversample)
        return split_rows(self.rows_per_step, weights, minimum=self.batches_per_step)

    def _plan(self, epoch: int) -> _EpochPlan:
        if epoch in self._plans:
            return self._plans[epoch]
        k, steps = len(self.task_sizes), self.steps_per_epoch
        alphas = [self.alpha_at(epoch * steps + s) for s in range(steps)]
        step_rows = np.zeros((steps, k), dtype=np.int64)
        if self.mode == "all_per_step":
            shares: dict[float, np.ndarray] = {}
            for s, alpha in enumerate(alphas):
                step_rows[s] = shares[alpha] if alpha in shares else shares.setdefault(alpha, self._shares(alpha))
        else:
            draws = np.random.default_rng([self.seed, epoch, _DRAW_STREAM]).random(steps)
            for s, (alpha, u) in enumerate(zip(alphas, draws)):
                cumulative = np.cumsum(sampling_weights(self.task_sizes, alpha, self.oversample))
                step_rows[s, min(int(np.searchsorted(cumulative, u, side="right")), k - 1)] = self.rows_per_step
        starts = np.cumsum(step_rows, axis=0) - step_rows
        plan = _EpochPlan(step_rows, starts, {})
        if len(self._plans) > 4:  # an epoch is revisited only to name a faulty batch's rows
            self._plans.clear()
        self._plans[epoch] = plan
        return plan

    def _stream(self, plan: _EpochPlan, epoch: int, task: int) -> np.ndarray:
        """Task `task`'s row order in `epoch`: seeded permutations, concatenated as far as the epoch draws."""
        if task not in plan.streams:
            n = self.task_sizes[task]
            needed = max(int(plan.step_rows[:, task].sum()), 1)
            rng = np.random.default_rng([self.seed, epoch, task])
            plan.streams[task] = np.concatenate([rng.permutation(n) for _ in range(math.ceil(needed / n))])[:needed]
        return plan.streams[task]

    def rows(self, epoch: int, micro_batch: int, task: int) -> np.ndarray:
        """The training rows of `task` in micro-batch `micro_batch` (0-based, within the epoch, over all ranks)."""
        plan = self._plan(epoch)
        step, m = divmod(micro_batch, self.batches_per_step)
        count = int(plan.step_rows[step, task])
        if count == 0:
            return np.zeros(0, dtype=np.int64)
        base, extra = divmod(count, self.batches_per_step)
        begin = int(plan.starts[step, task]) + m * base + min(m, extra)
        return self._stream(plan, epoch, task)[begin : begin + base + (1 if m < extra else 0)]

    def task_stream(self, task: int) -> np.ndarray:
        """The row order of one task for the current epoch (micro-batches take consecutive pieces of it)."""
        return self._stream(self._plan(self.epoch), self.epoch, task)

    def step_rows(self, step: int) -> np.ndarray:
        """Every task's rows in optimizer step `step` (0-based; all ranks and micro-batches together)."""
        epoch, s = divmod(step, self.steps_per_epoch)
        return self._plan(epoch).step_rows[s].copy()

    def rows_seen(self, steps: int) -> np.ndarray:
        """Every task's rows drawn in the first `steps` optimizer steps (divide by the task sizes for passes)."""
        full, part = divmod(steps, self.steps_per_epoch)
        seen = np.zeros(len(self.task_sizes), dtype=np.int64)
        for epoch in range(full):
            if epoch not in self._epoch_rows:
                self._epoch_rows[epoch] = self._plan(epoch).step_rows.sum(0)
            seen += self._epoch_rows[epoch]
        return seen + self._plan(full).step_rows[:part].sum(0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.epoch
        for j in range(self.num_batches):
            yield [(t, int(row)) for t in range(len(self.task_sizes)) for row in self.rows(epoch, j, t)]


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
