"""The trainer's callbacks: the weighting state saved with every checkpoint, and signals turned into a
checkpoint and a clean stop."""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from .checkpoint import save_weighting_state
from .engine import TaskByTaskStep
from .weighting import Weighting

logger = logging.getLogger(__name__)


class WeightingStateCallback(TrainerCallback):
    """Writes the weighting's state next to every checkpoint (JSON, rank 0; identical on all ranks)."""

    def __init__(self, weighting: Weighting, engine: TaskByTaskStep) -> None:
        self.weighting = weighting
        self.engine = engine

    def on_save(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            os.makedirs(folder, exist_ok=True)
            save_weighting_state(self.weighting, folder, self.engine.state_dict())


class SignalCallback(TrainerCallback):
    """Turns a received SIGTERM/SIGINT into a checkpoint and a stop at the end of the current optimizer step.

    The signal handler only records the signal (a save is never interrupted half-way). Under several
    processes the ranks agree first (a max all-reduce of one flag per step), so that all of them save
    and stop at the same step even when the signal reached them at different steps.
    """

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.received: int | None = None

    def on_step_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        received = self.received or 0
        if args.world_size > 1:
            import torch.distributed as dist

            flag = torch.tensor([received], dtype=torch.int64, device=args.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            received = int(flag.item())
        if received and state.global_step < state.max_steps:
            self.trainer.interrupted_by = received
            control.should_save = control.should_training_stop = True
            logger.warning("%s received: saving a checkpoint at step %d and stopping; run again to resume from it.",
                           signal.Signals(received).name, state.global_step)
