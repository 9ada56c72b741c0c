"""The `hf-mtl` command: `train` (the run_glue.py flow for several tasks at once) and `weightings`.

    hf-mtl train [CONFIG.yaml|CONFIG.json] [--any TrainingArguments flag] --tasks sst2,mrpc,stsb \\
        --weighting geometric --glue_dir DIR --do_train --do_eval --output_dir OUT
    hf-mtl weightings

Flags given on the command line override the values in the config file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("hf_mtl")

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class ModelArguments:
    """Which encoder to fine-tune (or which hf_mtl model to continue from)."""

    model_name_or_path: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "Encoder checkpoint (Hub id or local folder), or a saved hf_mtl model to continue from."},
    )
    classifier_dropout: float | None = field(
        default=None, metadata={"help": "Dropout before each task head (default: the encoder's hidden dropout)."}
    )


@dataclass
class DataArguments:
    """Where the data comes from and how it is cut, as in transformers' run_glue.py."""

    glue_dir: str | None = field(
        default=None,
        metadata={"help": "Local folder in the original GLUE layout (SST-2/train.tsv, ...). Default: $GLUE_DIR, else the Hub (nyu-mll/glue)."},
    )
    max_seq_length: int = field(default=128, metadata={"help": "Longer inputs are truncated (batches are padded dynamically)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training rows of each task."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N rows of each evaluation split."})


def _config_to_argv(path: str) -> list[str]:
    """A YAML/JSON config file as command-line flags, so that later flags override it."""
    with open(path) as f:
        if path.endswith(".json"):
            values = json.load(f)
        else:
            import yaml

            values = yaml.safe_load(f)
    if not isinstance(values, dict):
        raise ValueError(f"config file {path}: expected a mapping of flag names to values, got {type(values).__name__}.")
    argv: list[str] = []
    for key, value in values.items():
        if isinstance(value, list):
            argv += [f"--{key}", *map(str, value)]
        elif isinstance(value, dict):
            argv += [f"--{key}", json.dumps(value)]
        elif value is not None:
            argv += [f"--{key}", str(value)]
    return argv


def parse_train_args(argv: Sequence[str]) -> tuple[ModelArguments, DataArguments, Any]:
    from transformers import HfArgumentParser

    from .trainer import MultiTaskTrainingArguments

    argv = list(argv)
    if argv and argv[0].endswith((".yaml", ".yml", ".json")):
        argv = _config_to_argv(argv[0]) + argv[1:]
    parser = HfArgumentParser((ModelArguments, DataArguments, MultiTaskTrainingArguments), prog="hf-mtl train")
    return parser.parse_args_into_dataclasses(args=argv)


def build_datasets(tasks: Sequence[Any], tokenizer: Any, data_args: DataArguments) -> tuple[dict, dict]:
    """Load, cap and tokenise every task: (train sets by task, evaluation sets by eval key)."""
    from .data import cap_rows, load_task_splits, tokenize_splits

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
    """Fine-tune one encoder on several tasks; writes the model, `all_results.json` and `eval_results.json`."""
    import transformers
    from transformers import AutoConfig, AutoTokenizer, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from .modeling import MultiTaskModel, resolve_model_path
    from .tasks import parse_tasks
    from .trainer import MultiTaskTrainer

    model_args, data_args, training_args = parse_train_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    if not training_args.tasks:
        raise ValueError("--tasks is required, e.g. --tasks sst2,mrpc,stsb.")
    tasks = parse_tasks(training_args.tasks)
    set_seed(training_args.seed)

    model_path = resolve_model_path(model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    train_sets, eval_sets = build_datasets(tasks, tokenizer, data_args)
    if training_args.do_train and len(train_sets) != len(tasks):
        missing = [t.name for t in tasks if t.name not in train_sets]
        raise ValueError(f"--do_train: no training split for {missing}; add their train.tsv to --glue_dir or drop them from --tasks.")
    if training_args.do_eval and not eval_sets:
        raise ValueError("--do_eval: none of the tasks has an evaluation split in the data given.")

    if AutoConfig.from_pretrained(model_path).model_type == "hf_mtl":
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
            checkpoint = get_last_checkpoint(training_args.output_dir)
            if checkpoint is not None:
                logger.info("Checkpoint found in %s: resuming from %s", training_args.output_dir, checkpoint)
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()
        metrics = dict(train_result.metrics)
        metrics["train_samples"] = sum(len(ds) for ds in train_sets.values())
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update(metrics)
    if training_args.do_eval:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)
    if training_args.push_to_hub:
        trainer.push_to_hub()
    return results


def weightings() -> None:
    """Print every registered weighting strategy with its one-line description."""
    from .weighting import describe_weightings

    rows = describe_weightings()
    width = max(len(name) for name, _ in rows)
    for name, description in rows:
        print(f"{name:<{width}}  {description}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="hf-mtl",
        description="Multi-task fine-tuning of one Hugging Face encoder with a choice of loss weighting.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "train",
        add_help=False,
        help="fine-tune on several tasks: hf-mtl train [CONFIG.yaml] --tasks sst2,mrpc --weighting geometric ... "
        "(hf-mtl train --help lists every flag)",
    )
    commands.add_parser("weightings", help="list the loss-weighting strategies")
    args, rest = parser.parse_known_args(argv[:1])
    rest += argv[1:]
    if args.command == "train":
        train(rest)
    elif args.command == "weightings":
        if rest:
            parser.error(f"weightings takes no arguments, got {rest}")
        weightings()
    else:
        parser.print_help()
        return 2 if argv else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
