"""The `hf-mtl` command: `train` (the run_glue.py flow for several tasks at once) and `weightings`.

    hf-mtl train [CONFIG.yaml|CONFIG.json] [--any TrainingArguments flag] --tasks sst2,mrpc,stsb \\
        --weighting geometric --glue_dir DIR --do_train --do_eval --output_dir OUT
    hf-mtl weightings

Flags given on the command line override the values in the config file.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any


def train(argv: Sequence[str]) -> dict[str, float]:
    """Fine-tune one encoder on several tasks (`hf_mtl.pipeline.train`)."""
    from .pipeline import train as run

    return run(argv)


def weightings() -> None:
    """Print every registered weighting strategy with its one-line description, grouped by kind."""
    from .weighting import WEIGHTINGS

    groups: dict[str, list[tuple[str, str]]] = {"loss": [], "gradient": [], "aggregator": []}
    titles = {
        "loss": "loss-level (each task's loss weighted; no extra buffer without gradient accumulation)",
        "gradient": "gradient-level, task by task (one extra parameter-sized buffer)",
        "aggregator": "gradient-level, all task gradients at once (K x shared-parameter matrix)",
    }
    for name, cls in WEIGHTINGS.items():
        groups[cls.kind].append((name, cls.description))
    width = max(len(name) for name in WEIGHTINGS)
    for kind, rows in groups.items():
        if rows:
            print(titles[kind] + ":")
            for name, description in rows:
                print(f"  {name:<{width}}  {description}")
    print("compositions: LOSS+GRADIENT, e.g. geometric+grad_normalize or prior+pcgrad")


# ---- commands on a trained run (hf_mtl.export, inference, model_card, hub, plotting) ---------------


_RUN_OR_HUB_ID = "output_dir of `hf-mtl train`, or a Hub id of an hf_mtl model"


def _run_parser(command: str, description: str, run_help: str = "output_dir of `hf-mtl train`") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"hf-mtl {command}", description=description)
    parser.add_argument("run", metavar="RUN_DIR", help=run_help)
    return parser


def _add_inference_flags(parser: argparse.ArgumentParser, length_help: str) -> None:
    parser.add_argument("--max_seq_length", type=int, help=f"longer inputs are truncated ({length_help})")
    parser.add_argument("--per_device_eval_batch_size", type=int, default=64)


def _add_hub_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hub_model_id", help="repository to push to, `name` or `namespace/name` (default: the folder's name)")
    parser.add_argument("--hub_token", help="token with write access (default: the saved login or $HF_TOKEN)")
    parser.add_argument("--hub_private_repo", action="store_true", help="create the repository as private")


def export(argv: Sequence[str]) -> None:
    """One task of a run as a standard transformers model folder of its kind's class (optionally pushed)."""
    from .export import remote_code_note, save_task_model

    parser = _run_parser(
        "export", "Write one task of a multi-task run as a standard transformers model folder (encoder + the task's "
        "head, id2label with the task's label or tag names, tokenizer, model card) whose logits equal the multi-task "
        "model's. The class follows the task's kind: AutoModelForSequenceClassification (classification; regression, "
        "problem_type=regression; multi_label, problem_type=multi_label_classification), "
        "AutoModelForTokenClassification (token_classification: works with pipeline(\"token-classification\", "
        "aggregation_strategy=\"simple\")), AutoModelForMultipleChoice (multiple_choice). A sentence-level or "
        "multiple-choice task with pooler pooling exports as the standard class (BERT-family encoders with a pooler; "
        "others are refused); with cls or mean pooling, which no standard class reads, it exports as a custom-code "
        "model (its modeling file in the folder, torch and transformers only): load it with "
        "trust_remote_code=True.",
        run_help=_RUN_OR_HUB_ID)
    parser.add_argument("--task", required=True, help="the task to export, e.g. mrpc or ner")
    parser.add_argument("--output", required=True, help="folder to write: new or empty, unless --overwrite; never a "
                        "folder that holds a multi-task model (the run, its checkpoints)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --output folder: its files of "
                        "the same names (config.json, model.safetensors, tokenizer files, README.md) are replaced, "
                        "others are kept (and uploaded too with --push_to_hub)")
    parser.add_argument("--best", action="store_true", help="export the task from the checkpoint of its best "
                        "evaluation during training (recorded in RUN_DIR/trainer_state.json; the run must have "
                        "evaluated and saved at the same steps) instead of the final model; the card names the step")
    parser.add_argument("--push_to_hub", action="store_true", help="also upload the folder to the Hub")
    _add_hub_flags(parser)
    args = parser.parse_args(argv)
    output = save_task_model(args.run, args.task, args.output, push_to_hub=args.push_to_hub,
                             hub_model_id=args.hub_model_id, hub_token=args.hub_token,
                             private=args.hub_private_repo or None, overwrite=args.overwrite, best=args.best)
    print(f"Exported task {args.task} to {output}" + (" from its best checkpoint" if args.best else "")
          + (" and pushed it to the Hub" if args.push_to_hub else ""))
    note = remote_code_note(output)
    if note:
        print(note)


