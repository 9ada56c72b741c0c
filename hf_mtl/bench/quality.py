"""`hf-mtl bench quality`: which weighting should I use? A grid of strategies × seeds on your tasks.

    hf-mtl bench quality [CONFIG.yaml] --output_dir DIR [--tasks sst2,mrpc,stsb,wnli]
        [--weightings equal,geometric,power:gamma=-1,static:tuned,...|all] [--seeds 1,2,3] [--no_single_task]
        [--keep_models] [--report_only] [any `hf-mtl train` flag: --max_steps 100 --learning_rate 1e-4 ...]

Every grid point is one ordinary `hf-mtl train --do_train --do_eval` run (same data, same model, same
flags) with its own `--weighting` and `--seed`, written to `DIR/runs/<strategy>/seed<k>/`. The
single-task baselines train the same encoder on each task alone (`DIR/runs/single_<task>/seed<k>/`);
their row combines, per seed, every task's own model into one GLUE score. A grid entry
`NAME:key=value` passes `--key value` to that run only (`power:gamma=-1` is the power mean with
γ = −1); `all` is every registered strategy that runs on its defaults (all but `static`).

Resumable: a finished run leaves `bench_result.json` and is skipped next time; an interrupted one
resumes from its last checkpoint (the flags decide the checkpoint schedule, e.g. `--save_steps 50`),
and its wall time adds up over the attempts. `--report_only` trains nothing and writes the results of the
runs finished so far (while the sweep goes on in another process, say), listing the others. A run that
fails (e.g. diverges under `--nan_policy raise`) records its error and the sweep goes on; delete its
folder to retry it.

The tuned weighted-sum baseline, `static:tuned` (`static:tuned:trials=8:holdout=10`, the defaults): a random
search over `--task_weights`, each trial a full run scored on held-out training rows (`--validation_split_percentage`),
never on dev; its best weights then train every seed (`hf_mtl.bench.tuned` has the details). Its row's time counts
the whole search, and `results.md` lists every trial and compares every row with it (Holm-corrected).

Results: `DIR/results.md` (per-task dev metrics and the GLUE score as mean ± standard deviation over
seeds, the difference to `equal` with a paired t-test over seeds, Δm, the mean relative gain over the
single-task models, as mean ± standard deviation over seeds, wall time per model; the exact command
at the top), `DIR/results.png` (GLUE score per strategy with error bars; per-task score differences to
`equal`) and `DIR/results.json` (every run). Runs that evaluate during training (`--eval_strategy steps`)
also get each task's dev loss over the steps: a table in results.md and `DIR/results_dev_loss.png`. Model
weights are deleted once a run is measured, unless `--keep_models`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shlex
import shutil
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .tuned import TUNED, TunedSearch, best_trial, is_tuned, split_entry, weights_flag

#: Written by every finished (or failed) run; its presence means "skip on resume".
RESULT_FILE = "bench_result.json"
#: Wall time of the attempts that were interrupted, so that a resumed run reports its whole time.
PARTIAL_FILE = "bench_partial.json"
#: The reference strategy every difference is taken against.
REFERENCE = "equal"
#: The row of the single-task models, which Δm is measured against.
SINGLE_TASK = "single-task"
#: Metric names (suffixes) where lower is better: their relative gain counts negatively in Δm.
LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "error")
#: `all` leaves out the strategies that cannot run on their defaults.
NOT_IN_ALL = ("static",)
#: Flags the grid sets per run; passing them as `hf-mtl train` flags would be ambiguous.
_GRID_FLAGS = ("--weighting", "--seed", "--output_dir")
#: Run defaults a flag or the config file can override.
_RUN_DEFAULTS = ["--do_train", "--do_eval", "--disable_tqdm", "true", "--report_to", "none", "--log_level", "warning"]


@dataclass(frozen=True)
class GridRun:
    """One point of the grid: a strategy entry (or `single:<task>`) and a seed."""

    entry: str
    seed: int
    tasks: tuple[str, ...]
    #: Each task as `--tasks` takes it: its name, or its task-file entry as JSON (default: the names).
    task_entries: tuple[str, ...] = ()

    @property
    def single_task(self) -> bool:
        return self.entry.startswith("single:")

    @property
    def folder(self) -> str:
        name = f"single_{self.entry[7:]}" if self.single_task else self.entry
        return re.sub(r"[^A-Za-z0-9_.+=-]", "_", name.replace(":", "_")) + f"/seed{self.seed}"

    def train_flags(self) -> list[str]:
        """The flags that make this grid point: tasks, weighting (+ its options) and seed."""
        entries = dict(zip(self.tasks, self.task_entries or self.tasks))
        if self.single_task:
            return ["--tasks", task_flag([entries[self.entry[7:]]]), "--weighting", REFERENCE, "--seed", str(self.seed)]
        name, options = parse_entry(self.entry)
        flags = ["--tasks", task_flag(list(entries.values())), "--weighting", name, "--seed", str(self.seed)]
        for key, value in options.items():
            flags += [f"--{key}", value]
        return flags


def task_flag(entries: Sequence[str]) -> str:
    """The `--tasks` value of a run: comma-separated names, or a JSON list when a task is a task-file entry."""
    if not any(e.startswith("{") for e in entries):
        return ",".join(entries)
    return json.dumps([json.loads(e) if e.startswith("{") else e for e in entries])


def parse_entry(entry: str) -> tuple[str, dict[str, str]]:
    """`power:gamma=-1:other=2` -> (`power`, {gamma: -1, other: 2}); `static:tuned:...` -> (`static`, its train
    options), its search options left to `tuned.split_entry`."""
    name, *pairs = entry.split(":")
    if is_tuned(entry):
        pairs = split_entry(entry)[1]
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise ValueError(
                f"--weightings: entry {entry!r} has option {pair!r}; write NAME:key=value, e.g. power:gamma=-1."
            )
        options[key.lstrip("-")] = value
    return name, options


@dataclass
class QualityConfig:
    """The grid of one `hf-mtl bench quality` run (see the module docstring). `tasks` are the task names;
    `task_entries` their task-file entries as JSON, when the task set is a task list (own tasks beside GLUE)."""

    output_dir: str
    tasks: list[str] = field(default_factory=lambda: ["sst2", "mrpc", "stsb", "wnli"])
    task_entries: list[str] = field(default_factory=list)
    weightings: list[str] = field(default_factory=lambda: ["all"])
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    single_task: bool = True
    keep_models: bool = False
    report_only: bool = False
    train_args: list[str] = field(default_factory=list)

    def entries(self) -> list[str]:
        from ..weighting import WEIGHTINGS
        from ..weighting.registry import validate_weighting_name

        entries: list[str] = []
        for entry in self.weightings:
            names = [n for n in WEIGHTINGS if n not in NOT_IN_ALL] if entry == "all" else [entry]
            for name in names:
                validate_weighting_name(parse_entry(name)[0])
                if name not in entries:
                    entries.append(name)
        # First, whether listed or not: every difference is taken against it.
        return [REFERENCE] + [e for e in entries if e != REFERENCE]

    def grid(self) -> list[GridRun]:
        """Strategy-major, in the order given (`equal` and the single-task baselines first): a sweep
        stopped early has every seed of its first strategies, which is what a comparison needs."""
        entries = self.entries()
        singles = [f"single:{t}" for t in self.tasks] if self.single_task else []
        entries = entries[:1] + singles + entries[1:]
        return [GridRun(entry, seed, tuple(self.tasks), tuple(self.task_entries)) for entry in entries
                for seed in self.seeds]

    def specs(self) -> list[Any]:
        """The tasks as `TaskSpec`s (for their evaluation keys)."""
        from ..task_file import parse_task_list

        return parse_task_list(task_flag(self.task_entries or self.tasks))


def _list(value: Any) -> list[str]:
    """`a,b c` or [`a,b`, `c`] -> [a, b, c]."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return [v.strip() for item in items for v in str(item).split(",") if v.strip()]


