"""Which pooling should sentence-level heads use? `pooler`, `cls` and `mean`, single-task and multi-task.

    python scripts/pooling_study.py --output_dir out/pooling [--steps 300] [--eval_steps 100]
        [--poolings pooler,cls,mean] [--silver_dir ../shared/data/silver] [--glue_dir ../shared/data/glue]

For each pooling it trains MiniLM (`sentence-transformers/all-MiniLM-L6-v2`, the offline default) on SST-2,
MRPC, STS-B, WNLI and the silver `entity_types` task together (`--weighting equal`), and on each task alone,
for `--steps` optimizer steps of 8 rows per task (from the first 8,000 training rows of each, as in
`configs/glue-silver-cpu.yaml`), evaluating every `--eval_steps` on the first 500 rows of each dev set
(WNLI has 71). Every
run is an ordinary `hf-mtl train` (its folder under OUTPUT_DIR/<pooling>/<run>); a finished run is skipped on
a second call, so an interrupted study resumes. Writes OUTPUT_DIR/pooling.md: each task's dev score at every
evaluation step, per pooling, multi-task and single-task, with the majority-class baselines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

TASKS = ("sst2", "mrpc", "stsb", "wnli", "entity_types")
#: The metric each table cell shows (the task's main metric) and the majority-class value on its dev set.
MAIN = {"sst2": "accuracy", "mrpc": "f1", "stsb": "pearson", "wnli": "accuracy", "entity_types": "f1_micro"}
MAJORITY = {"sst2": "0.530 (accuracy on the first 500 dev rows)", "mrpc": "0.812 (F1: all 'equivalent')", "stsb": "0 (Pearson)",
            "wnli": "0.563 (accuracy)", "entity_types": "0 (F1: no label predicted)"}


def task_entry(task: str, silver_dir: str) -> dict:
    if task != "entity_types":
        return {"glue": task}
    folder = Path(silver_dir) / "entity_types"
    return {"name": "entity_types", "kind": "multi_label", "train_file": str(folder / "train.jsonl"),
            "validation_file": str(folder / "dev.jsonl"), "text_columns": ["text"], "label_column": "labels"}


def run(folder: Path, tasks: list[str], pooling: str, args: argparse.Namespace) -> list[dict]:
    state = folder / "trainer_state.json"
    if not (folder / "eval_results.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        task_file = folder / "tasks.json"
        task_file.write_text(json.dumps([task_entry(t, args.silver_dir) for t in tasks]))
        command = [
            sys.executable, "-m", "hf_mtl.cli", "train", "--task_config", str(task_file), "--glue_dir", args.glue_dir,
            "--pooling", pooling, "--weighting", "equal", "--max_steps", str(args.steps), "--eval_strategy", "steps",
            "--eval_steps", str(args.eval_steps), "--save_strategy", "no", "--per_device_train_batch_size", "8",
            "--per_device_eval_batch_size", "128", "--learning_rate", "1e-4", "--warmup_steps", str(args.steps // 10),
            "--max_seq_length", "64", "--max_train_samples", str(args.max_train_samples),
            "--max_eval_samples", str(args.max_eval_samples), "--seed", str(args.seed), "--do_train", "--do_eval", "--report_to", "none",
            "--disable_tqdm", "true", "--log_level", "warning", "--logging_steps", "50", "--output_dir", str(folder),
            "--overwrite_output_dir",
        ]
        print("+", " ".join(command), flush=True)
        subprocess.run(command, check=True)
        (folder / "model.safetensors").unlink(missing_ok=True)
    return [entry for entry in json.loads(state.read_text())["log_history"] if any(k.endswith("_loss") and
                                                                                   k.startswith("eval_") for k in entry)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval_steps", type=int, default=100)
    parser.add_argument("--poolings", default="pooler,cls,mean")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max_train_samples", type=int, default=8000, help="the first N training rows of each task")
    parser.add_argument("--max_eval_samples", type=int, default=500, help="the first N dev rows of each task")
    parser.add_argument("--shard", default="0/1",
                        help="I/N: train only every N-th run from the I-th (0-based), so that N processes (e.g. with "
                        "OMP_NUM_THREADS=1 each) share the queue; a call with 0/1 then skips the finished runs and writes "
                        "the table")
    parser.add_argument("--silver_dir", default="../shared/data/silver")
    parser.add_argument("--glue_dir", default="../shared/data/glue")
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    out = Path(args.output_dir)
    rows: dict[tuple[str, str], dict[int, dict[str, float]]] = {}
    # Multi-task runs of every pooling first: they decide the default; then the single-task baselines.
    order = [(p, ("multi-task", tasks)) for p in args.poolings.split(",")]
    order += [(p, (f"single {t}", [t])) for p in args.poolings.split(",") for t in tasks]
    index, count = (int(part) for part in args.shard.split("/"))
    for position, (pooling, (label, run_tasks)) in enumerate(order):
        folder = out / pooling / label.replace(" ", "_")
        if position % count != index and not (folder / "eval_results.json").exists():
            continue  # another shard's run, not finished yet
        setup = "multi" if label == "multi-task" else "single"
        for entry in run(folder, run_tasks, pooling, args):
            for t in run_tasks:
                key = f"eval_{t}_{MAIN[t]}"
                if key in entry:
                    rows.setdefault((t, setup), {}).setdefault(int(entry["step"]), {})[pooling] = entry[key]
    poolings = args.poolings.split(",")
    steps = sorted({s for by_step in rows.values() for s in by_step})
    lines = [f"Command: `python {' '.join([os.path.relpath(__file__)] + sys.argv[1:])}`", "",
             "| task (metric) | setup | step | " + " | ".join(poolings) + " | majority class |",
             "|---|---|---|" + "---|" * len(poolings) + "---|"]
    for t in tasks:
        for setup in ("single", "multi"):
            for step in steps:
                values = rows.get((t, setup), {}).get(step, {})
                cells = [f"{values[p]:.3f}" if p in values else "–" for p in poolings]
                lines.append(f"| {t} ({MAIN[t]}) | {setup} | {step} | " + " | ".join(cells) + f" | {MAJORITY[t]} |")
    (out / "pooling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
