"""The combined gradient Σ_i c·h_i·∇L_i, built in `.grad` task by task.

Factors come as logarithms; the running sum keeps a reference log-scale and rescales what it holds
whenever a larger factor arrives (a streaming log-sum-exp), so factors like L^199 never overflow.

Two ways to hold the sum:

* direct (one micro-batch per optimizer step, a loss-level strategy): task i's backward adds
  h_i·∇L_i straight into `.grad`. No buffer beyond the gradients themselves.
* per-task (gradient accumulation, or a strategy that needs task i's own gradient): task i's
  micro-batch gradients are summed in `.grad` first (tasks outer, micro-batches inner), then scaled
  and moved into a running sum; the previous sum is held aside meanwhile, which costs one extra
  parameter-sized buffer. With k micro-batches this gives exactly the update of one k-times larger
  batch, because h_i is computed from the loss of the whole accumulated batch.
"""

from __future__ import annotations

import math

import torch


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


class GradientSum:
    """The running sum Σ_i exp(a_i)·g_i over `params`, kept in their `.grad` between tasks.

    Direct: every task's backward adds into `.grad`; `admit_in_grad` rescales what `.grad` holds and
    returns the multiplier the next backward is scaled by. Per task: `hold()` sets the sum so far aside
    (the one extra parameter-sized buffer) and clears `.grad` for the task's own gradient; `add()` scales
    that gradient into the held sum and puts the sum back into `.grad`; `restore()` puts the held sum back
    unchanged (a dropped task, or a task gradient taken away as a row of the K × P matrix).
    """

    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        self.params = params
        self.running = _RunningSum()
        self.held: list[torch.Tensor | None] = [None] * len(params)

    @property
    def ref(self) -> float | None:
        """The reference log-scale of the sum (None before the first term)."""
        return self.running.ref

    def admit_in_grad(self, log_factor: float) -> float:
        """Direct: register a term whose backward is still to come; rescale `.grad` if needed."""
        return self.running.admit(log_factor, [p.grad for p in self.params if p.grad is not None])

    def hold(self) -> None:
        self.held = [p.grad for p in self.params]
        for p in self.params:
            p.grad = None

    def restore(self) -> None:
        for p, h in zip(self.params, self.held):
            p.grad = h

    def add(self, log_factor: float) -> None:
        """Per task: scale the task gradient in `.grad` by exp(log_factor) (relative to the sum's scale) into the
        held sum, in place (the task's tensor becomes the sum where nothing was held), and put the sum back."""
        multiplier = self.running.admit(log_factor, [h for h in self.held if h is not None])
        for j, (h, p) in enumerate(zip(self.held, self.params)):
            if p.grad is None:
                continue
            if h is None:
                self.held[j] = p.grad.mul_(multiplier)
            else:
                h.add_(p.grad, alpha=multiplier)
        self.restore()

    def finish(self, common_log_factor: float) -> None:
        """Apply the common factor c and the sum's reference scale to `.grad`."""
        final = self.running.final_multiplier(common_log_factor)
        if final != 1.0:
            torch._foreach_mul_([p.grad for p in self.params if p.grad is not None], final)
