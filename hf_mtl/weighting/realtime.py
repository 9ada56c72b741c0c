"""`realtime`: divide each task loss by its own current value, held constant.

    F = Σ_i L_i / sg(L_i),    dF/dθ = Σ_i ∇L_i / L_i    (log h_i = −log L_i, log c = 0)

sg = stop-gradient: F's value is the constant K, but its gradient normalises every task by its current
loss, so scaling one task's loss by c > 0 changes nothing. Su, "Chatting about Multi-Task Learning (I):
In the Name of Loss" (2022, https://kexue.fm/archives/8870), section "Real-Time State". The same
gradient as `geometric`. Stateless.
"""

from __future__ import annotations

import torch

from .ratio import InverseLossWeighting
from .registry import register


@register
class RealtimeWeighting(InverseLossWeighting):
    """F = Σ_i L_i / sg(L_i): value K, gradient Σ_i ∇L_i / L_i."""

    name = "realtime"
    description = "each loss over its current value, Σ L_i / sg(L_i) (gradient Σ ∇L_i / L_i)"

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        return (losses / losses.detach()).sum()
