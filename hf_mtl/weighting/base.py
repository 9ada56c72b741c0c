"""The contract every weighting strategy keeps.

A loss-level strategy combines the K task losses L_1..L_K (each a scalar mean over its batch) into one
objective F(L_1, ..., L_K). The trainer never builds F as one graph: it runs the tasks one after
another (only one task's activations alive at a time) and needs the gradient in the factored form

    dF/dθ = c(L) · Σ_i h_i(L_i) · dL_i/dθ

where the per-task factor h_i(L_i) is known right after task i's forward pass and the common factor
c(L) only once all K losses are known. Strategies return both factors as natural logarithms so that
extreme values (power means with |γ| = 200, losses of 1e-8 next to 1e8) stay finite: the trainer
rescales its running gradient sum online, like a streaming log-sum-exp. The effective weight of task
i, dF/dL_i = c(L) · h_i(L_i), is what gets logged as `weight_<task>`.

Losses that a log or a division needs positive are clamped at `loss_epsilon` (default 1e-8, counted
in `num_clamped`), and a negative loss under such a strategy is an error: log and ratio strategies
have no meaning for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from ..label_stats import LabelStatistics
from ..tasks import TaskSpec


@dataclass
class WeightingConfig:
    """The hyperparameters of one strategy: the base of every strategy's nested `Config` dataclass.

    Each strategy declares its own knobs in its own file, as fields of a nested dataclass named `Config`
    that subclasses this one (or the `Config` of the class it extends); a strategy without knobs keeps
    this empty one. Every field is a `hf-mtl train` flag of the same name (and a key of a config file):
    the registry derives the flags from these declarations and `MultiTaskTrainingArguments` takes them as
    its fields. A field needs a default and `metadata={"help": ...}`, and may give `"choices"`; the
    values are checked once, in `__post_init__` (choices here, ranges in the subclass, which calls
    `super().__post_init__()`), with a ValueError that names the flag, the value and the fix.
    A flag declared by several strategies (`weighting_lr`) must have the same type and default in each.
    """

    def __post_init__(self) -> None:
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices is not None and getattr(self, f.name) not in choices:
                raise ValueError(f"--{f.name} {getattr(self, f.name)!r} is not one of: {', '.join(choices)}.")


def check_number(flag: str, value: Any, valid: Callable[[float], bool], requirement: str) -> float:
    """`value` as a float if it is a finite number for which `valid` holds, else a ValueError naming
    `--flag`, the value and `requirement` (what it must be, with the default or an example)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and valid(number)):
        raise ValueError(f"--{flag} must be {requirement}, got {value!r}.")
    return number