def _task_list(value: Any) -> tuple[list[str], list[str]]:
    """--tasks as given (names, or the JSON list a config's `tasks:` list of entries becomes): (names, entries
    as JSON; empty when every task is a plain name). The entries are checked here, before any run."""
    from ..task_file import parse_task_list

    items = value if isinstance(value, (list, tuple)) else [value]
    if len(items) == 1 and str(items[0]).strip().startswith("["):
        raw = json.loads(str(items[0]))
        names = [spec.name for spec in parse_task_list(raw)]
        return names, [json.dumps(item) if isinstance(item, Mapping) else str(item) for item in raw]
    names = _list(value)
    parse_task_list(",".join(names))
    return names, []


def _int_list(value: Any) -> list[int]:
    try:
        return [int(v) for v in _list(value)]
    except ValueError as error:
        raise ValueError(f"--seeds: {value!r} is not a list of integers; write e.g. --seeds 1,2,3.") from error


def _bool(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not a boolean; write true or false")


def quality_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-mtl bench quality",
        allow_abbrev=False,  # `--seed` is a train flag the grid refuses, not an abbreviation of --seeds
        description="Grid of weighting strategies x seeds (plus single-task baselines) on a task set: a Markdown "
        "table and a plot of dev metrics. Unknown flags go to every `hf-mtl train` run.",
        usage="hf-mtl bench quality [CONFIG.yaml|CONFIG.json] [flags] [hf-mtl train flags]",
        epilog="CONFIG: a YAML/JSON file holding any of the flags below plus any `hf-mtl train` flag; flags "
        "given on the command line override it.",
    )
    parser.add_argument("--output_dir", help="sweep folder: runs/, results.md, results.png, results.json")
    parser.add_argument("--tasks", nargs="+", help="task set (default sst2,mrpc,stsb,wnli)")
    parser.add_argument("--weightings", nargs="+",
                        help="grid entries (comma- or space-separated), NAME or NAME:key=value, or `all` (default); "
                        "static:tuned[:trials=8:holdout=10] is a weighted sum with weights chosen by a random search "
                        "scored on held-out training rows (its cost counted)")
    parser.add_argument("--seeds", nargs="+", help="seeds, comma- or space-separated (default 1,2,3)")
    parser.add_argument("--single_task", type=_bool, nargs="?", const=True, help="also train each task alone (default true)")
    parser.add_argument("--no_single_task", dest="single_task", action="store_false", help="skip the single-task baselines")
    parser.add_argument("--keep_models", type=_bool, nargs="?", const=True, help="keep each run's weights and checkpoints")
    parser.add_argument("--report_only", type=_bool, nargs="?", const=True,
                        help="train nothing: write the results of the runs finished so far (e.g. while the sweep "
                        "runs in another process); the others are listed as not finished")
    return parser


