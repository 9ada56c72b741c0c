"""`imtl_l`: IMTL-L, the loss half of impartial multi-task learning (Liu, Li, Kuang, Xue, Chen, Yang, Liao
& Zhang 2021, "Towards Impartial Multi-task Learning", ICLR): learned loss scales.

    F = Σ_i (e^(s_i) L_i − s_i),    dF/dL_i = e^(s_i)    (log h_i = s_i, log c = 0)
    ∂F/∂s_i = e^(s_i) L_i − 1       (zero at s_i = −log L_i: every scaled loss e^(s_i) L_i is 1)

The scales s_i are trained with the model by descent on F (the paper's Sec. 3.2): they drive every
scaled loss toward 1, so no task dominates by the size of its loss, and the −s_i term keeps them from
collapsing to 0. It is `uncertainty`'s mirror (there e^(−s) L + s, with the optimum at s = log L).

The s_i start at 0 (F = Σ L_i − 0, the plain sum) and are a `torch.nn.Parameter` in the trainer's
optimizer (own group, no weight decay, learning rate `weighting_lr`, default 0.025); `observe` sets
s.grad = ∂F/∂s. The values are checkpointed in `state_dict` (by task name), their optimizer moments in
the Trainer's. LibMTL has no IMTL-L alone: its `IMTL` is the hybrid (`imtl_h` here). Losses are clamped
at `loss_epsilon` and a negative one is refused (F is unbounded below in s_i for L_i < 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .registry import register
from .uncertainty import LearnedTaskValues


@register
class IMTLLWeighting(LearnedTaskValues):
    """F = Σ_i e^(s_i) L_i − s_i with learned log scales s_i (start 0). State: s (by task name)."""

    one_task_steps = True

    name = "imtl_l"
    description = "IMTL-L (Liu et al. 2021): learned loss scales, Σ e^(s_i) L_i − s_i (scaled losses driven to 1; --weighting_lr)"
    log_based = True
    state_key = "loss_scales"

    def task_log_factor(self, i: int, loss: float) -> float:
        return float(self.values.detach()[i])

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        # Not detached: a one-graph backward gives s the same gradient that `observe` sets.
        s = self.values.to(losses.dtype)
        return (torch.exp(s) * losses - s).sum()

    def observe(self, losses: Sequence[float], probe_norms: Sequence[float] | None = None) -> None:
        loss = torch.tensor(losses, dtype=torch.float64)
        self.set_gradient(torch.exp(self.current()) * loss - 1)
