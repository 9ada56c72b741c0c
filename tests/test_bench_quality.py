"""`hf-mtl bench quality`: the grid, its resumption, and the numbers of its table.

The smoke run trains a tiny random BERT on real GLUE rows for a few steps per grid point (the real
sweep, `configs/quality-cpu.yaml`, is not part of the suite)."""

from __future__ import annotations

import json
import math
import re
import statistics

import pytest
from scipy import stats

from hf_mtl.bench.quality import (
    PARTIAL_FILE,
    RESULT_FILE,
    QualityConfig,
    _holm,
    _task_metrics,
    compare_to_reference,
    delta_m,
    markdown_report,
    parse_entry,
    parse_quality_args,
    summarize,
)
from hf_mtl.bench.tuned import TunedSearch, is_tuned, split_entry, weights_flag
from hf_mtl.cli import main
from hf_mtl.weighting import WEIGHTINGS


def test_grid_puts_equal_then_single_task_baselines_first_and_expands_all(tmp_path):
    config = tmp_path / "grid.yaml"
    config.write_text("tasks: sst2,stsb\nweightings: [geometric, 'power:gamma=-1', equal]\nseeds: [1, 2]\nmax_steps: 5\n")

    parsed = parse_quality_args([str(config), "--output_dir", str(tmp_path / "out"), "--learning_rate", "1e-4"])

    assert parsed.train_args == ["--max_steps", "5", "--learning_rate", "1e-4"]
    assert [(r.entry, r.seed) for r in parsed.grid()] == [
        ("equal", 1), ("equal", 2), ("single:sst2", 1), ("single:sst2", 2), ("single:stsb", 1), ("single:stsb", 2),
        ("geometric", 1), ("geometric", 2), ("power:gamma=-1", 1), ("power:gamma=-1", 2),
    ]
    power = parsed.grid()[-1]
    assert power.folder == "power_gamma=-1/seed2"
    assert power.train_flags() == ["--tasks", "sst2,stsb", "--weighting", "power", "--seed", "2", "--gamma", "-1"]
    assert parsed.grid()[2].train_flags()[:4] == ["--tasks", "sst2", "--weighting", "equal"]

    everything = QualityConfig(output_dir="x", weightings=["all"], single_task=False).entries()
    assert everything == [n for n in WEIGHTINGS if n != "static"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--weightings", "nope"], "unknown strategy 'nope'"),
        (["--weightings", "power:gamma"], "write NAME:key=value"),
        (["--weightings", "pcgrad+geometric"], "LOSS+GRADIENT"),
        (["--seeds", "1,x"], "--seeds"),
        (["--seed", "3"], "--seed: the grid sets it"),
    ],
)
def test_bad_grid_input_is_refused_before_anything_runs(tmp_path, argv, message):
    with pytest.raises(ValueError, match=message.replace("+", r"\+")):
        parse_quality_args(["--output_dir", str(tmp_path), *argv]).entries()


def test_a_bad_flag_of_one_grid_entry_stops_the_sweep_before_any_run(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["bench", "quality", "--output_dir", str(out), "--weightings", "equal,power:gama=2"]) == 2
    assert "--gama" in capsys.readouterr().err
    assert not (out / "runs").exists()


def test_output_dir_is_required():
    with pytest.raises(ValueError, match="--output_dir"):
        parse_quality_args(["--seeds", "1"])


def _result(entry, seed, **metrics):
    return {"entry": entry, "seed": seed, "wall_s": 10.0, "metrics": {f"eval_{k}": v for k, v in metrics.items()}}


