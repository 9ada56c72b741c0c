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
    import signal

    import transformers
    from transformers import AutoConfig, AutoTokenizer, set_seed

    from .modeling import MultiTaskModel, resolve_model_path
    from .tasks import parse_tasks
    from .trainer import MultiTaskTrainer, last_complete_checkpoint

    model_args, data_args, training_args = parse_train_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    if not training_args.tasks:
        raise ValueError("--tasks is required, e.g. --tasks sst2,mrpc,stsb.")
    tasks = parse_tasks(training_args.tasks)
    set_seed(training_args.seed)

    model_path = resolve_model_path(model_args.model_name_or_path)
    config = AutoConfig.from_pretrained(model_path)
    if config.model_type == "hf_mtl":  # before any data is read: a saved model fixes its tasks and heads
        _check_saved_model_tasks(model_args.model_name_or_path, config.task_specs, tasks)
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
            with open(os.path.join(training_args.output_dir, "training_args.json"), "w") as f:
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


def _check_saved_model_tasks(path: str, saved: Sequence[Any], wanted: Sequence[Any]) -> None:
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


def weightings() -> None:
    """Print every registered weighting strategy with its one-line description, grouped by kind."""
    from .weighting import WEIGHTINGS, AggregatorWeighting, GradientWeighting

    groups = {
        "loss-level (each task's loss weighted; no extra buffer without gradient accumulation)": [],
        "gradient-level, task by task (one extra parameter-sized buffer)": [],
        "gradient-level, all task gradients at once (K x shared-parameter matrix)": [],
    }
    for name, cls in WEIGHTINGS.items():
        kind = 2 if issubclass(cls, AggregatorWeighting) else 1 if issubclass(cls, GradientWeighting) else 0
        list(groups.values())[kind].append((name, cls.description))
    width = max(len(name) for name in WEIGHTINGS)
    for title, rows in groups.items():
        if rows:
            print(title + ":")
            for name, description in rows:
                print(f"  {name:<{width}}  {description}")
    print("compositions: LOSS+GRADIENT, e.g. geometric+grad_normalize or prior+pcgrad")


# ---- commands on a trained run (hf_mtl.hub, hf_mtl.plotting) ----------------------------------------


_RUN_OR_HUB_ID = "output_dir of `hf-mtl train`, or a Hub id of an hf_mtl model"


def _run_parser(command: str, description: str, run_help: str = "output_dir of `hf-mtl train`") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"hf-mtl {command}", description=description)
    parser.add_argument("run", metavar="RUN_DIR", help=run_help)
    return parser


def _add_inference_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max_seq_length", type=int, default=128, help="longer inputs are truncated")
    parser.add_argument("--per_device_eval_batch_size", type=int, default=64)


