"""The per-task step: gradient accumulation, gradient-level strategies, or `nan_policy="skip_task"`.

Task i's micro-batch gradients are summed in a clean `.grad` first (tasks outer, micro-batches inner),
while the sum of the tasks before it is held aside (`GradientSum.hold`: one extra parameter-sized
buffer); then the task's factor is known and its gradient is scaled into the sum. With k micro-batches
this gives exactly the update of one k-times larger batch, because h_i is computed from the loss of the
whole accumulated batch.

* Loss-level strategies (`kind == "loss"`): h_i from the loss, as in the direct step; the rank-local sum
  is reduced once at the end. Under `skip_task` each task's gradient is checked on its own (one scalar
  all-reduce) so that a non-finite one can be dropped.
* Gradient-level strategies (`kind == "gradient"`): the factor comes from the task's global gradient
  norm ‖g_i‖, so the task's gradient is reduced across ranks right away (with its own head when heads
  stay apart: `norm_scope == "shared"` takes the norm over the shared encoder only, and each head keeps
  its task's raw gradient).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ..distributed import all_reduce_sum, global_norm
from .accumulate import GradientSum
from .faults import FaultPolicy, finite_everywhere
from .shape import StepShape
from .state import StepResult, StepState, TaskPasses

if TYPE_CHECKING:
    from ..weighting import Weighting


class PerTaskStep(StepShape):
    """Each task's gradient on its own in `.grad`, then scaled into the held sum; a faulty task can be dropped."""

    def __init__(self, weighting: Weighting, task_names: Sequence[str], passes: TaskPasses, faults: FaultPolicy) -> None:
        super().__init__(weighting, task_names, passes, faults)
        self.gradient_level = weighting.kind == "gradient"
        self.heads_apart = self.gradient_level and weighting.norm_scope == "shared"

    def task(self, model: torch.nn.Module, state: StepState, total: GradientSum, i: int, task: str) -> None:
        total.hold()
        _, parts = self.forward(model, state, i, task, backward=True)
        if not self.check_loss(state, total, i, task, parts):
            return
        params = state.params
        if params.probe is not None:
            state.probe_norms.append(self.probe_norm(params.probe.grad.clone(), state))
        fresh = params.combined_grads()
        factor = self._gradient_factor if self.gradient_level else self._loss_factor
        log_factor = factor(state, total, i, task, fresh)
        if log_factor is None:
            return
        state.log_factors.append(log_factor)
        total.add(log_factor)

    def _gradient_factor(self, state: StepState, total: GradientSum, i: int, task: str,
                         fresh: list[torch.Tensor]) -> float | None:
        # The task's global gradient: reduce it now (with its own head when heads stay apart).
        all_reduce_sum(fresh + state.params.head_grads(task))
        norm = global_norm(fresh) / state.loss_scale
        if not math.isfinite(norm) and not state.scaled:
            reason = self.faults.gradient_fault(state.step, [i], state.losses, state.num_micro_batches, can_drop=True)
            self.drop(state, total, i, task, reason)
            return None
        state.norms.append(norm)
        log_factor = self.weighting.gradient_log_factor(i, norm)
        if not math.isfinite(norm):
            # fp16 overflow: let the inf reach the grad scaler, which skips the step and lowers its scale.
            log_factor = total.ref if total.ref is not None else 0.0
        return log_factor

    def _loss_factor(self, state: StepState, total: GradientSum, i: int, task: str,
                     fresh: list[torch.Tensor]) -> float | None:
        if self.faults.policy == "skip_task" and not state.scaled and not finite_everywhere(
                global_norm(fresh + state.params.head_grads(task)), state.params.device):
            k = state.num_micro_batches
            where = self.faults.where(state.step, i, range(k), k)
            self.drop(state, total, i, task, f"finite loss {state.losses[i]:.6g} but a non-finite gradient ({where})")
            return None
        return self.weighting.task_log_factor(i, state.checked[i])

    def drop(self, state: StepState, total: GradientSum, i: int, task: str, reason: str) -> None:
        """The task's gradient (alone in `.grad`) is discarded: the held sum goes back, its head gets nothing."""
        total.restore()
        for p in state.params.own_head[task]:
            p.grad = None
        state.drop(i, self.gradient_level)
        self.faults.record_dropped_task(state.step, task, reason)

    def finish(self, model: torch.nn.Module, state: StepState, total: GradientSum) -> StepResult:
        if not self.gradient_level:
            return self.finish_loss_level(model, state, total)
        # Gradient-level: every task's gradient was reduced already.
        common = self.weighting.gradient_common_log_factor(state.norms, state.checked)
        return self.finish_sum(model, state, total, common)