def parse_quality_args(argv: Sequence[str]) -> QualityConfig:
    """Flags over config-file values over defaults; every flag the parser does not know is a train flag."""
    from ..arguments import config_to_argv

    argv = list(argv)
    config_file = argv.pop(0) if argv and not argv[0].startswith("-") else None
    args, train_args = quality_parser().parse_known_args(argv)
    values: dict[str, Any] = {}
    if config_file:
        file_args, file_train_args = quality_parser().parse_known_args(config_to_argv(config_file))
        values.update({k: v for k, v in vars(file_args).items() if v is not None})
        train_args = file_train_args + train_args
    values.update({k: v for k, v in vars(args).items() if v is not None})
    if not values.get("output_dir"):
        raise ValueError("--output_dir: missing; give the sweep folder, e.g. --output_dir out/quality.")
    for flag in _GRID_FLAGS:
        if flag in train_args or any(a.startswith(flag + "=") for a in train_args):
            raise ValueError(
                f"{flag}: the grid sets it for every run; use --weightings, --seeds and --output_dir of bench quality."
            )
    config = QualityConfig(output_dir=values["output_dir"], train_args=list(train_args))
    if "tasks" in values:
        config.tasks, config.task_entries = _task_list(values["tasks"])
    if "weightings" in values:
        config.weightings = _list(values["weightings"])
    if "seeds" in values:
        config.seeds = _int_list(values["seeds"])
    for key in ("single_task", "keep_models", "report_only"):
        if key in values:
            setattr(config, key, bool(values[key]))
    if not config.seeds:
        raise ValueError("--seeds: empty; give at least one seed, e.g. --seeds 1,2,3.")
    return config


def run_one(run: GridRun, config: QualityConfig, extra: Sequence[str] = (), folder: Path | None = None
            ) -> dict[str, Any] | None:
    """Train and evaluate one grid point (or resume it), record its result, free its disk. `extra`: flags after the
    grid point's own (a tuned entry's weights, a search trial's held-out split); `folder`: instead of the grid's.
    None for a run not finished yet under `--report_only`."""
    from ..pipeline import train

    folder = folder or Path(config.output_dir) / "runs" / run.folder
    result_path = folder / RESULT_FILE
    if result_path.exists():
        return json.loads(result_path.read_text())
    if config.report_only:
        return None
    partial_path = folder / PARTIAL_FILE
    earlier = json.loads(partial_path.read_text())["wall_s"] if partial_path.exists() else 0.0
    argv = _RUN_DEFAULTS + config.train_args + run.train_flags() + list(extra) + ["--output_dir", str(folder)]
    start = time.perf_counter()
    result: dict[str, Any] = {**asdict(run), "command": "hf-mtl train " + shlex.join(argv), "resumed": earlier > 0}
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with open(folder / "train.log", "a", buffering=1) as log, contextlib.redirect_stdout(log):  # line by line
            metrics = train(argv)
    except (KeyboardInterrupt, SystemExit):
        partial_path.write_text(json.dumps({"wall_s": earlier + time.perf_counter() - start}))
        raise
    except Exception as error:  # noqa: BLE001  (a diverged or broken run is a result of the sweep, not its end)
        result["error"] = f"{type(error).__name__}: {error}"
        metrics = {}
    result["wall_s"] = earlier + time.perf_counter() - start
    result["metrics"] = {k: float(v) for k, v in metrics.items() if k.startswith("eval_") and isinstance(v, (int, float))}
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, result_path)
    partial_path.unlink(missing_ok=True)
    if not config.keep_models:
        for path in folder.iterdir():
            if path.name.startswith("checkpoint-"):
                shutil.rmtree(path)
            elif path.suffix in (".safetensors", ".bin", ".pt"):
                path.unlink()
    return result