def test_summary_numbers_single_task_row_and_paired_test():
    config = QualityConfig(output_dir="x", tasks=["sst2", "stsb"], seeds=[1, 2, 3])
    equal = [(0.80, 0.50, 0.40), (0.82, 0.60, 0.50), (0.78, 0.55, 0.45)]
    other = [(0.84, 0.52, 0.42), (0.85, 0.63, 0.55), (0.80, 0.57, 0.45)]
    results = []
    for seed, (e, o) in enumerate(zip(equal, other), start=1):
        results.append(_result("equal", seed, sst2_accuracy=e[0], stsb_pearson=e[1], stsb_spearmanr=e[2]))
        results.append(_result("geometric", seed, sst2_accuracy=o[0], stsb_pearson=o[1], stsb_spearmanr=o[2]))
        results.append(_result("single:sst2", seed, sst2_accuracy=0.7, sst2_loss=0.5, sst2_runtime=1.0))
        results.append(_result("single:stsb", seed, stsb_pearson=0.3, stsb_spearmanr=0.1))
    results.append({"entry": "mgda", "seed": 1, "wall_s": 1.0, "metrics": {}, "error": "FloatingPointError: nan"})

    report = summarize(results, config, command="hf-mtl bench quality --output_dir x")

    score = {name: [(a + (b + c) / 2) / 2 for a, b, c in rows] for name, rows in (("equal", equal), ("geometric", other))}
    assert [report["rows"]["equal"][s]["glue_score"] for s in (1, 2, 3)] == pytest.approx(score["equal"])
    single = report["rows"]["single-task"][2]
    assert single["metrics"] == {"sst2": {"accuracy": 0.7}, "stsb": {"pearson": 0.3, "spearmanr": 0.1}}  # no loss/runtime
    assert single["glue_score"] == pytest.approx((0.7 + 0.2) / 2) and single["wall_s"] == 20.0
    assert "mgda" not in report["rows"] and report["failures"] == ["mgda seed 1: FloatingPointError: nan"]

    delta, p, n = compare_to_reference(report, "geometric")
    diffs = [o - e for o, e in zip(score["geometric"], score["equal"])]
    assert delta == pytest.approx(statistics.mean(diffs)) and n == 3
    assert p == pytest.approx(stats.ttest_1samp(diffs, 0.0).pvalue)
    assert compare_to_reference(report, "equal") is None

    table = markdown_report(report)
    assert table.splitlines()[3] == "hf-mtl bench quality --output_dir x"
    row = next(line for line in table.splitlines() if line.startswith("| `geometric`"))
    mean, std = statistics.mean(score["geometric"]) * 100, statistics.stdev(score["geometric"]) * 100
    assert f"{mean:.1f} ± {std:.1f}" in row and f"{delta * 100:+.1f}" in row and f"{p:.2f}" in row
    assert "| sst2 accuracy | stsb pearson | stsb spearmanr |" in table
    assert "mgda seed 1: FloatingPointError" in table


def test_holm_keeps_only_differences_that_survive_the_correction():
    compared = {"a": (0.1, 0.001, 3), "b": (0.1, 0.02, 3), "c": (0.1, 0.04, 3), "d": (0.0, float("nan"), 1)}
    # thresholds for 3 tests: 0.05/3, 0.05/2, 0.05/1 -> a passes, b (0.02 <= 0.025) passes, c (0.04 <= 0.05) passes
    assert _holm(compared) == ["a", "b", "c"]
    assert _holm({"a": (0.1, 0.03, 3), "b": (0.1, 0.04, 3)}) == []  # 0.03 > 0.05 / 2: stops at the first


def test_bench_quality_smoke_resumes_and_skips_finished_runs(tmp_path, glue_dir, tiny_checkpoint):
    out = tmp_path / "sweep"
    common = ["bench", "quality", "--output_dir", str(out), "--tasks", "sst2,stsb", "--weightings", "equal,power:gamma=-1",
              "--model_name_or_path", tiny_checkpoint, "--glue_dir", str(glue_dir), "--max_train_samples", "32",
              "--max_eval_samples", "16", "--max_steps", "2", "--per_device_train_batch_size", "4",
              "--max_seq_length", "32"]
    # A run interrupted earlier: its wall time so far is kept and added to.
    partial = out / "runs" / "power_gamma=-1" / "seed1"
    partial.mkdir(parents=True)
    (partial / PARTIAL_FILE).write_text(json.dumps({"wall_s": 1000.0}))

    assert main([*common, "--seeds", "1"]) == 0

    runs = {p.parent.parent.name + "/" + p.parent.name: json.loads(p.read_text()) for p in out.glob(f"runs/*/*/{RESULT_FILE}")}
    assert set(runs) == {"equal/seed1", "single_sst2/seed1", "single_stsb/seed1", "power_gamma=-1/seed1"}
    assert runs["power_gamma=-1/seed1"]["resumed"] and runs["power_gamma=-1/seed1"]["wall_s"] > 1000
    assert not (partial / PARTIAL_FILE).exists()
    assert "--gamma -1" in runs["power_gamma=-1/seed1"]["command"]
    for result in runs.values():
        assert "error" not in result
        assert all(math.isfinite(v) for v in result["metrics"].values())
    assert set(runs["equal/seed1"]["metrics"]) >= {"eval_sst2_accuracy", "eval_stsb_pearson", "eval_glue_score"}
    assert not list(out.glob("runs/*/*/*.safetensors")) and not list(out.glob("runs/*/*/checkpoint-*"))
    first = {name: (out / "runs" / name / RESULT_FILE).stat().st_mtime_ns for name in runs}

    # A report of what has finished, while more seeds are pending: nothing trains.
    assert main([*common, "--seeds", "1,2", "--report_only"]) == 0
    assert not list(out.glob("runs/*/seed2"))
    assert "Not finished yet (4 runs; a row lists the seeds it has): equal seed 2, single:sst2 seed 2, " in \
        (out / "results.md").read_text()

    # More seeds: only the new grid points run; the finished ones are read back.
    assert main([*common, "--seeds", "1,2"]) == 0
    assert {name: (out / "runs" / name / RESULT_FILE).stat().st_mtime_ns for name in runs} == first
    assert len(list(out.glob(f"runs/*/*/{RESULT_FILE}"))) == 8
    table = (out / "results.md").read_text()
    assert "hf-mtl bench quality --output_dir" in table and "--seeds 1,2" in table and "Not finished" not in table
    for row in ("| `equal` |", "| `power:gamma=-1` |", "| single-task |"):
        assert row in table
    assert (out / "results.png").stat().st_size > 0
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 8


