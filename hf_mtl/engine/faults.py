"""Numerical faults (`nan_policy`): a non-finite task loss, or a finite loss whose gradient is not finite.

The losses are checked as they arrive (they are computed anyway); the gradient is checked once per step
on the combined gradient (one read of the gradients, after the cross-rank reduction, so every rank
takes the same decision), and per task where per-task gradients exist anyway. With an fp16 grad scaler
non-finite gradients are the scaler's business (it skips the step and lowers its scale).

* `raise` (default): FloatingPointError naming the step, the task and the batch (micro-batch and
  training-set rows). For a non-finite combined gradient the tasks are re-run one by one to name the
  one(s) whose gradient is not finite.
* `skip_step`: the step makes no update: every gradient (the model's and the strategy's own
  parameters') is set to None, so the optimizer skips every parameter (AdamW's step count and moments
  do not move). The Trainer still counts the step and advances the learning-rate schedule.
* `skip_task`: the task contributes nothing this step: its gradient is dropped, its weight is 0 and its
  loss is left out of the logged means. The other tasks' factors come from the strategy as usual;
  where a strategy needs all K losses (common factors such as `power`'s, `observe`) or K gradient norms,
  the skipped task's value is replaced by the mean of the finite tasks' values. To tell a task's
  non-finite gradient apart, every task's gradient is summed on its own (the per-task path: one extra
  parameter-sized buffer). Aggregators (all K gradients at once) cannot drop a row: for them a
  skipped task skips the step. So does a step in which every task is skipped.

Skips are counted (`skipped_steps`, `skipped_tasks`, checkpointed with the weighting state) and
logged as a warning naming the step and the task.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..distributed import all_reduce_sum, global_norm, is_distributed, process_index
from .state import StepState, TaskPasses

if TYPE_CHECKING:
    from ..weighting import Weighting

logger = logging.getLogger(__name__)

#: What a non-finite loss or gradient does (see the module docstring).
NAN_POLICIES = ("raise", "skip_step", "skip_task")


def check_nan_policy(policy: str) -> None:
    """The one check of a `nan_policy` value (the training arguments and the engine both call it)."""
    if policy not in NAN_POLICIES:
        raise ValueError(f"--nan_policy {policy!r} is not one of: {', '.join(NAN_POLICIES)}.")


class SkipStep(Exception):
    """Abandons the current step (nan_policy skip_step, or skip_task where the task cannot be left out)."""

    def __init__(self, reason: str, losses: list[float]) -> None:
        super().__init__(reason)
        self.losses = losses


def finite_everywhere(value: float, device: torch.device) -> bool:
    """Is `value` finite on every rank (one scalar all-reduce: NaN/inf anywhere spreads to the sum)."""
    flag = torch.tensor([value], dtype=torch.float64, device=device)
    all_reduce_sum([flag])
    return math.isfinite(float(flag.item()))


class FaultPolicy:
    """What `nan_policy` does with a fault, the skip counters, and the messages naming where a fault is.

    The `*_fault` methods raise FloatingPointError (`raise`) or `SkipStep` (`skip_step`, or a fault that
    cannot be pinned on one task), or return the reason for leaving the task out (`skip_task`): the step
    shape then drops it (or, where it cannot, skips the step).
    """

    def __init__(self, policy: str, task_names: Sequence[str],
                 locate_rows: Callable[[int, int, int], list[int] | None] | None = None) -> None:
        check_nan_policy(policy)
        self.policy = policy
        self.task_names = list(task_names)
        self.locate_rows = locate_rows
        self.skipped_steps = 0
        self.skipped_tasks = dict.fromkeys(self.task_names, 0)

    # ---- counters (checkpointed with the weighting state) ---------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": self.skipped_steps, "skipped_tasks": dict(self.skipped_tasks)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.skipped_steps = int(state.get("skipped_steps", 0))
        saved = state.get("skipped_tasks") or {}
        self.skipped_tasks = {name: int(saved.get(name, 0)) for name in self.task_names}

    def skip_counts(self) -> dict[str, int]:
        """The non-zero skip counters as training-log entries: `nan_skipped_steps`, `nan_skipped_<task>`."""
        counts = {"nan_skipped_steps": self.skipped_steps,
                  **{f"nan_skipped_{name}": n for name, n in self.skipped_tasks.items()}}
        return {key: n for key, n in counts.items() if n}

    def record_dropped_task(self, step: int, task: str, reason: str) -> None:
        self.skipped_tasks[task] += 1
        logger.warning("step %d: task %r left out of the step (--nan_policy skip_task): %s", step, task, reason)

    def record_skipped_step(self, step: int, reason: SkipStep) -> None:
        self.skipped_steps += 1
        logger.warning("step %d skipped (--nan_policy %s): %s", step, self.policy, reason)

    # ---- where a fault is -------------------------------------------------------------------------

    def where(self, step: int, task: int, micro_batches: Sequence[int], total: int) -> str:
        """Names this process's micro-batch(es) of `task` at `step`, with their training rows when known."""
        parts = []
        for m in micro_batches:
            rows = self.locate_rows(step, m, task) if self.locate_rows is not None else None
            shown = "" if rows is None else f", training rows {rows[:8]}{' ...' if len(rows) > 8 else ''}"
            parts.append(f"micro-batch {m + 1} of {total}{shown}")
        rank = f" on rank {process_index()}" if is_distributed() else ""
        return "; ".join(parts) + rank

    # ---- faults -----------------------------------------------------------------------------------

    def loss_fault(self, state: StepState, i: int, parts: Sequence[torch.Tensor], weighting: Weighting) -> str | None:
        """Task i's rank-averaged loss (`state.losses[i]`) is not finite. `parts`: this process's
        micro-batch losses, to name the faulty one. Returns the reason to drop the task (skip_task), or
        None when the strategy's own check lets the value through (raise)."""
        value, k = state.losses[i], state.num_micro_batches
        bad = [m for m, part in enumerate(parts) if not torch.isfinite(part)][:1]
        where = self.where(state.step, i, bad, k) if bad else f"a micro-batch of another rank (of {k} each)"
        if self.policy == "raise":
            try:
                weighting.check_loss(i, value)
            except FloatingPointError as err:
                raise FloatingPointError(
                    f"step {state.step}: {err} The batch: {where}. --nan_policy skip_step or skip_task skips such "
                    "steps or tasks instead of stopping.") from None
            return None
        reason = f"non-finite loss {value} ({where})"
        if self.policy == "skip_step":
            raise SkipStep(f"task {self.task_names[i]!r}: {reason}", state.losses)
        return reason

    def gradient_fault(self, step: int, tasks: Sequence[int], losses: Sequence[float], k: int, can_drop: bool) -> str:
        """A finite loss with a non-finite gradient: raise, skip the step, or (skip_task, one task that
        `can_drop`) return the reason to drop it."""
        names = [self.task_names[i] for i in tasks]
        where = "; ".join(f"{self.task_names[i]!r}: {self.where(step, i, range(k), k)}" for i in tasks)
        reason = (f"task(s) {names} have finite losses "
                  f"({', '.join(f'{losses[i]:.6g}' for i in tasks)}) but non-finite gradients ({where})")
        if self.policy == "raise":
            raise FloatingPointError(
                f"step {step}: {reason}. Lower the learning rate or check those tasks' data; --nan_policy skip_step "
                "or skip_task skips such steps or tasks instead of stopping.")
        if self.policy == "skip_task" and can_drop:
            return "non-finite gradient"
        raise SkipStep(reason, list(losses))

    def check_combined_gradient(self, model: torch.nn.Module, state: StepState, passes: TaskPasses,
                                weighting_name: str) -> float:
        """One read of the (already reduced, so rank-identical) gradients; on a non-finite norm, find the
        task(s) whose gradient is not finite by re-running them one at a time, then apply the policy.
        Returns the finite norm, which the trainer reuses for clipping instead of reading the gradients again."""
        norm = global_norm(state.params.all_grads())
        if math.isfinite(norm):
            return norm
        bad = self.find_faulty_tasks(model, state, passes) if self.policy == "raise" else []
        if not bad:  # every task finite on its own: the weighted sum overflowed
            if self.policy == "raise":
                raise FloatingPointError(
                    f"step {state.step}: the combined gradient is not finite although every task's loss and gradient "
                    f"is (losses {[f'{v:.6g}' for v in state.losses]}): their combination by {weighting_name!r} "
                    "overflowed. Lower the learning rate or the loss scales; --nan_policy skip_step skips such steps.")
            raise SkipStep("the combined gradient is not finite", list(state.losses))
        self.gradient_fault(state.step, bad, state.losses, state.num_micro_batches, can_drop=False)

    def find_faulty_tasks(self, model: torch.nn.Module, state: StepState, passes: TaskPasses) -> list[int]:
        """Re-run every task on its own (all its micro-batches, unweighted): the tasks whose gradient is not
        finite on some rank. Leaves every gradient None."""
        params = state.params
        bad = []
        with passes.sync_context(model):
            for i, task in enumerate(self.task_names):
                if i in state.absent:
                    continue
                model.zero_grad(set_to_none=True)
                for mb in state.micro_batches:
                    passes.backward(passes.loss(model, mb[task]))
                if not finite_everywhere(global_norm(params.all_grads()), params.device):
                    bad.append(i)
        model.zero_grad(set_to_none=True)
        return bad
