"""The trainer's callbacks: the weighting state saved with every checkpoint, and signals turned into a
checkpoint and a clean stop."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

from transformers import Trainer, TrainerCallback, TrainingArguments

from .checkpoint import save_weighting_state
from .distributed import max_across_processes
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
            received = max_across_processes(received)
        if received and state.global_step < state.max_steps:
            self.trainer.interrupted_by = received
            control.should_save = control.should_training_stop = True
            logger.warning("%s received: saving a checkpoint at step %d and stopping; run again to resume from it.",
                           signal.Signals(received).name, state.global_step)


@contextlib.contextmanager
def signals_to_checkpoint(trainer: Trainer) -> Iterator[None]:
    """While `trainer` trains: SIGTERM/SIGINT -> checkpoint and stop at the step's end (`SignalCallback`);
    the previous handlers after. A second signal goes to the previous handler at once."""
    if not trainer.args.checkpoint_on_signal or threading.current_thread() is not threading.main_thread():
        yield
        return
    callback = SignalCallback(trainer)
    previous = {}

    def handler(signum: int, frame: Any) -> None:
        if callback.received is None:
            callback.received = signum
            logger.warning("%s received: stopping after the current step with a checkpoint (send it again to stop "
                           "at once, without one).", signal.Signals(signum).name)
            return
        # A second signal: the user means it. Hand it to whoever handled it before us.
        for sig, old in previous.items():
            signal.signal(sig, old)
        old = previous[signum]
        if callable(old):
            old(signum, frame)
        elif old == signal.SIG_DFL:
            os.kill(os.getpid(), signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)
    trainer.add_callback(callback)
    try:
        yield
    finally:
        trainer.remove_callback(callback)
        for sig, old in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, old)
        if callback.received and trainer.interrupted_by is None:
            logger.warning("%s arrived after the last training step: training had finished.",
                           signal.Signals(callback.received).name)