def check_seed(name: str, seed: Any) -> int:
    """The seed of a randomised strategy as an int, or a ValueError naming `--seed`."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(
            f"weighting {name!r}: --seed must be a whole number >= 0 (it seeds the strategy's random draws), "
            f"got {seed!r}; pass e.g. --seed 42."
        )
    return int(seed)


class Weighting:
    """Base class of loss-level strategies (see the module docstring for the factored gradient).

    Subclasses set `name`, `description` (one line, shown by `hf-mtl weightings`), `log_based` (True
    when the strategy needs positive losses) and implement `task_log_factor`, `common_log_factor`
    and `objective`. Their hyperparameters are the fields of a nested `Config` dataclass (see
    `WeightingConfig`), read from `self.config`. Any state that changes during training lives in
    attributes listed by `state_dict()` so that checkpoints restore it.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: How the engine steps for this strategy, decided here once: `"loss"` (task factors from the losses;
    #: the direct or per-task step), `"gradient"` (factors from each task's own gradient norm; the per-task
    #: step) or `"aggregator"` (all K task gradients at once; the K × P matrix step).
    kind: ClassVar[Literal["loss", "gradient", "aggregator"]] = "loss"
    log_based: ClassVar[bool] = False
    #: This strategy's own hyperparameters (flags); the empty base for a strategy without knobs.
    Config: ClassVar[type[WeightingConfig]] = WeightingConfig
    #: True when a step may hold one task only (`--task_sampling one_per_step`): task i's factor h_i comes from its
    #: own loss and the strategy's own state, the common factor is a constant (left out of such a step, whose
    #: update is h_i(L_i)·∇L_i), and `observe` takes NaN for the tasks not in the step. A strategy that needs all
    #: K losses or gradients in every step (a common factor, a softmax over tasks, an aggregator) keeps False.
    one_task_steps: ClassVar[bool] = False
    #: True for a strategy that draws random numbers: its constructor takes `seed` (keyword), which
    #: `build_weighting` passes (the trainer's --seed, so every rank draws the same).
    randomised: ClassVar[bool] = False

    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        label_stats: Mapping[str, LabelStatistics] | None = None,
        config: WeightingConfig | None = None,
        *,
        loss_epsilon: float = 1e-8,
    ) -> None:
        """`config` is an instance of this class's `Config` (None: the defaults); `loss_epsilon` the
        clamp of log and ratio strategies (losses below it are raised to it)."""
        self.tasks = list(tasks)
        self.task_names = [t.name for t in self.tasks]
        self.label_stats = dict(label_stats or {})
        if config is None:
            config = type(self).Config()
        elif not isinstance(config, type(self).Config):
            raise TypeError(
                f"weighting {self.name or type(self).__name__!r}: config must be a {type(self).__qualname__}.Config, "
                f"got {type(config).__qualname__}; build_weighting(name, tasks, hparams={{flag: value}}) makes it."
            )
        self.config = config
        # With epsilon <= 0 a zero loss would pass the clamp and fail later as a bare "math domain error".
        if not (math.isfinite(loss_epsilon) and loss_epsilon > 0):
            raise ValueError(
                f"weighting {self.name!r}: loss_epsilon={loss_epsilon!r} must be a small positive number (default 1e-8): "
                "log-based weightings clamp losses to it before a log or a division."
            )
        self.loss_epsilon = float(loss_epsilon)
        self.num_clamped = 0

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def needs_initial_losses(self) -> bool:
        """True when the trainer must measure the mean loss of the first batches before training
        (`init` with `--init_estimate_batches N`, N > 0) and hand it to `set_initial_losses`."""
        return False

    def set_initial_losses(self, losses: Sequence[float]) -> None:
        raise NotImplementedError(f"weighting {self.name!r} does not use initial losses")

    def check_loss(self, i: int, loss: float) -> float:
        """Validate task i's loss value and return the value the factors may use (clamped if needed)."""
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"weighting {self.name!r}: task {self.task_names[i]!r} has a non-finite loss {loss}; "
                "lower the learning rate or check that task's labels."
            )
        if not self.log_based:
            return loss
        if loss < 0:
            raise ValueError(
                f"weighting {self.name!r}: task {self.task_names[i]!r} has a negative loss {loss:.6g}, but this "
                "strategy takes logs or ratios of losses and needs them positive. Use a non-negative loss "
                "(cross-entropy, squared error) or a weighting that is not log-based (equal, static)."
            )
        if loss < self.loss_epsilon:
            self.num_clamped += 1
            return self.loss_epsilon
        return loss

    # The factored gradient --------------------------------------------------------------------

    def task_log_factor(self, i: int, loss: float) -> float:
        """log h_i(L_i): task i's own factor, from its (checked) loss alone."""
        raise NotImplementedError

    def common_log_factor(self, losses: Sequence[float]) -> float:
        """log c(L): the factor shared by all tasks, once all K (checked) losses are known."""
        return 0.0

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        """F(L) as a differentiable function of the K losses (a 1-D tensor). Its gradient with
        respect to `losses` equals `weights(losses)`; the property tests hold every strategy to it."""
        raise NotImplementedError

    def log_weights(self, losses: Sequence[float]) -> np.ndarray:
        """log dF/dL_i for every task (float64), from already checked losses."""
        common = self.common_log_factor(losses)
        return np.array([self.task_log_factor(i, float(loss)) + common for i, loss in enumerate(losses)])

    def weights(self, losses: Sequence[float]) -> np.ndarray:
        """Effective weights dF/dL_i (what `weight_<task>` logs)."""
        checked = [self.check_loss(i, float(loss)) for i, loss in enumerate(losses)]
        return np.exp(self.log_weights(checked))

    # Checkpointed state -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state saved with every Trainer checkpoint."""
        return {"num_clamped": self.num_clamped}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.num_clamped = int(state.get("num_clamped", 0))

    # Learning strategies (uncertainty, GradNorm, DWA, FAMO, ...) -------------------------------

    #: When True the trainer measures ‖∂L_i/∂W‖ for every task on the last shared weight matrix W
    #: (the encoder's pooler, or its last layer) and passes the norms to `observe` (GradNorm).
    probes_last_shared_layer: ClassVar[bool] = False

    def parameters(self) -> list[torch.nn.Parameter]:
        """Trainable parameters of the strategy itself (e.g. learned log-variances). The trainer adds
        them to the optimizer as their own parameter group (learning rate `parameter_lr()`), so their
        optimizer state is checkpointed with the Trainer's; their values belong in `state_dict()`."""
        return []

    def parameter_lr(self) -> float | None:
        """Learning rate of `parameters()`; None uses the trainer's."""
        return None

    def observe(self, losses: Sequence[float], probe_norms: Sequence[float] | None = None) -> None:
        """Called once per optimizer step after the task factors were used, with the step's (checked,
        rank-averaged) losses (NaN for a task not in a one-task step, see `one_task_steps`) and, if `probes_last_shared_layer`, the task gradient norms on the last
        shared layer. Update histories here, and set `.grad` of `parameters()` for the optimizer step."""

    def hparams(self) -> dict[str, Any]:
        """The hyperparameters this strategy uses (saved in the model config and model card)."""
        return {}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())
        return f"{type(self).__name__}({params})"