def test_runs_evaluated_during_training_get_their_dev_loss_curves(tmp_path, glue_dir, tiny_checkpoint):
    """Grid entries may set sampling flags; with --eval_strategy steps every task's dev loss over the steps is
    tabled (lowest, when, last, passes) and plotted, from the runs' own trainer_state.json."""
    out = tmp_path / "sweep"
    assert main(["bench", "quality", "--output_dir", str(out), "--tasks", "sst2,stsb", "--no_single_task",
                 "--weightings", "equal,equal:sampling_alpha=1", "--seeds", "1", "--model_name_or_path",
                 tiny_checkpoint, "--glue_dir", str(glue_dir), "--max_train_samples", "40", "--max_eval_samples", "16",
                 "--max_steps", "2", "--per_device_train_batch_size", "4", "--max_seq_length", "32",
                 "--eval_strategy", "steps", "--eval_steps", "1", "--logging_steps", "1"]) == 0
    from hf_mtl.plotting import load_log_history

    assert (out / "results_dev_loss.png").stat().st_size > 5000
    table = (out / "results.md").read_text()
    for row in ("equal", "equal:sampling_alpha=1"):
        history = load_log_history(out / "runs" / row.replace(":", "_") / "seed1")
        losses = [(h["step"], h["eval_stsb_loss"]) for h in history if "eval_stsb_loss" in h]
        assert [step for step, _ in losses] == [1, 2]
        step, lowest = min(losses, key=lambda x: x[1])
        passes = [h["epochs_stsb"] for h in history if "epochs_stsb" in h][-1]
        line = next(line for line in table.splitlines() if line.startswith(f"| `{row}` |") and "passes" in line)
        assert f"{lowest:.3f} ({step}) → {losses[-1][1]:.3f}; {passes:.2f} passes" in line
    assert "--sampling_alpha 1" in json.loads((out / "runs/equal_sampling_alpha=1/seed1" / RESULT_FILE).read_text())["command"]