def evaluate(argv: Sequence[str]) -> dict[str, float]:
    """Evaluate a saved multi-task model; prints and writes eval_results.json."""
    from .inference import evaluate_run

    parser = _run_parser(
        "evaluate", "Evaluate a saved multi-task model on its tasks' dev sets; prints the metrics and writes "
        "OUTPUT_DIR/eval_results.json with the keys of training-time evaluation (eval_<task>_<metric>, and "
        "eval_glue_score when every task is a GLUE task, else eval_score). GLUE tasks read --glue_dir; a task from a "
        "task file reads its validation data from the source recorded in the run's config.json (relative paths from "
        "the current directory).", run_help=_RUN_OR_HUB_ID)
    parser.add_argument("--tasks", help="comma-separated subset of the model's tasks (default: all)")
    parser.add_argument("--glue_dir", help="local GLUE folder for GLUE tasks (default: $GLUE_DIR, else the Hub)")
    parser.add_argument("--max_eval_samples", type=int, help="keep the first N rows of each evaluation split (a task's "
                        "own max_eval_samples from its task file wins)")
    _add_inference_flags(parser, "default 128; a task's own max_seq_length from its task file wins, as in training")
    parser.add_argument("--output_dir", help="where eval_results.json goes (default: RUN_DIR/evaluate, with --best "
                        "RUN_DIR/evaluate-best, or ./evaluate-<name> for a Hub id)")
    parser.add_argument("--best", action="store_true", help="evaluate each task with the checkpoint of its own best "
                        "evaluation during training (eval_<task>_best_step says which). Those steps were chosen on "
                        "the same dev sets, so the numbers are optimistic, not an estimate for new data")
    args = parser.parse_args(argv)
    from .arguments import DataArguments

    data_args = DataArguments(glue_dir=args.glue_dir, max_seq_length=args.max_seq_length or 128,
                              max_eval_samples=args.max_eval_samples)
    metrics = evaluate_run(args.run, args.tasks, data_args, args.output_dir, args.per_device_eval_batch_size,
                           best=args.best)
    if args.best:
        print("Note: each task is reported at its own best step, chosen on this dev set: these numbers are optimistic.")
    return metrics