def run_quality(config: QualityConfig, argv: Sequence[str] = (), progress: bool = True) -> dict[str, Any]:
    """Run (or finish) the whole grid, then write results.md, results.png and results.json."""
    import datasets
    from tqdm.auto import tqdm

    from ..arguments import parse_train_args

    grid = config.grid()
    # Bad train flags (shared, or one entry's `NAME:key=value`) fail here, before the first run, not after an
    # hour of sweeping.
    for run in {run.entry: run for run in grid}.values():
        extra = []
        if is_tuned(run.entry):
            search = split_entry(run.entry)[0]
            extra = _trial_flags(run, search.candidates(run.tasks)[0], search)
        parse_train_args(_RUN_DEFAULTS + config.train_args + run.train_flags() + extra + ["--output_dir", config.output_dir])
    datasets.disable_progress_bars()
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    results, pending = [], []
    searches: dict[str, dict[str, Any] | None] = {}  # one search per tuned entry, shared by its seeds
    with tqdm(grid, desc="bench quality", unit="run", disable=not progress or config.report_only,
              file=sys.stderr) as bar:
        for run in bar:
            bar.set_postfix_str(f"{run.entry} seed {run.seed}")
            result = run_tuned(run, config, searches, bar) if is_tuned(run.entry) else run_one(run, config)
            if result is None:
                pending.append(f"{run.entry} seed {run.seed}")
            else:
                results.append(result)
    report = summarize(results, config, command="hf-mtl bench quality " + shlex.join(argv))
    report["pending"] = pending
    out = Path(config.output_dir)
    (out / "results.json").write_text(json.dumps({"command": report["command"], "runs": results}, indent=2))
    (out / "results.md").write_text(markdown_report(report))
    plot_report(report, out / "results.png")
    if report["curves"]:
        plot_dev_losses(report, out / "results_dev_loss.png")
    return report


def _trial_flags(run: GridRun, weights: Mapping[str, float], search: TunedSearch) -> list[str]:
    """The flags of a search trial of `run` beside the grid point's own."""
    return ["--task_weights", weights_flag(weights), "--validation_split_percentage", f"{search.holdout:g}"]


def run_search(run: GridRun, config: QualityConfig, bar: Any = None) -> dict[str, Any] | None:
    """The random search of a `static:tuned` entry (`tuned`), run or resumed: every trial trains with the grid's
    first seed on the training rows minus the held-out ones and is scored on those. Returns the search record
    (trials with weights, held-out score, wall time; the chosen weights; the total wall time), also written to
    `runs/<entry>/search.json`. None under `--report_only` until every trial has finished."""
    search, _ = split_entry(run.entry)
    first = GridRun(run.entry, config.seeds[0], run.tasks, run.task_entries)
    base = Path(config.output_dir) / "runs" / run.folder.rsplit("/", 1)[0] / "search"
    specs = config.specs()
    trials = []
    for index, weights in enumerate(search.candidates(run.tasks)):
        if bar is not None:
            bar.set_postfix_str(f"{run.entry} search trial {index + 1}/{search.trials}")
        result = run_one(first, config, _trial_flags(first, weights, search), folder=base / f"trial{index}")
        if result is None:  # --report_only, the search not finished yet
            return None
        score = None if result.get("error") else macro_score(_task_metrics(result["metrics"], specs), run.tasks)
        trials.append({"trial": index, "weights": weights, "score": score, "wall_s": result["wall_s"],
                       "error": result.get("error")})
    record = {"trials": trials, "holdout_percent": search.holdout, "seed": first.seed,
              "wall_s": sum(t["wall_s"] for t in trials)}
    record["weights"] = dict(best_trial(trials)["weights"])
    (base.parent / "search.json").write_text(json.dumps(record, indent=2))
    return record


def run_tuned(run: GridRun, config: QualityConfig, searches: dict[str, Any], bar: Any = None) -> dict[str, Any] | None:
    """A `static:tuned` grid point: the search (run once per entry and kept in `searches` for its other seeds), then
    this seed's run with the chosen weights on all training rows, evaluated on dev. Its result records the search
    (None: not finished, `--report_only`)."""
    try:
        if run.entry not in searches:
            searches[run.entry] = run_search(run, config, bar)
        search = searches[run.entry]
    except RuntimeError as error:
        return {**asdict(run), "error": str(error), "wall_s": 0.0, "metrics": {}}
    if search is None:
        return None
    if bar is not None:
        bar.set_postfix_str(f"{run.entry} seed {run.seed}")
    result = run_one(run, config, ["--task_weights", weights_flag(search["weights"])])
    return None if result is None else {**result, TUNED: search}


# --------------------------------------------------------------------------------------------------
# Summaries


