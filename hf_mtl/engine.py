"""The task-by-task training step: forward and backward one task at a time, combine the gradients.

Only one task's activations are alive at a time. A strategy's gradient is Σ_i c·h_i·∇L_i (see
`hf_mtl.weighting.base`), so each task's backward can be scaled by its own factor h_i the moment its
loss is known, and the common factor c is applied to the summed gradient at the end. Factors come as
logarithms; the running sum keeps a reference log-scale and rescales what it holds whenever a larger
factor arrives (a streaming log-sum-exp), so factors like L^199 never overflow.

Two ways to hold the sum:

* direct (one micro-batch per optimizer step, a loss-level strategy): task i's backward adds
  h_i·∇L_i straight into `.grad`. No buffer beyond the gradients themselves.
* per-task (gradient accumulation, or a strategy that needs task i's own gradient): task i's
  micro-batch gradients are summed in `.grad` first (tasks outer, micro-batches inner), then scaled
  and moved into a running sum; the previous sum is held aside meanwhile, which costs one extra
  parameter-sized buffer. With k micro-batches this gives exactly the update of one k-times larger
  batch, because h_i is computed from the loss of the whole accumulated batch.

Distributed data parallel: every rank runs the same tasks in the same order (`hf_mtl.sampling`). Losses
are averaged across ranks before any factor is computed, so all ranks use identical weights. The
backward passes run under `no_sync` and the gradients are summed across ranks explicitly (each
micro-batch's loss is pre-scaled by its share of the global row count): once per step for loss-level
strategies, once per task when a strategy needs the task's global gradient. Syncing through DDP's
own hooks instead would reduce every task's backward and, with the last task's backward alone
synced, could leave another task's head with a rank-local gradient (DESIGN §3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .weighting import Weighting


@dataclass
class StepResult:
    """What one optimizer step measured, averaged across ranks (identical on every rank)."""

    losses: list[float]
    weights: list[float]

    @property
    def mean_loss(self) -> float:
        return sum(self.losses) / len(self.losses)


class _RunningSum:
    """Σ_i exp(a_i)·g_i held as exp(ref)·S, with S rescaled whenever a larger a_i arrives."""

    def __init__(self) -> None:
        self.ref: float | None = None

    def admit(self, log_factor: float, held: list[torch.Tensor]) -> float:
        """Register a new term; rescale the `held` sum if needed; return the new term's multiplier."""
        if log_factor == -math.inf:
            return 0.0
        if self.ref is None or log_factor > self.ref:
            if self.ref is not None and held:
                torch._foreach_mul_(held, math.exp(self.ref - log_factor))
            self.ref = log_factor
            return 1.0
        return math.exp(log_factor - self.ref)


class TaskByTaskStep:
    """Runs one optimizer step's forward/backward passes for all tasks and leaves the combined gradient in `.grad`.

    Args:
        weighting: the strategy that turns the task losses into factors.
        task_names: the tasks, in the order every rank processes them.
        accelerator: the Trainer's accelerator (backward with its grad scaler, `no_sync`, autocast).
    """

    def __init__(self, weighting: Weighting, task_names: Sequence[str], accelerator: Any) -> None:
        self.weighting = weighting
        self.task_names = list(task_names)
        self.accelerator = accelerator

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    def _all_reduce_sum(self, tensors: list[torch.Tensor]) -> None:
        if self.distributed:
            handles = [dist.all_reduce(t, op=dist.ReduceOp.SUM, async_op=True) for t in tensors]
            for handle in handles:
                handle.wait()

    def __call__(self, model: torch.nn.Module, micro_batches: Sequence[dict[str, dict[str, Any]]], step: int) -> StepResult:
        device = next(model.parameters()).device
        params = [p for p in model.parameters() if p.requires_grad]
        per_task = len(micro_batches) > 1 or self.weighting.level == "gradient"

        # Rows of every task over all micro-batches and ranks: each micro-batch loss is weighted by its share.
        counts = torch.tensor(
            [[len(mb[t]["labels"]) for t in self.task_names] for mb in micro_batches], dtype=torch.float64
        )
        totals = counts.sum(0).to(device)
        self._all_reduce_sum([totals])
        totals = totals.cpu()

        running = _RunningSum()
        held: list[torch.Tensor | None] = [None] * len(params)
        losses: list[float] = []  # as measured, for logging
        checked_losses: list[float] = []  # as the factors see them (clamped)
        with self.accelerator.no_sync(model):
            for i, task in enumerate(self.task_names):
                if per_task:
                    held = [p.grad for p in params]
                    for p in params:
                        p.grad = None
                loss_sum = torch.zeros((), dtype=torch.float64, device=device)
                for m, mb in enumerate(micro_batches):
                    share = float(counts[m, i] / totals[i])
                    loss = model(**mb[task]).loss
                    loss_sum += loss.detach().double() * float(counts[m, i])
                    if per_task:
                        self.accelerator.backward(loss * share)
                self._all_reduce_sum([loss_sum])
                value = float(loss_sum / totals[i])
                try:
                    checked = self.weighting.check_loss(i, value)
                except FloatingPointError as err:
                    raise FloatingPointError(f"step {step}: {err}") from None
                losses.append(value)
                checked_losses.append(checked)
                log_factor = self.weighting.task_log_factor(i, checked)
                if per_task:
                    task_grads = [p.grad for p in params]
                    multiplier = running.admit(log_factor, [h for h in held if h is not None])
                    for j, (h, g) in enumerate(zip(held, task_grads)):
                        if g is None:
                            continue
                        if h is None:
                            held[j] = g.mul_(multiplier)
                        else:
                            h.add_(g, alpha=multiplier)
                    for p, h in zip(params, held):
                        p.grad = h
                else:
                    grads = [p.grad for p in params if p.grad is not None]
                    multiplier = running.admit(log_factor, grads)
                    self.accelerator.backward(loss * (share * multiplier))

        common = self.weighting.common_log_factor(checked_losses)
        grads = [p.grad for p in params if p.grad is not None]
        if running.ref is not None:
            final = running.ref + common
            if final != 0.0:
                torch._foreach_mul_(grads, math.exp(final) if final > -math.inf else 0.0)
        self._all_reduce_sum(grads)
        weights = [math.exp(w) for w in self.weighting.log_weights(checked_losses)]
        return StepResult(losses=losses, weights=weights)
