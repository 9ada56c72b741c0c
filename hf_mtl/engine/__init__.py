"""The task-by-task training step: forward and backward one task at a time, combine the gradients.

Only one task's activations are alive at a time. A strategy's gradient is Σ_i c·h_i·∇L_i (see
`hf_mtl.weighting.base`), so each task's backward can be scaled by its own factor h_i the moment its
loss is known, and the common factor c is applied to the summed gradient at the end. Factors come as
logarithms and are summed as a streaming log-sum-exp (`accumulate`), so factors like L^199 never overflow.

The step has three shapes, chosen once from the strategy's `kind` (`step.choose_shape`), the number of
micro-batches and `nan_policy`:

* `direct.DirectStep` (one micro-batch, a loss-level strategy): task i's backward adds h_i·∇L_i
  straight into `.grad`. No buffer beyond the gradients themselves.
* `per_task.PerTaskStep` (gradient accumulation, a gradient-level strategy, or `nan_policy="skip_task"`):
  each task's gradient is summed on its own, then scaled into a held running sum (one extra
  parameter-sized buffer).
* `matrix.MatrixStep` (aggregators): the K task gradients as rows of a K × P matrix.

They share `state.StepState` (the step's row shares, losses, factors, norms), `accumulate.GradientSum`
(the running sum and its held buffer) and `faults.FaultPolicy` (what a non-finite loss or gradient does,
the skip counters, the messages naming step, task, micro-batch and rows). Every task loss comes from
the `compute_loss(model, batch)` hook (default `model(**batch).loss`); every collective from
`hf_mtl.distributed`, through accelerate.

Distributed data parallel: every rank runs the same tasks in the same order (`hf_mtl.sampling`). Losses
are averaged across ranks before any factor is computed, so all ranks use identical weights. The
backward passes run under `no_sync` and the gradients are summed across ranks explicitly (each
micro-batch's loss is pre-scaled by its share of the global row count): once per step for loss-level
strategies, once per task when a strategy needs the task's global gradient. Syncing through DDP's
own hooks instead would reduce every task's backward and, with the last task's backward alone
synced, could leave another task's head with a rank-local gradient (docs/architecture.md, "Traps").

FSDP2: gradients are sharded DTensors and cannot be all-reduced by hand, so every backward
reduce-scatters as FSDP does by itself (no `no_sync`); FSDP's mean over ranks is turned into the
sum the shares above expect, and norms are global over all shards. Aggregators, which need whole
task-gradient rows, are refused under FSDP2.
"""

from .faults import NAN_POLICIES, check_nan_policy
from .state import StepResult
from .step import TaskByTaskStep

__all__ = ["NAN_POLICIES", "StepResult", "TaskByTaskStep", "check_nan_policy"]