# --------------------------------------------------------------------------------------------------
# The tuned weighted-sum baseline (`static:tuned`) and Δm


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6])
def test_tuned_candidates_start_at_equal_and_stay_within_the_stated_range(k):
    tasks = [f"t{i}" for i in range(k)]
    trials = TunedSearch(trials=12).candidates(tasks)
    assert len(trials) == 12 and trials[0] == {t: pytest.approx(1 / k, rel=1e-3) for t in tasks}
    for weights in trials:
        assert list(weights) == tasks and sum(weights.values()) == pytest.approx(1.0, abs=1e-3)
        assert max(weights.values()) / min(weights.values()) <= 100 * (1 + 1e-3)  # log10 w in [-1, 1] before rescaling
    assert len({tuple(w.values()) for w in trials}) == 12  # distinct draws
    assert TunedSearch(trials=12).candidates(tasks) == trials  # the same trials in every sweep
    assert TunedSearch(trials=3).candidates(tasks) == trials[:3]  # more trials extend the search


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("static:tuned:trials=0", "static:tuned:trials=0; give at least 1 trial"),
        ("static:tuned:trials=x", "trials takes a number"),
        ("static:tuned:holdout=100", "static:tuned:holdout=100.0; give the percentage"),
        ("static:tuned:task_weights=sst2=1", "the search chooses"),
    ],
)
def test_bad_tuned_entries_are_refused_before_anything_runs(tmp_path, entry, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_quality_args(["--output_dir", str(tmp_path), "--weightings", entry]).entries()


def test_tuned_entry_splits_search_options_from_train_options():
    search, rest = split_entry("static:tuned:trials=4:holdout=20:learning_rate=1e-4")
    assert search == TunedSearch(trials=4, holdout=20.0) and rest == ["learning_rate=1e-4"]
    assert parse_entry("static:tuned:trials=4:learning_rate=1e-4") == ("static", {"learning_rate": "1e-4"})
    assert is_tuned("static:tuned") and not is_tuned("static") and not is_tuned("equal:tuned")


def test_delta_m_exact_values_and_undefined_cases():
    baseline = {"sst2": {"accuracy": 0.8}, "stsb": {"pearson": 0.5, "spearmanr": 0.4}}
    metrics = {"sst2": {"accuracy": 0.88}, "stsb": {"pearson": 0.45, "spearmanr": 0.5}}
    # sst2: +10 %; stsb: mean(-10 %, +25 %) = +7.5 %; Δm = mean(10, 7.5) = 8.75 %
    assert delta_m(metrics, baseline) == pytest.approx(8.75)
    # A lower-is-better metric counts negatively; a negative baseline divides by its size.
    assert delta_m({"t": {"mse": 0.5}}, {"t": {"mse": 1.0}}) == pytest.approx(50.0)
    assert delta_m({"t": {"matthews_correlation": 0.1}}, {"t": {"matthews_correlation": -0.2}}) == pytest.approx(150.0)
    # Extreme scales: the measure is relative, so 1e-8 and 1e8 give the same gain.
    for scale in (1e-8, 1e8):
        assert delta_m({"t": {"f1": 1.5 * scale}}, {"t": {"f1": scale}}) == pytest.approx(50.0)
    assert math.isnan(delta_m(metrics, {"sst2": {"accuracy": 0.0}}))  # no relative gain over 0
    assert math.isnan(delta_m({"stsb": {"pearson": 0.5}}, baseline))  # a missing metric


def test_delta_m_column_is_measured_against_the_single_task_mean_per_seed():
    config = QualityConfig(output_dir="x", tasks=["sst2"], seeds=[1, 2])
    results = [_result("equal", 1, sst2_accuracy=0.66), _result("equal", 2, sst2_accuracy=0.72),
               _result("single:sst2", 1, sst2_accuracy=0.5), _result("single:sst2", 2, sst2_accuracy=0.7)]
    report = summarize(results, config, command="c")
    assert report["delta_m"]["equal"] == {1: pytest.approx(10.0), 2: pytest.approx(20.0)}  # vs the baseline 0.6
    assert report["delta_m"]["single-task"] == {1: pytest.approx(-100 / 6), 2: pytest.approx(100 / 6)}
    row = next(line for line in markdown_report(report).splitlines() if line.startswith("| `equal`"))
    assert "| 15.0 ± 7.1 |" in row
    assert summarize(results[:2], config, command="c")["delta_m"] == {}  # no single-task row, no Δm


def test_tuned_baseline_searches_on_held_out_training_rows_and_reuses_its_weights(tmp_path, glue_dir, tiny_checkpoint):
    out = tmp_path / "sweep"
    argv = ["bench", "quality", "--output_dir", str(out), "--tasks", "sst2,stsb", "--no_single_task",
            "--weightings", "equal,static:tuned:trials=3", "--seeds", "1,2", "--model_name_or_path", tiny_checkpoint,
            "--glue_dir", str(glue_dir), "--max_train_samples", "60", "--max_eval_samples", "16", "--max_steps", "2",
            "--per_device_train_batch_size", "4", "--max_seq_length", "32"]
    assert main(argv) == 0

    search = json.loads((out / "runs/static_tuned_trials=3/search.json").read_text())
    assert [t["weights"] for t in search["trials"]] == TunedSearch(trials=3).candidates(["sst2", "stsb"])
    assert search["seed"] == 1 and search["holdout_percent"] == 10
    trials = [json.loads((out / f"runs/static_tuned_trials=3/search/trial{i}" / RESULT_FILE).read_text())
              for i in range(3)]
    for trial, record in zip(trials, search["trials"]):
        assert "--validation_split_percentage 10" in trial["command"] and "--seed 1" in trial["command"]
        assert f"--task_weights {weights_flag(record['weights'])}" in trial["command"]
        metrics = _task_metrics(trial["metrics"], QualityConfig(output_dir="x", tasks=["sst2", "stsb"]).specs())
        assert record["score"] == pytest.approx((metrics["sst2"]["accuracy"] + (
            metrics["stsb"]["pearson"] + metrics["stsb"]["spearmanr"]) / 2) / 2)
    chosen = max(search["trials"], key=lambda t: t["score"])
    assert search["weights"] == chosen["weights"]
    # Held-out rows are not dev rows: the same model (equal's weights, seed 1) scores differently on them.
    equal = json.loads((out / "runs/equal/seed1" / RESULT_FILE).read_text())
    assert trials[0]["metrics"]["eval_sst2_accuracy"] != equal["metrics"]["eval_sst2_accuracy"] or \
        trials[0]["metrics"]["eval_stsb_pearson"] != equal["metrics"]["eval_stsb_pearson"]

    for seed in (1, 2):  # every seed trains on all training rows with the chosen weights, and is scored on dev
        final = json.loads((out / f"runs/static_tuned_trials=3/seed{seed}" / RESULT_FILE).read_text())
        assert f"--task_weights {weights_flag(chosen['weights'])}" in final["command"]
        assert "--validation_split_percentage" not in final["command"] and f"--seed {seed}" in final["command"]
    table = (out / "results.md").read_text()
    assert "## `static:tuned:trials=3`: the weight search" in table
    assert f"Chosen: trial {chosen['trial']}, `--task_weights {weights_flag(chosen['weights'])}`" in table
    assert f"Search cost: 3 runs, {search['wall_s']:.0f} s" in table
    report = json.loads((out / "results.json").read_text())
    tuned_walls = [r["wall_s"] for r in report["runs"] if r["entry"] == "static:tuned:trials=3"]
    row = next(line for line in table.splitlines() if line.startswith("| `static:tuned:trials=3` |"))
    assert row.rstrip(" |").endswith(f"| {statistics.mean(tuned_walls) + search['wall_s']:.0f}")  # search counted

    # Resumed: nothing retrains, the same weights are chosen.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob(f"runs/**/{RESULT_FILE}")}
    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob(f"runs/**/{RESULT_FILE}")} == stamps
    assert json.loads((out / "runs/static_tuned_trials=3/search.json").read_text())["weights"] == search["weights"]