def _task_metrics(metrics: Mapping[str, float], specs: Sequence[Any]) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} from the `eval_<key>_<metric>` keys of a run; a task evaluated on several
    splits (MNLI matched and mismatched) gets the mean over its splits, as its GLUE score does."""
    from ..plotting import EVAL_BOOKKEEPING

    keys = {key: spec.name for spec in specs for key in spec.eval_keys().values()}
    found: dict[str, dict[str, list[float]]] = {}
    for name, value in metrics.items():
        for key, task in keys.items():
            metric = name.removeprefix(f"eval_{key}_")
            if metric != name and metric not in EVAL_BOOKKEEPING:
                found.setdefault(task, {}).setdefault(metric, []).append(value)
    return {task: {m: sum(v) / len(v) for m, v in ms.items()} for task, ms in found.items()}


def summarize(results: Sequence[Mapping[str, Any]], config: QualityConfig, command: str) -> dict[str, Any]:
    """Per strategy: per-seed task metrics, task scores and GLUE score; the single-task runs of one
    seed are combined into one `single-task` row."""
    from ..metrics import glue_score, score_name, task_score

    tasks, specs = list(config.tasks), config.specs()
    per_seed: dict[str, dict[int, dict[str, Any]]] = {}
    failures: list[str] = []
    searches: dict[str, Any] = {}
    for result in results:
        if result.get("error"):
            failures.append(f"{result['entry']} seed {result['seed']}: {result['error']}")
            continue
        metrics = _task_metrics(result["metrics"], specs)
        row = SINGLE_TASK if result["entry"].startswith("single:") else result["entry"]
        cell = per_seed.setdefault(row, {}).setdefault(result["seed"], {"metrics": {}, "wall_s": 0.0})
        cell["metrics"].update(metrics)
        # A tuned row's model costs its run and the whole search that chose its weights.
        cell["wall_s"] += result["wall_s"] + result.get(TUNED, {}).get("wall_s", 0.0)
        if TUNED in result:
            searches[row] = result[TUNED]
    rows = {}
    for row, seeds in per_seed.items():
        complete = {s: c for s, c in seeds.items() if all(t in c["metrics"] for t in tasks)}
        if not complete:
            continue
        for cell in complete.values():
            cell["task_scores"] = {t: task_score(cell["metrics"][t]) for t in tasks}
            cell["glue_score"] = glue_score(cell["task_scores"])
        rows[row] = complete
    report = {"command": command, "tasks": tasks, "seeds": list(config.seeds), "rows": rows, "failures": failures,
              "score_label": "GLUE score" if score_name(specs) == "glue_score" else "Macro score",
              "metric_names": {t: sorted({m for r in rows.values() for c in r.values() for m in c["metrics"][t]}) for t in tasks}}
    report["comparisons"] = {row: c for row in rows if (c := compare_to_reference(report, row))}
    report["delta_m"] = delta_m_by_seed(rows)
    report["searches"] = searches
    report["curves"] = dev_loss_curves(results, config)
    return report


def macro_score(metrics: Mapping[str, Mapping[str, float]], tasks: Sequence[str]) -> float | None:
    """The GLUE (macro) score of one search trial's {task: {metric: value}}, as `summarize` scores a row: the mean
    over `tasks` of each task's mean metric; None when a task has no metric."""
    from ..metrics import glue_score, task_score

    if not all(metrics.get(t) for t in tasks):
        return None
    return glue_score({t: task_score(metrics[t]) for t in tasks})


def delta_m(metrics: Mapping[str, Mapping[str, float]], baseline: Mapping[str, Mapping[str, float]]) -> float:
    """Δm in %, the multi-task performance measure of Maninis et al. (CVPR 2019) as LibMTL reports it: the mean over
    tasks of the mean over the task's metrics of the relative gain over the single-task model,
    Δm = 100/T Σ_t 1/N_t Σ_i s_i (M_t,i − B_t,i) / |B_t,i| (s_i = −1 for a lower-is-better metric, else +1).
    NaN when a baseline metric is 0 (no relative gain is defined) or a metric is missing."""
    gains = []
    for task, base in baseline.items():
        task_gains = []
        for name, b in base.items():
            value = metrics.get(task, {}).get(name)
            if value is None or b == 0:
                return math.nan
            sign = -1.0 if any(name.endswith(suffix) for suffix in LOWER_IS_BETTER) else 1.0
            task_gains.append(sign * (value - b) / abs(b))
        gains.append(statistics.mean(task_gains))
    return 100.0 * statistics.mean(gains)


