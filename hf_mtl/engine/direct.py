"""The direct step: one micro-batch per optimizer step, a loss-level strategy, no task to drop.

Task i's factor h_i is known right after its forward pass (from its loss alone), so its backward is
scaled by it and adds h_i·∇L_i straight into `.grad`: no buffer beyond the gradients themselves, and
the backward passes stay rank-local until one reduction of the finished sum.
"""

from __future__ import annotations

import math

import torch

from .accumulate import GradientSum
from .shape import StepShape
from .state import StepResult, StepState


class DirectStep(StepShape):
    """Every task's scaled backward adds into `.grad`; the sum is reduced across ranks once, at the end."""

    def task(self, model: torch.nn.Module, state: StepState, total: GradientSum, i: int, task: str) -> None:
        loss, parts = self.forward(model, state, i, task, backward=False)
        self.check_loss(state, total, i, task, parts)  # a task cannot be dropped here: a fault raises
        log_factor = self.weighting.task_log_factor(i, state.checked[i])
        multiplier = total.admit_in_grad(log_factor)
        probe = state.params.probe
        before = probe.grad.clone() if probe is not None and probe.grad is not None else None
        self.passes.backward(loss * (state.shares[0][i] * multiplier))
        state.log_factors.append(log_factor)
        if probe is not None:
            # The task's own gradient on the probed layer is what this backward added; undo its multiplier.
            delta = probe.grad - before if before is not None else probe.grad.clone()
            state.probe_norms.append(self.probe_norm(delta, state) / multiplier if multiplier > 0 else math.nan)

    def finish(self, model: torch.nn.Module, state: StepState, total: GradientSum) -> StepResult:
        return self.finish_loss_level(model, state, total)