def test_every_row_is_compared_with_the_tuned_weighted_sum_with_holm():
    config = QualityConfig(output_dir="x", tasks=["sst2"], seeds=[1, 2, 3])
    search = {"trials": [{"trial": 0, "weights": {"sst2": 1.0}, "score": 0.7, "wall_s": 5.0, "error": None}],
              "holdout_percent": 10.0, "seed": 1, "wall_s": 5.0, "weights": {"sst2": 1.0}}
    scores = {"equal": (0.60, 0.62, 0.61), "static:tuned": (0.70, 0.71, 0.69), "geometric": (0.71, 0.73, 0.70)}
    results = [{**_result(row, seed, sst2_accuracy=value), **({"tuned": search} if row == "static:tuned" else {})}
               for row, values in scores.items() for seed, value in enumerate(values, start=1)]
    table = markdown_report(summarize(results, config, command="c"))
    section = table.split("### Against `static:tuned`")[1]
    p_equal = stats.ttest_rel(scores["equal"], scores["static:tuned"]).pvalue
    p_geometric = stats.ttest_rel(scores["geometric"], scores["static:tuned"]).pvalue
    assert f"| `equal` | -9.0 | {p_equal:.2f} | yes | 3 |" in section  # p ≈ 0.002 < 0.05 / 2
    assert f"| `geometric` | +1.3 | {p_geometric:.2f} | no | 3 |" in section
    row = next(line for line in table.splitlines() if line.startswith("| `static:tuned` |"))
    assert row.endswith("| 3 | 15 |")  # 10 s of run + 5 s of search
