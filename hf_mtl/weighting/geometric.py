"""`geometric`: the sum of log losses, i.e. the geometric mean of the task losses.

    F = Σ_i log L_i,    dF/dL_i = 1/L_i    (log h_i = −log L_i, log c = 0)

Gradient-identical to `realtime` (Σ_i ∇L_i / L_i). The geometric mean (Π_i L_i)^(1/K) = exp(F/K) is a
monotone function of F, so it has the same descent direction (its gradient is (Π L_i)^(1/K)/K times
this one); F is used because it never forms the raw product, which under- or overflows with many tasks
or extreme losses. Su, "Chatting about Multi-Task Learning (I): In the Name of Loss" (2022,
https://kexue.fm/archives/8870): the real-time weighting is the gradient of the log of the geometric
mean. Stateless.
"""

from __future__ import annotations

import torch

from .ratio import InverseLossWeighting
from .registry import register


@register
class GeometricWeighting(InverseLossWeighting):
    """F = Σ_i log L_i (the log of the geometric mean, times K): gradient Σ_i ∇L_i / L_i."""

    name = "geometric"
    description = "sum of log losses, Σ log L_i (geometric mean; same gradient as realtime)"

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        return torch.log(losses).sum()