class GradientWeighting(Weighting):
    """Base class of gradient-level strategies: task i's factor comes from its own global gradient g_i.

    The trainer runs task i's backward passes into a clean `.grad`, reduces them across ranks, takes
    the norm ‖g_i‖ over `norm_scope`, asks `gradient_log_factor(i, ‖g_i‖)` and adds the scaled
    gradient to the running sum (one extra parameter-sized buffer, no K × P matrix, no retained graph).
    `gradient_common_log_factor(norms)` scales the sum at the end. A factor of −inf drops the task for
    this step (a zero or non-finite gradient).
    """

    kind = "gradient"
    #: The parameters the engine takes a task's gradient norm over: `"all"` it touches (encoder and its
    #: head) or `"shared"` (encoder only; each head then gets its task's raw gradient). The engine reads
    #: it; `grad_normalize` sets it from --norm_scope, the others keep "all".
    norm_scope: str = "all"

    def gradient_log_factor(self, i: int, grad_norm: float) -> float:
        """log of the multiplier of task i's gradient, from its global norm over `norm_scope`."""
        raise NotImplementedError

    def gradient_common_log_factor(self, grad_norms: Sequence[float], losses: Sequence[float]) -> float:
        """log of the factor applied to the combined gradient once all K norms (and losses) are known."""
        return 0.0

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"{self.name} depends on the task gradients, not on the losses alone: it has no loss objective.")


class AggregatorWeighting(GradientWeighting):
    """Base class of strategies that need all K task gradients at once (the gradient-surgery family).

    The trainer stacks the global task gradients over the shared parameters into a K × P matrix
    (heads are not in it: each head gets its own task's raw gradient), calls `aggregate(G, losses)`
    and writes the returned P-vector into `.grad`. No computation graph is retained; the matrix is
    the only K-sized buffer. Every rank holds the same G (gradients are reduced before stacking), so a
    deterministic `aggregate` (seeded randomness in its state) gives identical updates on all ranks.
    """

    kind = "aggregator"
    #: K × P buffers of the strategy's own state beside the engine's matrix (moving averages, tracked
    #: gradients), which `bench speed` counts in its `extra buffer`.
    state_matrices: ClassVar[int] = 0

    def aggregate(self, grads: torch.Tensor, losses: Sequence[float]) -> torch.Tensor:
        """The update direction (P,) from the task gradients (K, P) and their (checked) losses."""
        raise NotImplementedError

    def gradient_log_factor(self, i: int, grad_norm: float) -> float:
        raise TypeError(f"{self.name} aggregates all task gradients at once; it has no per-task factor.")

    def state_matrix(self, saved: torch.Tensor | None, grads: torch.Tensor, what: str) -> torch.Tensor:
        """One of the `state_matrices` for this step's task gradients: zeros on first use, else `saved` on their
        device and dtype; a saved matrix of another shape (a checkpoint of another model or task list) is refused."""
        if saved is None:
            return torch.zeros_like(grads)
        if saved.shape != grads.shape:
            raise ValueError(
                f"{self.name}: the saved {what} has shape {tuple(saved.shape)} but the task gradients have "
                f"{tuple(grads.shape)}; resume with the same model and tasks."
            )
        return saved.to(grads)