def _add_hub_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hub_model_id", help="repository to push to, `name` or `namespace/name` (default: the folder's name)")
    parser.add_argument("--hub_token", help="token with write access (default: the saved login or $HF_TOKEN)")
    parser.add_argument("--hub_private_repo", action="store_true", help="create the repository as private")


def export(argv: Sequence[str]) -> None:
    """One task of a run as a standard AutoModelForSequenceClassification folder (optionally pushed)."""
    from .hub import save_task_model

    parser = _run_parser(
        "export", "Write one task of a multi-task run as a standard AutoModelForSequenceClassification folder "
        "(encoder + the task's head, id2label from the task, tokenizer, model card) whose logits equal the "
        "multi-task model's. BERT-family encoders with a pooler export exactly; others are refused.",
        run_help=_RUN_OR_HUB_ID)
    parser.add_argument("--task", required=True, help="the task to export, e.g. mrpc")
    parser.add_argument("--output", required=True, help="folder to write")
    parser.add_argument("--push_to_hub", action="store_true", help="also upload the folder to the Hub")
    _add_hub_flags(parser)
    args = parser.parse_args(argv)
    output = save_task_model(args.run, args.task, args.output, push_to_hub=args.push_to_hub,
                             hub_model_id=args.hub_model_id, hub_token=args.hub_token,
                             private=args.hub_private_repo or None)
    print(f"Exported task {args.task} to {output}" + (" and pushed it to the Hub" if args.push_to_hub else ""))


def evaluate(argv: Sequence[str]) -> dict[str, float]:
    """Evaluate a saved multi-task model; prints and writes eval_results.json."""
    from .hub import evaluate_run

    parser = _run_parser(
        "evaluate", "Evaluate a saved multi-task model on its tasks' dev sets; prints the metrics and writes "
        "OUTPUT_DIR/eval_results.json with the keys of training-time evaluation (eval_<task>_<metric>, "
        "eval_glue_score).", run_help=_RUN_OR_HUB_ID)
    parser.add_argument("--tasks", help="comma-separated subset of the model's tasks (default: all)")
    parser.add_argument("--glue_dir", help="local GLUE folder (default: $GLUE_DIR, else the Hub)")
    parser.add_argument("--max_eval_samples", type=int, help="keep the first N rows of each evaluation split")
    _add_inference_flags(parser)
    parser.add_argument("--output_dir", help="where eval_results.json goes (default: RUN_DIR/evaluate, or "
                        "./evaluate-<name> for a Hub id)")
    args = parser.parse_args(argv)
    data_args = DataArguments(glue_dir=args.glue_dir, max_seq_length=args.max_seq_length,
                              max_eval_samples=args.max_eval_samples)
    return evaluate_run(args.run, args.tasks, data_args, args.output_dir, args.per_device_eval_batch_size)


def predict(argv: Sequence[str]) -> None:
    """Predict one task for every row of a TSV file; writes index and prediction (label name or float)."""
    from .hub import predict_file

    parser = _run_parser(
        "predict", "Predict one task for every row of a TSV file with a header naming the task's text columns "
        "(sentence, or sentence1/sentence2, ...; the original GLUE headers work too). Writes a TSV with "
        "index and prediction: the label name, or the float for a regression task.", run_help=_RUN_OR_HUB_ID)
    parser.add_argument("--task", required=True, help="the task to predict, e.g. sst2")
    parser.add_argument("--input", required=True, help="TSV file to read")
    parser.add_argument("--output", required=True, help="TSV file to write")
    _add_inference_flags(parser)
    args = parser.parse_args(argv)
    output = predict_file(args.run, args.task, args.input, args.output, args.max_seq_length,
                          args.per_device_eval_batch_size)
    print(f"Wrote predictions for task {args.task} to {output}")


def plot(argv: Sequence[str]) -> None:
    """PNGs of the per-task training losses, weights, gradient norms and eval metrics of a run."""
    from .plotting import plot_run

    parser = _run_parser(
        "plot", "Plot a run's trainer_state.json: per-task training loss, effective weight, gradient norm "
        "(when logged) and evaluation metrics over steps, one PNG each plus training_curves.png with all "
        'of them. Needs matplotlib: pip install "hf_mtl[plot]".',
        run_help="output_dir of `hf-mtl train` (or a trainer_state.json)")
    parser.add_argument("--output_dir", help="where the PNGs go (default: RUN_DIR)")
    args = parser.parse_args(argv)
    try:
        written = plot_run(args.run, args.output_dir)
    except ImportError as error:
        raise SystemExit(f"hf-mtl plot: {error}") from error
    for path in written:
        print(f"Wrote {path}")


def push(argv: Sequence[str]) -> None:
    """Upload a finished run (model, tokenizer, config, model card, curves) to the Hub."""
    from pathlib import Path

    from .hub import upload_folder, write_run_model_card

    parser = _run_parser(
        "push", "Write the model card of a finished run (tasks, weighting, dev metrics, hyperparameters, "
        "curves) and upload the run folder (without checkpoints) to the Hub, as `hf-mtl train --push_to_hub` does "
        "at the end of training.")
    _add_hub_flags(parser)
    args = parser.parse_args(argv)
    repo_id = args.hub_model_id or Path(args.run).resolve().name
    write_run_model_card(args.run, model_id=repo_id)
    pushed = upload_folder(args.run, repo_id, token=args.hub_token, private=args.hub_private_repo or None,
                           commit_message="Upload hf_mtl run", ignore_patterns=["_*", "checkpoint-*"])
    print(f"Pushed {args.run} to {pushed}")


#: Commands that work on a trained run: name -> (function(argv), one-line help).
RUN_COMMANDS = {
    "export": (export, "one task as a standard AutoModelForSequenceClassification: hf-mtl export RUN_DIR --task mrpc --output DIR"),
    "evaluate": (evaluate, "per-task dev metrics of a saved model: hf-mtl evaluate RUN_DIR [--tasks sst2,mrpc] [--glue_dir DIR]"),
    "predict": (predict, "predictions for a TSV file: hf-mtl predict RUN_DIR --task sst2 --input in.tsv --output preds.tsv"),
    "plot": (plot, "training curves as PNGs: hf-mtl plot RUN_DIR"),
    "push": (push, "upload a finished run with its model card: hf-mtl push RUN_DIR --hub_model_id NAME"),
}


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
    commands.add_parser("bench", add_help=False, help="benchmarks: hf-mtl bench speed|torchjd|quality [flags] (speed: step time and memory of "
                        "every weighting vs equal; quality: dev metrics of a strategies x seeds grid)")
    for name, (_, help_text) in RUN_COMMANDS.items():
        commands.add_parser(name, add_help=False, help=help_text)
    args, rest = parser.parse_known_args(argv[:1])
    rest += argv[1:]
    try:
        if args.command == "train":
            train(rest)
        elif args.command == "weightings":
            if rest:
                parser.error(f"weightings takes no arguments, got {rest}")
            weightings()
        elif args.command == "bench":
            from .benchmark import bench

            return bench(rest)
        elif args.command in RUN_COMMANDS:
            RUN_COMMANDS[args.command][0](rest)
        else:
            parser.print_help()
            return 2 if argv else 0
    except (ValueError, FileNotFoundError, ConnectionError) as err:
        # Bad input: the message says what and how to fix it; a traceback would only bury it.
        if os.environ.get("HF_MTL_TRACEBACK"):
            raise
        print(f"hf-mtl: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
