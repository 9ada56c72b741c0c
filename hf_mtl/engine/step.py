"""`TaskByTaskStep`: the engine's face. It picks the step shape from the strategy's `kind`, once, and owns
the fault policy's counters across steps."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from .direct import DirectStep
from .faults import FaultPolicy, SkipStep
from .matrix import MatrixStep
from .per_task import PerTaskStep
from .shape import StepShape
from .state import ComputeLoss, StepResult, TaskPasses, model_loss

if TYPE_CHECKING:
    from ..weighting import Weighting

#: The values of `Weighting.kind`, each with the shapes it steps in (see `choose_shape`).
KINDS = ("loss", "gradient", "aggregator")


def choose_shape(kind: str, num_micro_batches: int, nan_policy: str) -> type[StepShape]:
    """The step shape for a strategy of this `kind`: the K × P matrix for aggregators; the per-task buffer
    when a factor needs the task's own gradient, when micro-batches accumulate (h_i must come from the
    whole accumulated batch's loss) or when a task may be dropped (`skip_task` tells each task's gradient
    apart); else the direct step."""
    if kind not in KINDS:
        raise ValueError(f"weighting kind {kind!r} is not one of: {', '.join(KINDS)}.")
    if kind == "aggregator":
        return MatrixStep
    if kind == "gradient" or num_micro_batches > 1 or nan_policy == "skip_task":
        return PerTaskStep
    return DirectStep


class TaskByTaskStep:
    """Runs one optimizer step's forward/backward passes for all tasks and leaves the combined gradient in `.grad`.

    Args:
        weighting: the strategy that turns the task losses (or gradients) into factors.
        task_names: the tasks, in the order every rank processes them.
        accelerator: the Trainer's accelerator (backward with its grad scaler, `no_sync`).
        nan_policy: `raise`, `skip_step` or `skip_task` (see `hf_mtl.engine.faults`).
        locate_rows: `(step, micro_batch, task_index) -> training-set rows` of this process's micro-batch,
            used to name the rows of a faulty batch; None names the micro-batch only.
        compute_loss: `(model, batch) -> loss`, every task loss the engine computes (the fault re-runs
            too); None is `model(**batch).loss`.
    """

    def __init__(
        self,
        weighting: Weighting,
        task_names: Sequence[str],
        accelerator: Any,
        nan_policy: str = "raise",
        locate_rows: Callable[[int, int, int], list[int] | None] | None = None,
        compute_loss: ComputeLoss | None = None,
    ) -> None:
        self.faults = FaultPolicy(nan_policy, task_names, locate_rows)
        self.weighting = weighting
        self.task_names = list(task_names)
        self.accelerator = accelerator
        self.nan_policy = nan_policy
        self.locate_rows = locate_rows
        self.compute_loss = compute_loss or model_loss
        passes = TaskPasses(accelerator, self.compute_loss)
        # The shape is decided here, once: for a single micro-batch and for accumulated ones.
        self._single, self._accumulated = (
            choose_shape(weighting.kind, n, nan_policy)(weighting, self.task_names, passes, self.faults) for n in (1, 2))

    # ---- fault counters (checkpointed with the weighting state) ----------------------------------

    @property
    def skipped_steps(self) -> int:
        return self.faults.skipped_steps

    @property
    def skipped_tasks(self) -> dict[str, int]:
        return self.faults.skipped_tasks

    def state_dict(self) -> dict[str, Any]:
        return self.faults.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.faults.load_state_dict(state)

    def skip_counts(self) -> dict[str, int]:
        """The non-zero skip counters as training-log entries: `nan_skipped_steps`, `nan_skipped_<task>`."""
        return self.faults.skip_counts()

    # ---- the step ---------------------------------------------------------------------------------

    def shape(self, num_micro_batches: int) -> StepShape:
        return self._accumulated if num_micro_batches > 1 else self._single

    def __call__(self, model: torch.nn.Module, micro_batches: Sequence[dict[str, dict[str, Any]]], step: int) -> StepResult:
        """One optimizer step's gradients for optimizer step number `step` (1-based, as the Trainer logs it).
        A step may hold only some tasks (one task per step) where the strategy's factors are per task
        (`Weighting.one_task_steps`); the others have NaN losses and weights in the result."""
        if not self.weighting.one_task_steps and any(t not in mb for mb in micro_batches for t in self.task_names):
            missing = sorted({t for mb in micro_batches for t in self.task_names if t not in mb})
            raise ValueError(
                f"step {step}: no rows of task(s) {missing}, but weighting {self.weighting.name!r} needs every task in "
                "every step (one_task_steps is False); sample every task in every step (--task_sampling all_per_step).")
        try:
            return self.shape(len(micro_batches)).run(model, micro_batches, step)
        except SkipStep as skip:
            for p in [*model.parameters(), *self.weighting.parameters()]:
                p.grad = None
            self.faults.record_skipped_step(step, skip)
            losses = skip.losses + [math.nan] * (len(self.task_names) - len(skip.losses))
            return StepResult(losses=losses, weights=[0.0] * len(self.task_names), skipped_step=True)
