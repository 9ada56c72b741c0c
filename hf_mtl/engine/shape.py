"""What every step shape shares: the task loop, each task's loss (measured, averaged across ranks, checked),
the probed layer's norm, and the end of a step whose gradient is a weighted sum in `.grad`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..distributed import all_reduce_sum, global_norm
from .accumulate import GradientSum
from .faults import FaultPolicy, SkipStep
from .state import StepParameters, StepResult, StepState, TaskPasses

if TYPE_CHECKING:
    from ..weighting import Weighting


class StepShape:
    """One way of running an optimizer step's passes (direct, per task, K × P matrix; see `hf_mtl.engine`).

    `run` builds the step's parameters, state and gradient sum, calls `task` for every task in order
    (under `no_sync`, see `TaskPasses.sync_context`), lets the strategy `observe` the step and calls
    `finish`. A subclass implements `task` and `finish`, and `drop` if it can leave a task out.
    """

    #: Task heads stay outside the combined parameters (each head gets its own task's raw gradient).
    heads_apart: bool = False

    def __init__(self, weighting: Weighting, task_names: Sequence[str], passes: TaskPasses, faults: FaultPolicy) -> None:
        self.weighting = weighting
        self.task_names = list(task_names)
        self.passes = passes
        self.faults = faults

    def run(self, model: torch.nn.Module, micro_batches: Sequence[Mapping[str, Mapping[str, Any]]], step: int) -> StepResult:
        params = StepParameters.of(model, self.task_names, self.heads_apart, self.weighting.probes_last_shared_layer)
        state = StepState.begin(step, micro_batches, self.task_names, params, self.passes.loss_scale())
        total = GradientSum(params.combined)
        with self.passes.sync_context(model):
            for i, task in enumerate(self.task_names):
                if i in state.absent:
                    state.losses.append(math.nan)
                    state.placeholders(self.weighting.kind == "gradient")
                    continue
                self.task(model, state, total, i, task)
        if len(state.dropped) + len(state.absent) == len(self.task_names):
            raise SkipStep("every task was left out", state.losses)
        state.fill_dropped()
        self.weighting.observe(state.checked, state.probe_norms if params.probe is not None else None)
        return self.finish(model, state, total)

    def task(self, model: torch.nn.Module, state: StepState, total: GradientSum, i: int, task: str) -> None:
        raise NotImplementedError

    def finish(self, model: torch.nn.Module, state: StepState, total: GradientSum) -> StepResult:
        raise NotImplementedError

    def drop(self, state: StepState, total: GradientSum, i: int, task: str, reason: str) -> None:
        """Leave task i out of the step (nan_policy skip_task). This shape cannot: the step is skipped."""
        raise SkipStep(f"task {task!r}: {reason}", state.losses)

    # ---- shared pieces ----------------------------------------------------------------------------

    def forward(self, model: torch.nn.Module, state: StepState, i: int, task: str,
                backward: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Task i's loss on every micro-batch (`compute_loss`); appends its mean over all rows of all ranks to
        `state.losses`. With `backward`, each micro-batch's backward runs at once, its loss pre-scaled by its
        share of the global rows (`state.shares`). Returns the last micro-batch's loss and the detached losses."""
        loss_sum = torch.zeros((), dtype=torch.float64, device=state.params.device)
        parts = []
        loss = None
        for m, mb in enumerate(state.micro_batches):
            loss = self.passes.loss(model, mb[task])
            parts.append(loss.detach())
            loss_sum += loss.detach().double() * state.counts[m][i]
            if backward:
                self.passes.backward(loss * state.shares[m][i])
        all_reduce_sum([loss_sum])
        state.losses.append(float(loss_sum / state.totals[i]))
        return loss, parts

    def check_loss(self, state: StepState, total: GradientSum, i: int, task: str, parts: list[torch.Tensor]) -> bool:
        """Task i's loss through the fault policy and the strategy's `check_loss` (into `state.checked`);
        False when the task was dropped."""
        value = state.losses[i]
        if not math.isfinite(value):
            reason = self.faults.loss_fault(state, i, parts, self.weighting)
            if reason is not None:
                self.drop(state, total, i, task, reason)
                return False
        state.checked.append(self.weighting.check_loss(i, value))
        return True

    def probe_norm(self, local_gradient: torch.Tensor, state: StepState) -> float:
        """Global norm of one task's gradient on the probed layer (summed across ranks first)."""
        all_reduce_sum([local_gradient])
        return global_norm([local_gradient]) / state.loss_scale

    def finish_loss_level(self, model: torch.nn.Module, state: StepState, total: GradientSum) -> StepResult:
        """Loss-level factors: the rank-local sums are reduced once (the factors are the same on every rank).
        A step with absent tasks (one task per step) takes no common factor: its update is h_i(L_i)·∇L_i."""
        common = 0.0 if state.absent else self.weighting.common_log_factor(state.checked)
        all_reduce_sum(state.params.all_grads())
        return self.finish_sum(model, state, total, common)

    def finish_sum(self, model: torch.nn.Module, state: StepState, total: GradientSum, common: float) -> StepResult:
        """Apply the common factor, check the combined gradient once, report the effective weights."""
        total.finish(common)
        grad_norm = None
        if not state.scaled:
            grad_norm = self.faults.check_combined_gradient(model, state, self.passes, self.weighting.name)
        weights = [math.nan if i in state.absent else math.exp(f + common) if f > -math.inf else 0.0
                   for i, f in enumerate(state.log_factors)]
        norms = state.norms
        if state.dropped:
            norms = [math.nan if i in state.dropped else n for i, n in enumerate(norms)]
        return StepResult(losses=state.losses, weights=weights, grad_norms=norms or None,
                          skipped_tasks=[self.task_names[i] for i in state.dropped], grad_norm=grad_norm)