def delta_m_by_seed(rows: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> dict[str, dict[int, float]]:
    """{row: {seed: Δm}} of every row against the single-task row's metrics averaged over its seeds (the
    single-task row itself too: its spread around 0 is the seed noise of the baseline). Empty without it."""
    single = rows.get(SINGLE_TASK)
    if not single:
        return {}
    baseline = {task: {name: statistics.mean(c["metrics"][task][name] for c in single.values())
                       for name in next(iter(single.values()))["metrics"][task]}
                for task in next(iter(single.values()))["metrics"]}
    return {row: {seed: delta_m(cell["metrics"], baseline) for seed, cell in seeds.items()} for row, seeds in rows.items()}


def dev_loss_curves(results: Sequence[Mapping[str, Any]], config: QualityConfig) -> dict[str, dict[str, Any]]:
    """Per multi-task row with evaluations during training (`--eval_strategy steps`): each task's dev loss over
    the steps (mean over seeds) and its passes over the training rows at the end (`epochs_<task>`), read from
    the runs' `trainer_state.json`. Empty when no run evaluated more than once."""
    from ..plotting import load_log_history

    runs: dict[str, list[list[dict[str, Any]]]] = {}
    for result in results:
        folder = Path(config.output_dir) / "runs" / GridRun(result["entry"], result["seed"], tuple(config.tasks)).folder
        if result.get("error") or result["entry"].startswith("single:") or not (folder / "trainer_state.json").is_file():
            continue
        runs.setdefault(result["entry"], []).append(load_log_history(folder))
    curves: dict[str, dict[str, Any]] = {}
    for row, histories in runs.items():
        per_task: dict[str, Any] = {}
        for task in config.tasks:
            by_step: dict[int, list[float]] = {}
            passes = []
            for history in histories:
                for entry in history:
                    if f"eval_{task}_loss" in entry:
                        by_step.setdefault(int(entry["step"]), []).append(float(entry[f"eval_{task}_loss"]))
                last = [e[f"epochs_{task}"] for e in history if f"epochs_{task}" in e]
                if last:
                    passes.append(float(last[-1]))
            steps = sorted(s for s, v in by_step.items() if len(v) == len(histories))
            if len(steps) > 1:
                per_task[task] = {"steps": steps, "loss": [statistics.mean(by_step[s]) for s in steps],
                                  "passes": statistics.mean(passes) if passes else math.nan}
        if per_task:
            curves[row] = per_task
    return curves


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN for a single value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def _fmt(values: Sequence[float], scale: float = 100.0) -> str:
    mean, std = _mean_std([v * scale for v in values])
    return f"{mean:.1f}" if math.isnan(std) else f"{mean:.1f} ± {std:.1f}"


def compare_to_reference(report: Mapping[str, Any], row: str, reference_row: str = REFERENCE
                         ) -> tuple[float, float, int] | None:
    """(mean difference of the GLUE score to `reference_row`'s (`equal`), paired t-test p-value, seeds paired),
    or None."""
    from scipy import stats

    reference, other = report["rows"].get(reference_row), report["rows"].get(row)
    if row == reference_row or not reference or not other:
        return None
    seeds = sorted(set(reference) & set(other))
    diffs = [other[s]["glue_score"] - reference[s]["glue_score"] for s in seeds]
    if not diffs:
        return None
    p = float(stats.ttest_rel([other[s]["glue_score"] for s in seeds], [reference[s]["glue_score"] for s in seeds]).pvalue) \
        if len(seeds) > 1 else float("nan")
    return sum(diffs) / len(diffs), p, len(seeds)


def markdown_report(report: Mapping[str, Any]) -> str:
    """The results table, with the command on top and a one-paragraph reading of it below."""
    tasks = report["tasks"]
    columns = [(t, m) for t in tasks for m in report["metric_names"][t]]
    score = report.get("score_label", "GLUE score")
    lines = [
        "# Weighting strategies compared (`hf-mtl bench quality`)",
        "",
        "```",
        report["command"],
        "```",
        "",
        (f"Dev metrics ×100, mean ± standard deviation over seeds {', '.join(map(str, report['seeds']))}. "
         f"{score}: mean over tasks of each task's mean metric. Δ: {score} difference to `{REFERENCE}` "
         "with the same seed (same data order), averaged; p: paired t-test over seeds (uncorrected for the "
         "number of strategies). Δm: mean relative gain (%) over the single-task models' metrics (averaged over "
         "their seeds), per seed, then mean ± standard deviation (Maninis et al. 2019, as LibMTL reports it). "
         "`single-task`: each task trained alone with the same flags, one model per task. "
         "Time: wall seconds to get one model of the row (single-task: all its task runs; `static:tuned`: its run "
         "plus the whole weight search)."),
        "",
        "| strategy | " + " | ".join(f"{t} {m}" for t, m in columns) + f" | {score} | Δ vs equal | p | Δm % | seeds | "
        "time (s) |",
        "|---|" + "---:|" * (len(columns) + 6),
    ]
    best = max(report["rows"], key=lambda r: _mean_std([c["glue_score"] for c in report["rows"][r].values()])[0],
               default=None)
    for row, seeds in report["rows"].items():
        cells = [_fmt([c["metrics"][t][m] for c in seeds.values() if m in c["metrics"][t]]) for t, m in columns]
        value = _fmt([c["glue_score"] for c in seeds.values()])
        comparison = report["comparisons"].get(row)
        delta = f"{comparison[0] * 100:+.1f}" if comparison else "–"
        p = f"{comparison[1]:.2f}" if comparison and not math.isnan(comparison[1]) else "–"
        gains = list(report.get("delta_m", {}).get(row, {}).values())
        dm = _fmt(gains, scale=1.0) if gains and not any(math.isnan(g) for g in gains) else "–"
        time_s = _mean_std([c["wall_s"] for c in seeds.values()])[0]
        name = f"`{row}`" if row != SINGLE_TASK else SINGLE_TASK
        if row == best:
            value = f"**{value}**"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {value} | {delta} | {p} | {dm} | {len(seeds)} | "
                     f"{time_s:.0f} |")
    lines += ["", reading(report)]
    for row, search in report.get("searches", {}).items():
        lines += _search_table(row, search, score)
        if row in report["rows"]:
            lines += _against_tuned(report, row, score)
    if report["failures"]:
        lines += ["", "Failed runs (not in the table):", ""] + [f"- {f}" for f in report["failures"]]
    if report.get("pending"):
        lines += ["", f"Not finished yet ({len(report['pending'])} runs; a row lists the seeds it has): "
                  + ", ".join(report["pending"]) + "."]
    lines += ["", f"![{score} per strategy and per-task differences to equal](results.png)", ""]
    if report.get("curves"):
        lines += _dev_loss_table(report)
    return "\n".join(lines)


