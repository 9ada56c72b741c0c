"""One training run as library functions: transformers' `run_glue.py` flow for several tasks at once.

`hf-mtl train` is `train(argv)`; `run_training(model_args, data_args, training_args)` is the same run
from argument dataclasses, and `build_datasets` the data half of it for your own scripts.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Sequence
from typing import Any

import transformers
from transformers import AutoConfig, AutoTokenizer, set_seed

from .arguments import DataArguments, ModelArguments, parse_train_args
from .checkpoint import last_complete_checkpoint
from .data import cap_rows, load_task_splits, tokenize_splits
from .model_card import TRAINING_ARGS_FILE
from .modeling import MultiTaskModel, resolve_model_path
from .tasks import parse_tasks
from .trainer import MultiTaskTrainer
from .training_args import MultiTaskTrainingArguments

logger = logging.getLogger("hf_mtl")


def build_datasets(tasks: Sequence[Any], tokenizer: Any, data_args: DataArguments) -> tuple[dict, dict]:
    """Load, cap and tokenise every task: (train sets by task, evaluation sets by eval key)."""
    train, evaluation = {}, {}
    for spec in tasks:
        splits = cap_rows(load_task_splits(spec, data_args.glue_dir), data_args.max_train_samples, data_args.max_eval_samples)
        splits = tokenize_splits(splits, spec, tokenizer, data_args.max_seq_length)
        if "train" in splits:
            train[spec.name] = splits["train"]
        for split, key in spec.eval_keys().items():
            if split in splits:
                evaluation[key] = splits[split]
    return train, evaluation


def train(argv: Sequence[str]) -> dict[str, float]:
    """`hf-mtl train ARGV`: parse the flags (and config file), set up logging, run `run_training`."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    model_args, data_args, training_args = parse_train_args(argv)
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    return run_training(model_args, data_args, training_args)


def run_training(model_args: ModelArguments, data_args: DataArguments,
                 training_args: MultiTaskTrainingArguments) -> dict[str, float]:
    """Fine-tune one encoder on several tasks; writes the model, `all_results.json` and `eval_results.json`.

    The `run_glue.py` flow: load and tokenise every task, build the model (or continue a saved one),
    train (resuming from the last complete checkpoint in `output_dir`), evaluate, save, push.
    """
    if not training_args.tasks:
        raise ValueError("--tasks is required, e.g. --tasks sst2,mrpc,stsb.")
    tasks = parse_tasks(training_args.tasks)
    set_seed(training_args.seed)

    model_path = resolve_model_path(model_args.model_name_or_path)
    config = AutoConfig.from_pretrained(model_path)
    if config.model_type == "hf_mtl":  # before any data is read: a saved model fixes its tasks and heads
        check_saved_model_tasks(model_args.model_name_or_path, config.task_specs, tasks)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    train_sets, eval_sets = build_datasets(tasks, tokenizer, data_args)
    if training_args.do_train and len(train_sets) != len(tasks):
        missing = [t.name for t in tasks if t.name not in train_sets]
        raise ValueError(f"--do_train: no training split for {missing}; add their train.tsv to --glue_dir or drop them from --tasks.")
    if training_args.do_eval and not eval_sets:
        raise ValueError("--do_eval: none of the tasks has an evaluation split in the data given.")

    if config.model_type == "hf_mtl":
        model = MultiTaskModel.from_pretrained(model_path)
    else:
        model = MultiTaskModel.from_encoder(model_path, tasks, classifier_dropout=model_args.classifier_dropout)

    trainer = MultiTaskTrainer(
        model=model,
        args=training_args,
        train_dataset=train_sets if training_args.do_train else None,
        eval_dataset=eval_sets if training_args.do_eval else None,
        processing_class=tokenizer,
        tasks=tasks,
    )
    results: dict[str, float] = {}
    if training_args.do_train:
        checkpoint = training_args.resume_from_checkpoint
        if checkpoint is None and os.path.isdir(training_args.output_dir):
            checkpoint = last_complete_checkpoint(training_args.output_dir)
            if checkpoint is not None:
                logger.info("Checkpoint found in %s: resuming from %s", training_args.output_dir, checkpoint)
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        if trainer.interrupted_by is not None:
            name = signal.Signals(trainer.interrupted_by).name
            logger.warning("Stopped by %s at step %d of %d with a checkpoint in %s; run the same command again to "
                           "resume.", name, trainer.state.global_step, trainer.state.max_steps, training_args.output_dir)
            raise SystemExit(128 + trainer.interrupted_by)  # the shell's convention for "killed by this signal"
        trainer.save_model()
        if trainer.is_world_process_zero():
            with open(os.path.join(training_args.output_dir, TRAINING_ARGS_FILE), "w") as f:
                json.dump({**training_args.to_dict(), "world_size": training_args.world_size}, f, indent=2)
        metrics = dict(train_result.metrics)
        metrics["train_samples"] = sum(len(ds) for ds in train_sets.values())
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        results.update(metrics)
    if training_args.do_eval:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)
    if training_args.do_train:
        trainer.save_state()  # after the evaluation, so trainer_state.json holds its metrics too
    if training_args.push_to_hub:
        trainer.push_to_hub()
    return results


def check_saved_model_tasks(path: str, saved: Sequence[Any], wanted: Sequence[Any]) -> None:
    """A saved hf_mtl model continues training only on its own tasks, with the same heads (kind, labels)."""
    by_name = {t.name: t for t in saved}
    described = ", ".join(f"{t.name} ({t.kind}, {t.num_labels} label{'s' if t.num_labels > 1 else ''})" for t in saved)
    if sorted(by_name) != sorted(t.name for t in wanted):
        raise ValueError(
            f"--model_name_or_path {path} is a saved hf_mtl model with tasks {described}, but --tasks is "
            f"{','.join(t.name for t in wanted)}. Pass --tasks {','.join(by_name)}, or start from its encoder."
        )
    for task in wanted:
        head = by_name[task.name]
        same_names = head.label_names is None or task.label_names is None or list(head.label_names) == list(task.label_names)
        if (head.kind, head.num_labels) != (task.kind, task.num_labels) or not same_names:
            raise ValueError(
                f"--model_name_or_path {path}: task {task.name!r} of the saved model is {head.kind} with "
                f"{head.num_labels} label(s) {list(head.label_names or [])}, but the data has {task.kind} with "
                f"{task.num_labels} label(s) {list(task.label_names or [])}. Its head cannot be trained on this data; "
                "start from the encoder instead."
            )
