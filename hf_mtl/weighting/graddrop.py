"""`graddrop`: Gradient Sign Dropout (Chen, Ngiam, Huang, Luong, Kretzschmar, Chai & Anguelov 2020, "Just
Pick a Sign: Optimizing Deep Multitask Models with Gradient Sign Dropout", NeurIPS).

At every coordinate p of the shared parameters the task gradients may disagree in sign. GradDrop keeps
one sign at random, with probability given by the positive sign purity

    P_p = ½ (1 + Σ_i g_ip / Σ_i |g_ip|)   ∈ [0, 1],

and drops the other: with U_p ~ Uniform(0, 1) drawn once per coordinate and step,

    M_ip = 1[P_p > U_p] 1[g_ip > 0] + 1[P_p < U_p] 1[g_ip < 0],   d = Σ_i (ℓ + (1 − ℓ) M_i) ⊙ g_i.

A coordinate on which all tasks agree keeps all of them (P = 1 or 0); ℓ is the leak (flag
`--graddrop_leak`, default 0 as in LibMTL and torchjd: the paper's leak lets chosen tasks pass
unmasked in transfer learning). Since only the sign picks the mask, d_p is the sum of the positive
parts Σ_i max(g_ip, 0) or of the negative parts, so the step needs the two P-vectors of those sums and
no K × P temporary (P_p is the positive sum over the sum of |g_ip|).

Conventions: as torchjd's `GradDrop` (lines 10–15 of the paper's Algorithm 1, with f the identity),
on the gradients of the shared parameters, summed over tasks. The paper (and LibMTL, which supports it
only there) applies it at an activation layer, to gradients multiplied by the sign of the layer's input;
here the engine has the parameter gradients. U is drawn in the open interval (0, 1) (torch.rand's
float32 draw, a 0 raised to 2⁻²⁵), so a coordinate with a single sign is never dropped; torch.rand's
[0, 1) as such would drop a negative coordinate (P = 0) when U = 0 (torchjd), 2⁻²⁴ of them per step.

Randomness and state: U of step t comes from a torch generator (on the gradients' device) seeded from
`numpy.random.SeedSequence([seed, t])` (the trainer's --seed; t = steps aggregated so far, checkpointed):
every rank draws the same mask, and a resumed run continues the sequence. Non-finite gradients (an fp16
overflow) are passed through summed and leave the step count untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .base import AggregatorWeighting, WeightingConfig, check_number
from .registry import register
from .seeded import SeededSteps

#: The smallest draw U: torch.rand's 0 is raised to it, so that 0 < U < 1.
SMALLEST = 2.0**-25


def graddrop_update(grads: torch.Tensor, uniform: torch.Tensor, leak: float = 0.0) -> torch.Tensor:
    """d = Σ_i (ℓ + (1 − ℓ) M_i) ⊙ g_i for the K × P `grads` and the P draws `uniform` (see the module docstring).

    P_p > U_p is tested as Σ_i max(g_ip, 0) > U_p Σ_i |g_ip| (no division; the same test up to rounding)."""
    positive, negative = grads[0].clamp(min=0), grads[0].clamp(max=0)
    part = torch.empty_like(positive)
    for row in grads[1:]:  # row by row: P-sized temporaries only
        positive += torch.clamp(row, min=0, out=part)
        negative += torch.clamp(row, max=0, out=part)
    threshold = torch.mul(uniform, positive - negative, out=part)  # U_p Σ_i |g_ip|
    kept = torch.where(threshold < positive, positive, negative)  # P_p > U_p keeps the positive parts, else the negative
    kept.masked_fill_(threshold == positive, 0.0)  # P_p = U_p: neither (a coordinate with no gradient is 0 anyway)
    if leak:
        kept.mul_(1.0 - leak).add_(positive + negative, alpha=leak)
    return kept


@register
class GradDropWeighting(SeededSteps, AggregatorWeighting):
    """Σ_i M_i ⊙ g_i: at each coordinate one sign kept at random, with probability its share of the mass."""

    name = "graddrop"
    description = "GradDrop (Chen et al. 2020): keep one gradient sign per coordinate at random by sign purity, seeded (--graddrop_leak)"

    @dataclass
    class Config(WeightingConfig):
        graddrop_leak: float = field(
            default=0.0, metadata={"help": "graddrop: leak ℓ in [0, 1], the share of every gradient passed unmasked."}
        )

        def __post_init__(self) -> None:
            super().__post_init__()
            self.graddrop_leak = check_number("graddrop_leak", self.graddrop_leak, lambda v: 0.0 <= v <= 1.0,
                                              "in [0, 1] (default 0: no leak; 1 = the plain sum)")

    config: Config

    def __init__(self, *args: Any, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, seed=seed, **kwargs)
        self.leak = self.config.graddrop_leak

    def uniform(self, step: int, size: int, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The `size` draws U of `step` in (0, 1) (identical on every rank and after a resume)."""
        generator = torch.Generator(device=device)
        generator.manual_seed(int(np.random.SeedSequence([self.seed, step]).generate_state(1, np.uint64)[0] >> 1))
        # torch.rand's float32 draws are multiples of 2⁻²⁴ in [0, 1); a 0 becomes 2⁻²⁵ (0 < U < 1).
        return torch.rand(size, generator=generator, device=device, dtype=torch.float32).clamp_(min=SMALLEST).to(dtype)

    def aggregate(self, grads: torch.Tensor, losses: Sequence[float]) -> torch.Tensor:
        if not torch.isfinite(grads.sum(1)).all():  # row sums: no K × P temporary
            return grads.sum(0)
        uniform = self.uniform(self.steps, grads.shape[1], grads.device, grads.dtype)
        self.steps += 1
        return graddrop_update(grads, uniform, self.leak)

    def hparams(self) -> dict[str, Any]:
        return {"leak": self.leak, "seed": self.seed, "reduction": "sum"}