def predict(argv: Sequence[str]) -> None:
    """Predict one task for every row of a file; writes each row's index and prediction (TSV or JSON Lines)."""
    from .inference import ALL_TASKS, predict_all, predict_file

    parser = _run_parser(
        "predict", "Predict one task for every row of an input file: a TSV with a header naming the task's text "
        "columns (sentence, or sentence1/sentence2, ...; the original GLUE headers work too; a token task's words "
        "separated by spaces), or a .jsonl / .json / .csv / .parquet file with the task's columns (text columns; the "
        "words column as a list; context and choices). Writes index and prediction per row: the label name, the "
        "number (or vector) of a regression, the label set of a multi-label task, one tag per input word, the chosen "
        "answer. An --output ending in .jsonl gets one JSON object per row; any other a TSV (lists joined with "
        "spaces for tags, commas otherwise).", run_help=_RUN_OR_HUB_ID)
    parser.add_argument("--task", required=True, help="the task to predict, e.g. sst2 or ner; `all`: every task from "
                        "one encoder pass per row (pipeline(\"multi-task\")), reading a `text` column and an optional "
                        "`text_pair` column; a .jsonl output gets each task's prediction with its scores (a token "
                        "task's tag groups), a TSV one column per task")
    parser.add_argument("--input", required=True, help="file to read: .tsv (or any other extension: read as TSV), "
                        ".jsonl, .json, .csv or .parquet")
    parser.add_argument("--output", required=True, help="file to write: .jsonl for JSON Lines, else TSV (missing "
                        "folders are created; not a folder, not the --input file)")
    _add_inference_flags(parser, "default: the task's own max_seq_length from its task file, else 128")
    args = parser.parse_args(argv)
    if args.task == ALL_TASKS:
        output = predict_all(args.run, args.input, args.output, args.max_seq_length, args.per_device_eval_batch_size)
        print(f"Wrote every task's predictions to {output}")
        return
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

    from .hub import local_run_folder, upload_folder
    from .model_card import write_run_model_card

    parser = _run_parser(
        "push", "Write the model card of a finished run (tasks, weighting, dev metrics, hyperparameters, "
        "curves) and upload the run folder (without checkpoints) to the Hub, as `hf-mtl train --push_to_hub` does "
        "at the end of training.")
    _add_hub_flags(parser)
    args = parser.parse_args(argv)
    local_run_folder(args.run)
    repo_id = args.hub_model_id or Path(args.run).resolve().name
    write_run_model_card(args.run, model_id=repo_id)
    pushed = upload_folder(args.run, repo_id, token=args.hub_token, private=args.hub_private_repo or None,
                           commit_message="Upload hf_mtl run", ignore_patterns=["_*", "checkpoint-*"])
    print(f"Pushed {args.run} to {pushed}")


#: Commands that work on a trained run: name -> (function(argv), one-line help).
RUN_COMMANDS = {
    "export": (export, ("one task as a standard transformers model (sequence / token classification, multiple choice; "
               "cls / mean pooling: custom code, trust_remote_code=True): hf-mtl export RUN_DIR --task mrpc --output DIR")),
    "evaluate": (evaluate, "per-task dev metrics of a saved model: hf-mtl evaluate RUN_DIR [--tasks sst2,mrpc] [--glue_dir DIR]"),
    "predict": (predict, ("predictions for a file (.tsv, .jsonl, .json, .csv, .parquet): hf-mtl predict RUN_DIR --task "
                "sst2 --input in.tsv --output preds.tsv")),
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
    commands.add_parser("bench", add_help=False, help="benchmarks: hf-mtl bench speed|torchjd|quality|serve [flags] (speed: "
                        "step time and memory of every weighting vs equal; quality: dev metrics of a strategies x seeds "
                        "grid; serve: one multi-task pipeline pass vs K exported single-task models)")
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
            from .bench import bench

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


#: Names that lived here before they moved to the library; `from hf_mtl.cli import DataArguments` keeps working.
_MOVED = {"DataArguments": "arguments", "ModelArguments": "arguments", "parse_train_args": "arguments",
          "build_datasets": "pipeline", "DEFAULT_MODEL": "modeling"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f"hf_mtl.{_MOVED[name]}"), name)
    raise AttributeError(f"module 'hf_mtl.cli' has no attribute {name!r}")


if __name__ == "__main__":
    sys.exit(main())
