"""The K × P matrix step, for aggregators (`kind == "aggregator"`): all K task gradients at once.

Each task's gradient over the shared parameters is reduced across ranks and set aside as one row;
the heads stay outside the matrix (each gets its own task's raw gradient). After the last task the
rows are stacked into a K × P float32 matrix (the only K-sized buffer; no computation graph is
retained), the strategy's `aggregate` turns it into the update, which is written into `.grad`.
A task cannot be left out of an aggregate: under `skip_task` a faulty task skips the step. FSDP2
shards the gradients across ranks, so whole rows do not exist there: refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..distributed import (
    all_reduce_sum,
    broadcast_from_main,
    global_norm,
    is_distributed,
)
from .accumulate import GradientSum
from .shape import StepShape
from .state import StepResult, StepState


class MatrixStep(StepShape):
    """Task gradients as rows of a K × P matrix, combined by `weighting.aggregate`."""

    heads_apart = True

    def run(self, model: torch.nn.Module, micro_batches: Sequence[Mapping[str, Mapping[str, Any]]], step: int) -> StepResult:
        if self.passes.fsdp2:
            raise NotImplementedError(
                f"--weighting {self.weighting.name} stacks whole task gradients, which FSDP2 shards across ranks: "
                "train it with DDP (torchrun without --fsdp), or use a per-task strategy such as grad_normalize."
            )
        return super().run(model, micro_batches, step)

    def task(self, model: torch.nn.Module, state: StepState, total: GradientSum, i: int, task: str) -> None:
        total.hold()
        _, parts = self.forward(model, state, i, task, backward=True)
        self.check_loss(state, total, i, task, parts)  # a task cannot be dropped here: a fault skips the step
        params = state.params
        if params.probe is not None:
            state.probe_norms.append(self.probe_norm(params.probe.grad.clone(), state))
        # The task's global gradient: reduce it now, with its own head.
        task_grads = params.combined_grads() + params.head_grads(task)
        all_reduce_sum(task_grads)
        if not state.scaled and not math.isfinite(global_norm(task_grads)):
            reason = self.faults.gradient_fault(state.step, [i], state.losses, state.num_micro_batches, can_drop=True)
            self.drop(state, total, i, task, reason)
        state.rows.append([p.grad for p in params.combined])
        total.restore()

    def finish(self, model: torch.nn.Module, state: StepState, total: GradientSum) -> StepResult:
        weights, cosines = self.aggregate(state)
        grad_norm = self.faults.check_combined_gradient(model, state, self.passes, self.weighting.name)
        return StepResult(losses=state.losses, weights=weights, cosines=cosines,
                          grad_norm=None if state.scaled else grad_norm)

    def aggregate(self, state: StepState) -> tuple[list[float], list[list[float]]]:
        """Stack the K task gradients of the shared parameters (K × P), let the strategy combine them,
        write the result into `.grad` (added to the heads' raw gradients already there)."""
        params, rows, scale = state.params.combined, state.rows, state.loss_scale
        sizes = [p.numel() for p in params]
        matrix = torch.zeros(len(rows), sum(sizes), dtype=torch.float32, device=params[0].device)
        for i, row in enumerate(rows):
            for g, chunk in zip(row, matrix[i].split(sizes)):
                if g is not None:
                    chunk.copy_(g.reshape(-1))
            rows[i] = []  # free the task's gradient tensors as soon as they are copied
        matrix /= scale
        update = self.weighting.aggregate(matrix, state.checked) * scale
        for p, chunk in zip(params, update.split(sizes)):
            p.grad = chunk.view_as(p).to(p.dtype) if p.grad is None else p.grad.add_(chunk.view_as(p))
        gram = (matrix @ matrix.T).double()
        norms = gram.diagonal().sqrt().clamp_min(1e-30)
        cosines = gram / norms[:, None] / norms[None, :]
        # Effective weights: the coefficients of the task gradients in the update (least squares).
        coefficients = torch.linalg.lstsq(gram, (matrix @ update.float()).double()[:, None]).solution[:, 0]
        if is_distributed():
            # LAPACK's least squares can differ in the last bits between processes (alignment-dependent
            # kernels) even on identical inputs: log rank 0's numbers everywhere (K + K² values).
            logged = broadcast_from_main(torch.cat([coefficients, cosines.flatten()]))
            coefficients, cosines = logged[: len(rows)], logged[len(rows) :].view_as(cosines)
        return coefficients.tolist(), cosines.tolist()