def _search_table(row: str, search: Mapping[str, Any], score: str) -> list[str]:
    """The weight search of a tuned row: every trial's weights and held-out score, the chosen one, the cost."""
    trials = search["trials"]
    tasks = list(trials[0]["weights"])
    chosen = best_trial(trials)["trial"]
    lines = ["", f"## `{row}`: the weight search", "",
             (f"Random search (`hf_mtl/bench/tuned.py`): {len(trials)} trials, each a full run with seed {search['seed']} "
              f"on the training rows minus a held-out {search['holdout_percent']:g}% of them, scored by the {score} "
              "on those held-out rows (never on dev). Trial 0 is `equal`'s weights; the others draw log10 w uniformly "
              "in [−1, 1], rescaled to sum to 1. "
              f"Chosen: trial {chosen}, `--task_weights {weights_flag(trials[chosen]['weights'])}`. Search cost: "
              f"{len(trials)} runs, {search['wall_s']:.0f} s of wall time, counted in the row's time."), "",
             "| trial | " + " | ".join(f"w {t}" for t in tasks) + f" | held-out {score} | time (s) |",
             "|---:|" + "---:|" * (len(tasks) + 2)]
    for trial in trials:
        value = "failed" if trial["score"] is None else f"{trial['score'] * 100:.1f}"
        if trial["trial"] == chosen:
            value = f"**{value}**"
        lines.append(f"| {trial['trial']} | " + " | ".join(f"{trial['weights'][t]:.3g}" for t in tasks)
                     + f" | {value} | {trial['wall_s']:.0f} |")
    return [*lines, ""]


def _against_tuned(report: Mapping[str, Any], tuned: str, score: str) -> list[str]:
    """Every other multi-task row against the tuned weighted sum: does a method beat a tuned static weighting?"""
    compared = {row: c for row in report["rows"] if row not in (tuned, SINGLE_TASK)
                if (c := compare_to_reference(report, row, tuned))}
    if not compared:
        return []
    holm = _holm(compared)
    lines = [f"### Against `{tuned}`", "",
             (f"{score} difference to the tuned weighted sum with the same seed, averaged; p: paired t-test over seeds; "
              f"Holm: whether it survives Holm's correction for the {len(compared)} comparisons of this table."), "",
             "| strategy | Δ | p | Holm | seeds |", "|---|---:|---:|---|---:|"]
    for row, (delta, p, n) in compared.items():
        p_text = "–" if math.isnan(p) else f"{p:.2f}"
        kept = "–" if math.isnan(p) else ("yes" if row in holm else "no")
        lines.append(f"| `{row}` | {delta * 100:+.1f} | {p_text} | {kept} | {n} |")
    return [*lines, ""]


