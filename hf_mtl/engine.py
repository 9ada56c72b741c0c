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

from .weighting import AggregatorWeighting, GradientWeighting, Weighting


@dataclass
class StepResult:
    """What one optimizer step measured, averaged across ranks (identical on every rank).

    `weights` are the effective weights dF/dL_i; `grad_norms` the global norms ‖g_i‖ of the task
    gradients (gradient-level strategies only, unscaled by any fp16 loss scale); `cosines` the K × K
    cosine similarities between the task gradients over the shared parameters (strategies that see
    all task gradients at once), the "conflict" between tasks.
    """

    losses: list[float]
    weights: list[float]
    grad_norms: list[float] | None = None
    cosines: list[list[float]] | None = None

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

    def final_multiplier(self, common_log_factor: float) -> float:
        if self.ref is None:
            return 1.0
        total = self.ref + common_log_factor
        return math.exp(total) if total > -math.inf else 0.0


class TaskByTaskStep:
    """Runs one optimizer step's forward/backward passes for all tasks and leaves the combined gradient in `.grad`.

    Args:
        weighting: the strategy that turns the task losses (or gradients) into factors.
        task_names: the tasks, in the order every rank processes them.
        accelerator: the Trainer's accelerator (backward with its grad scaler, `no_sync`).
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

    def _loss_scale(self) -> float:
        scaler = getattr(self.accelerator, "scaler", None)
        return float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0

    def __call__(self, model: torch.nn.Module, micro_batches: Sequence[dict[str, dict[str, Any]]], step: int) -> StepResult:
        weighting = self.weighting
        mode = "matrix" if isinstance(weighting, AggregatorWeighting) else (
            "task" if isinstance(weighting, GradientWeighting) or len(micro_batches) > 1 else "direct")
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        device = named[0][1].device
        # Parameters whose gradients are combined across tasks. Heads stay outside when a strategy works
        # on the shared encoder only (each head then gets its own task's raw gradient).
        heads_apart = mode == "matrix" or getattr(weighting, "norm_scope", "all") == "shared"
        combined = [p for n, p in named if not (heads_apart and _is_head(n))]
        own_head = {t: [p for n, p in named if heads_apart and _is_head(n, t)] for t in self.task_names}
        # GradNorm-like strategies watch each task's gradient norm on the last shared weight matrix.
        probe = None
        if weighting.probes_last_shared_layer:
            probe = next(p for n, p in reversed(named) if not _is_head(n) and p.dim() >= 2)
        probe_norms: list[float] = []

        # Rows of every task over all micro-batches and ranks: each micro-batch loss is weighted by its share.
        counts = torch.tensor(
            [[len(mb[t]["labels"]) for t in self.task_names] for mb in micro_batches], dtype=torch.float64
        )
        totals = counts.sum(0).to(device)
        self._all_reduce_sum([totals])
        shares = (counts / totals.cpu()).tolist()

        running = _RunningSum()
        held: list[torch.Tensor | None] = [None] * len(combined)
        rows: list[list[torch.Tensor | None]] = []
        losses, checked, log_factors, norms = [], [], [], []
        with self.accelerator.no_sync(model):
            for i, task in enumerate(self.task_names):
                if mode != "direct":
                    held = [p.grad for p in combined]
                    for p in combined:
                        p.grad = None
                loss_sum = torch.zeros((), dtype=torch.float64, device=device)
                for m, mb in enumerate(micro_batches):
                    loss = model(**mb[task]).loss
                    loss_sum += loss.detach().double() * float(counts[m, i])
                    if mode != "direct":
                        self.accelerator.backward(loss * shares[m][i])
                self._all_reduce_sum([loss_sum])
                losses.append(float(loss_sum / totals[i].cpu()))
                try:
                    checked.append(weighting.check_loss(i, losses[-1]))
                except FloatingPointError as err:
                    raise FloatingPointError(f"step {step}: {err}") from None

                if mode == "direct":
                    log_factor = weighting.task_log_factor(i, checked[-1])
                    multiplier = running.admit(log_factor, [p.grad for p in combined if p.grad is not None])
                    before = probe.grad.clone() if probe is not None and probe.grad is not None else None
                    self.accelerator.backward(loss * (shares[0][i] * multiplier))
                    log_factors.append(log_factor)
                    if probe is not None:
                        delta = probe.grad - before if before is not None else probe.grad.clone()
                        probe_norms.append(self._probe_norm(delta) / multiplier if multiplier > 0 else math.nan)
                    continue

                if probe is not None:
                    probe_norms.append(self._probe_norm(probe.grad.clone()))
                fresh = [p.grad for p in combined if p.grad is not None]
                if mode == "matrix" or isinstance(weighting, GradientWeighting):
                    # The task's global gradient: reduce it now (with its own head when heads stay apart).
                    self._all_reduce_sum(fresh + [p.grad for p in own_head[task] if p.grad is not None])
                if mode == "matrix":
                    rows.append([p.grad for p in combined])
                    for p, h in zip(combined, held):
                        p.grad = h
                    continue
                if isinstance(weighting, GradientWeighting):
                    norms.append(_global_norm(fresh) / self._loss_scale())
                    log_factor = weighting.gradient_log_factor(i, norms[-1])
                    if not math.isfinite(norms[-1]) and self._loss_scale() != 1.0:
                        # fp16 overflow: let the inf reach the grad scaler, which skips the step and lowers its scale.
                        log_factor = running.ref if running.ref is not None else 0.0
                else:
                    log_factor = weighting.task_log_factor(i, checked[-1])
                log_factors.append(log_factor)
                multiplier = running.admit(log_factor, [h for h in held if h is not None])
                for j, (h, p) in enumerate(zip(held, combined)):
                    if p.grad is None:
                        continue
                    if h is None:
                        held[j] = p.grad.mul_(multiplier)
                    else:
                        h.add_(p.grad, alpha=multiplier)
                for p, h in zip(combined, held):
                    p.grad = h

        weighting.observe(checked, probe_norms if probe is not None else None)
        if mode == "matrix":
            weights, cosines = self._aggregate(combined, rows, checked)
            return StepResult(losses=losses, weights=weights, cosines=cosines)
        if isinstance(weighting, GradientWeighting):
            common = weighting.gradient_common_log_factor(norms, checked)
        else:
            common = weighting.common_log_factor(checked)
            # Loss-level: the rank-local sums are reduced once (the factors are the same on every rank).
            self._all_reduce_sum([p.grad for _, p in named if p.grad is not None])
        final = running.final_multiplier(common)
        if final != 1.0:
            torch._foreach_mul_([p.grad for p in combined if p.grad is not None], final)
        weights = [math.exp(f + common) if f > -math.inf else 0.0 for f in log_factors]
        return StepResult(losses=losses, weights=weights, grad_norms=norms or None)

    def _probe_norm(self, local_gradient: torch.Tensor) -> float:
        """Global norm of one task's gradient on the probed layer (summed across ranks first)."""
        self._all_reduce_sum([local_gradient])
        return float(local_gradient.double().norm()) / self._loss_scale()

    def _aggregate(
        self, params: list[torch.Tensor], rows: list[list[torch.Tensor | None]], losses: list[float]
    ) -> tuple[list[float], list[list[float]]]:
        """Stack the K task gradients of the shared parameters (K × P), let the strategy combine them,
        write the result into `.grad` (added to the heads' raw gradients already there)."""
        sizes = [p.numel() for p in params]
        matrix = torch.zeros(len(rows), sum(sizes), dtype=torch.float32, device=params[0].device)
        for i, row in enumerate(rows):
            for g, chunk, p in zip(row, matrix[i].split(sizes), params):
                if g is not None:
                    chunk.copy_(g.reshape(-1))
            rows[i] = []  # free the task's gradient tensors as soon as they are copied
        matrix /= self._loss_scale()
        update = self.weighting.aggregate(matrix, losses) * self._loss_scale()
        for p, chunk in zip(params, update.split(sizes)):
            p.grad = chunk.view_as(p).to(p.dtype) if p.grad is None else p.grad.add_(chunk.view_as(p))
        gram = (matrix @ matrix.T).double()
        norms = gram.diagonal().sqrt().clamp_min(1e-30)
        cosines = (gram / norms[:, None] / norms[None, :]).tolist()
        # Effective weights: the coefficients of the task gradients in the update (least squares).
        coefficients = torch.linalg.lstsq(gram, (matrix @ update.float()).double()[:, None]).solution[:, 0]
        return coefficients.tolist(), cosines


def _is_head(name: str, task: str | None = None) -> bool:
    """Is parameter `name` in a task head (of `task`, if given)? Names may carry a wrapper prefix."""
    prefix = "heads." if task is None else f"heads.{task}."
    return name.startswith(prefix) or f".{prefix}" in name


def _global_norm(grads: list[torch.Tensor]) -> float:
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)).double(), 2.0))
