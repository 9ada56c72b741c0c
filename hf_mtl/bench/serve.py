"""`hf-mtl bench serve RUN`: one pass of `pipeline("multi-task")` for K heads against K exported single-task models.

Serving K tasks with K exported models (`hf-mtl export`) runs the encoder K times per input; the multi-task
pipeline runs it once and every head on that encoding. The suite takes a trained run, exports each of its tasks
in memory (`hf_mtl.export.export_task`, the same logits as the multi-task model: a `cls`- or mean-pooled
sentence task as the custom-code model of `hf_mtl.pooled_encoder`, for which transformers logs that the class is
not in its text-classification list; a task the export refuses stops the suite with the reason) and serves the same inputs (the first
`--inputs` sentences of GLUE SST-2's dev set, truncated to `--max_length` tokens, in batches of `--batch_size`)

* through `pipeline("multi-task", ...)`: one call, every head;
* through K standard pipelines, `text-classification` for sentence tasks (regression as raw values) and
  `token-classification` (`aggregation_strategy="simple"`; it takes no truncation flags and truncates to the
  tokenizer's `model_max_length`, which short dev sentences never reach) for token tasks: one call each.

After `--warmup` untimed rounds of both, the two are timed in alternating rounds (`--repeats`), so that drift of a
shared machine hits both alike; the report is the median wall time of each and their ratio (K single-task / one
pass), plus whether both gave the same labels. Other processes on the machine add noise the alternation does not
cancel: the load average is printed with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from .common import log_to_stderr


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-mtl bench serve",
        description="Time one pass of pipeline(\"multi-task\") for K heads against K exported single-task pipelines "
        "on the same inputs; prints both median times and their ratio.")
    parser.add_argument("run", metavar="RUN_DIR", help="output_dir of `hf-mtl train` (its tasks must export: see "
                        "`hf-mtl export --help`)")
    parser.add_argument("--glue_dir", default=os.environ.get("GLUE_DIR"), help="GLUE folder whose SST-2 dev sentences "
                        "are the inputs (default: $GLUE_DIR)")
    parser.add_argument("--inputs", type=int, default=256, help="number of input sentences (default 256)")
    parser.add_argument("--batch_size", type=int, default=32, help="pipeline batch size (default 32)")
    parser.add_argument("--max_length", type=int, default=128, help="inputs are truncated to this many tokens")
    parser.add_argument("--repeats", type=int, default=3, help="timed alternating rounds (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds of each first (default 1)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--output", help="also write the numbers as JSON to this file")
    return parser


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    for name in ("inputs", "batch_size", "max_length", "repeats"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} {getattr(args, name)} must be at least 1.")
    if args.warmup < 0:
        raise ValueError(f"--warmup {args.warmup} must be >= 0.")
    if not args.glue_dir:
        raise ValueError("--glue_dir: no GLUE folder given and $GLUE_DIR is not set; the inputs are SST-2 dev "
                         "sentences. Pass --glue_dir DIR.")
    import torch
    from transformers import pipeline

    from ..data import load_task_splits
    from ..export import export_task
    from ..hub import load_run
    from ..kinds import get_kind
    from ..multi_task_pipeline import MultiTaskPipeline
    from ..tasks import GLUE_TASKS

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_run(args.run)
    model.eval()
    tasks = model.serving_tasks()
    specs = {spec.name: spec for spec in model.config.task_specs}
    singles = {}
    for task in tasks:
        exported = export_task(model, task).eval()
        if get_kind(specs[task].kind).level == "token":
            singles[task] = pipeline("token-classification", model=exported, tokenizer=tokenizer,
                                     aggregation_strategy="simple")
        else:  # a multi-label task: every label's sigmoid, as the multi-task pipeline computes them
            singles[task] = pipeline("text-classification", model=exported, tokenizer=tokenizer,
                                     **({"top_k": None} if specs[task].kind == "multi_label" else {}))
    multi = MultiTaskPipeline(model=model, tokenizer=tokenizer)
    sentences = load_task_splits(GLUE_TASKS["sst2"], args.glue_dir)["validation"]["sentence"][: args.inputs]
    options = {"batch_size": args.batch_size, "truncation": True, "max_length": args.max_length}

    def one_pass() -> list[Any]:
        return multi(sentences, **options)

    def separate() -> dict[str, list[Any]]:
        # token-classification takes no truncation flags: it truncates to the tokenizer's model_max_length itself
        return {task: serve(sentences, **(options if serve.task != "token-classification" else
                                           {"batch_size": args.batch_size})) for task, serve in singles.items()}

    with torch.inference_mode():
        for _ in range(args.warmup):
            one_pass(), separate()
        times: dict[str, list[float]] = {"one_pass": [], "single_task": []}
        for _ in range(args.repeats):
            for key, step in (("one_pass", one_pass), ("single_task", separate)):
                seconds, result = _timed(step)
                times[key].append(seconds)
                if key == "one_pass":
                    multi_out = result
                else:
                    single_out = result
    agreement = _agreement(tasks, specs, multi_out, single_out)
    median = {key: statistics.median(values) for key, values in times.items()}
    report = {
        "run": str(args.run), "tasks": tasks, "inputs": len(sentences), "batch_size": args.batch_size,
        "max_length": args.max_length, "repeats": args.repeats, "warmup": args.warmup,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "loadavg": os.getloadavg(),
        "seconds": times, "median_seconds": median, "ratio": median["single_task"] / median["one_pass"],
        "same_labels": agreement,
    }
    print(f"hf-mtl bench serve: {args.run}, K = {len(tasks)} heads ({', '.join(tasks)}), {len(sentences)} inputs, "
          f"batch {args.batch_size}, truncated to {args.max_length} tokens, {report['torch_threads']} torch threads, "
          f"median of {args.repeats} alternating rounds after {args.warmup} warm-up")
    print(f"  one pass, K heads (pipeline(\"multi-task\")):   {median['one_pass']:.3f} s")
    print(f"  K exported single-task pipelines:            {median['single_task']:.3f} s")
    print(f"  ratio (K single-task / one pass):            {report['ratio']:.2f}x")
    print("  same labels: " + ", ".join(f"{task} {share:.1%}" for task, share in agreement.items()))
    load = report["loadavg"]
    print(f"  load average {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f} on {report['cpu_count']} CPUs")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(report, handle, indent=2)
        log_to_stderr(f"Wrote {args.output}")
    return 0


def _timed(step: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = step()
    return time.perf_counter() - start, result


def _agreement(tasks: Sequence[str], specs: dict[str, Any], multi: list[dict[str, Any]],
               singles: dict[str, list[Any]]) -> dict[str, float]:
    """Per task, the share of inputs on which both ways gave the same answer (the label; a regression value
    within 1e-4; the same tag groups)."""
    shares = {}
    for task in tasks:
        same = 0
        for mine, theirs in zip((row[task] for row in multi), singles[task]):
            if specs[task].kind == "regression":
                same += abs(mine["value"] - theirs["score"]) < 1e-4
            elif specs[task].kind == "multi_label":
                same += {e["label"] for e in mine} == {e["label"] for e in theirs if e["score"] > 0.5}
            elif isinstance(mine, dict):
                same += mine["label"] == theirs["label"]
            else:
                same += [g["entity_group"] for g in mine] == [g["entity_group"] for g in theirs]
        shares[task] = same / max(len(multi), 1)
    return shares