def _dev_loss_table(report: Mapping[str, Any]) -> list[str]:
    """Does a task overfit? Its lowest dev loss (and when), its last one, and its passes over the training rows."""
    tasks = [t for t in report["tasks"] if any(t in c for c in report["curves"].values())]
    lines = ["## Dev loss over training", "",
             ("Each task's dev loss at its lowest (at step) → at the last evaluation, and the passes over its training "
              "rows by the end (mean over seeds). A last loss well above the lowest: the task overfits."), "",
             "| strategy | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for row, per_task in report["curves"].items():
        cells = []
        for task in tasks:
            curve = per_task.get(task)
            if curve is None:
                cells.append("–")
                continue
            best = min(range(len(curve["loss"])), key=curve["loss"].__getitem__)
            cells.append(f"{curve['loss'][best]:.3f} ({curve['steps'][best]}) → {curve['loss'][-1]:.3f}; "
                         f"{curve['passes']:.2f} passes")
        lines.append(f"| `{row}` | " + " | ".join(cells) + " |")
    return lines + ["", "![Dev loss of every task over the steps, per strategy](results_dev_loss.png)", ""]


def plot_dev_losses(report: Mapping[str, Any], path: Path) -> None:
    """One panel per task: its dev loss over the steps, a line per row of the grid."""
    from ..plotting import require_matplotlib

    Figure = require_matplotlib()
    tasks = [t for t in report["tasks"] if any(t in c for c in report["curves"].values())]
    figure = Figure(figsize=(4.2 * len(tasks), 3.6), layout="constrained")
    for ax, task in zip(figure.subplots(1, len(tasks), squeeze=False)[0], tasks):
        for row, per_task in report["curves"].items():
            if task in per_task:
                ax.plot(per_task[task]["steps"], per_task[task]["loss"], marker="o", markersize=3, label=row)
        ax.set_title(f"{task}: dev loss")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    figure.axes[0].legend(fontsize="x-small")
    figure.savefig(path, dpi=110)


def reading(report: Mapping[str, Any]) -> str:
    """What the table says, in one paragraph computed from it (not a judgement written in advance)."""
    compared = report["comparisons"]
    if not compared:
        return f"Only `{REFERENCE}` (or nothing) finished: nothing to compare yet."
    significant = sorted(r for r, (_, p, _) in compared.items() if p < 0.05)
    holm = _holm(compared)
    spread = _mean_std([c["glue_score"] * 100 for c in report["rows"][REFERENCE].values()])[1]
    best = max(compared, key=lambda r: compared[r][0])
    worst = min(compared, key=lambda r: compared[r][0])
    spread_text = "" if math.isnan(spread) else f" (seed standard deviation {spread:.1f} points)"
    text = (f"Against `{REFERENCE}`{spread_text}, the differences range from "
            f"{compared[worst][0] * 100:+.1f} (`{worst}`) to {compared[best][0] * 100:+.1f} (`{best}`). ")
    gains = {row: statistics.mean(v.values()) for row, v in report.get("delta_m", {}).items()
             if row != SINGLE_TASK and v and not any(math.isnan(g) for g in v.values())}
    if gains:
        above = sorted(row for row, g in gains.items() if g > 0)
        text += (f"Against the single-task models, Δm ranges from {min(gains.values()):+.1f} % to "
                 f"{max(gains.values()):+.1f} %; " + (f"above 0 (better than training each task alone): "
                 f"{', '.join(f'`{r}`' for r in above)}. " if above else "no multi-task row is above 0. "))
    if all(math.isnan(p) for _, p, _ in compared.values()):
        text += "With one seed there is no test of significance; run more seeds (--seeds 1,2,3)."
    elif not significant:
        text += "No strategy differs from `equal` at p < 0.05 (paired t-test over seeds): no significant difference."
    else:
        text += (f"At p < 0.05 uncorrected: {', '.join(f'`{r}` ({compared[r][0] * 100:+.1f})' for r in significant)}; "
                 f"after Holm's correction for {len(compared)} comparisons: "
                 f"{', '.join(f'`{r}`' for r in holm) if holm else 'none'}.")
    return text


def _holm(compared: Mapping[str, tuple[float, float, int]], alpha: float = 0.05) -> list[str]:
    """Rows whose difference survives Holm's step-down correction."""
    ordered = sorted((p, r) for r, (_, p, _) in compared.items() if not math.isnan(p))
    kept = []
    for i, (p, row) in enumerate(ordered):
        if p > alpha / (len(ordered) - i):
            break
        kept.append(row)
    return sorted(kept)


def plot_report(report: Mapping[str, Any], path: Path) -> None:
    """Left: GLUE score per strategy (mean ± std, seeds as dots); right: per-task score − equal's."""
    from ..plotting import require_matplotlib

    Figure = require_matplotlib()
    rows = list(report["rows"])
    tasks = report["tasks"]
    if not rows:
        return
    figure = Figure(figsize=(13, 0.35 * len(rows) + 1.8))
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    for y, row in enumerate(rows):
        scores = [c["glue_score"] * 100 for c in report["rows"][row].values()]
        mean, std = _mean_std(scores)
        left.errorbar(mean, y, xerr=0 if math.isnan(std) else std, fmt="o", color="C0" if row != SINGLE_TASK else "C1",
                      capsize=3)
        left.scatter(scores, [y] * len(scores), s=8, color="grey", zorder=3)
    if REFERENCE in report["rows"]:
        left.axvline(_mean_std([c["glue_score"] * 100 for c in report["rows"][REFERENCE].values()])[0],
                     color="C0", linestyle=":", linewidth=1)
    left.set_yticks(range(len(rows)), rows)
    left.invert_yaxis()
    left.set_xlabel(f"{report.get('score_label', 'GLUE score')} ×100 (mean ± std over seeds; dots: seeds)")
    deltas = [[_delta(report, row, t) for t in tasks] for row in rows]
    finite = [abs(v) for r in deltas for v in r if not math.isnan(v)]
    limit = max(finite, default=1.0) or 1.0
    image = right.imshow(deltas, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    for y, values in enumerate(deltas):
        for x, value in enumerate(values):
            if not math.isnan(value):
                right.text(x, y, f"{value:+.1f}", ha="center", va="center", fontsize=7)
    right.set_xticks(range(len(tasks)), tasks)
    right.set_yticks(range(len(rows)), [""] * len(rows))
    right.set_title(f"task score − {REFERENCE}'s (×100, mean over seeds)", fontsize=9)
    figure.colorbar(image, ax=right, shrink=0.6)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _delta(report: Mapping[str, Any], row: str, task: str) -> float:
    reference = report["rows"].get(REFERENCE)
    if not reference:
        return float("nan")
    seeds = sorted(set(reference) & set(report["rows"][row]))
    diffs = [report["rows"][row][s]["task_scores"][task] - reference[s]["task_scores"][task] for s in seeds]
    return 100 * sum(diffs) / len(diffs) if diffs else float("nan")


def main(argv: Sequence[str]) -> int:
    """`hf-mtl bench quality [flags]`."""
    import logging

    logging.basicConfig(level=logging.WARNING)  # before `train` sets INFO: one line per run is enough here
    config = parse_quality_args(argv)
    report = run_quality(config, argv)
    print(markdown_report(report))
    print(f"\nWritten: {Path(config.output_dir) / 'results.md'}, results.png, results.json")
    return 0
