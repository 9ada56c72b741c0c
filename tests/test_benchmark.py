"""`hf-mtl bench speed` end to end on a tiny random BERT: the table and JSON shapes, not the timings; the
K = 1 comparison does the same update as a plain Trainer step."""

from __future__ import annotations

import json
import math

from conftest import tiny_encoder_config

from hf_mtl.bench.common import SUMMED, SpeedConfig, benchmark_tasks, new_report
from hf_mtl.bench.speed import (
    OURS,
    TRAINER,
    build_trainer_pair,
    markdown_table,
    run_trainer_baseline,
    trainer_pair_step,
)
from hf_mtl.cli import main
from hf_mtl.weighting import WEIGHTINGS


def test_benchmark_tasks_reuse_glue_tasks_under_new_names():
    tasks = benchmark_tasks(6)
    assert [spec.name for spec, _, _ in tasks] == ["sst2", "mrpc", "stsb", "wnli", "sst2_b", "mrpc_b"]
    assert [(base, block) for _, base, block in tasks][4:] == [("sst2", 1), ("mrpc", 1)]
    assert tasks[4][0].kind == tasks[0][0].kind and tasks[4][0].num_labels == tasks[0][0].num_labels


def test_extra_buffer_counts_the_strategies_own_matrices():
    """The engine's K × P matrix for every aggregator, one more for a strategy keeping a K × P state (DB-MTL's
    moving averages, MoCo's tracked gradients, ExcessMTL's squared sums)."""
    from conftest import TASKS, tiny_model

    from hf_mtl.bench.speed import extra_buffer_mb

    model = tiny_model(TASKS)
    matrix = extra_buffer_mb(WEIGHTINGS["mgda"], model, 3)
    assert matrix > 0
    for name in ("db_mtl", "moco", "excess_mtl"):
        assert extra_buffer_mb(WEIGHTINGS[name], model, 3) == 2 * matrix, name
    for name in ("gradvac", "graddrop", "fairgrad", "imtl_h"):
        assert extra_buffer_mb(WEIGHTINGS[name], model, 3) == matrix, name


def test_bench_speed_smoke(tmp_path, glue_dir, tokenizer, capsys):
    from transformers import BertModel

    model_dir = tmp_path / "tiny-bert"
    BertModel(tiny_encoder_config()).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    # One fresh memory process per strategy: keep the list short (equal and one that keeps per-task gradients).
    strategies = ["equal", "grad_normalize" if "grad_normalize" in WEIGHTINGS else "geometric"]
    output = tmp_path / "bench.json"

    code = main([
        "bench", "speed", "--tasks", "2", "--weightings", ",".join(strategies), "--batch_size", "4", "--seq_len", "16",
        "--repeats", "1", "--warmup", "0", "--model_name_or_path", str(model_dir), "--glue_dir", str(glue_dir),
        "--threads", "1", "--no_trainer_baseline", "--output", str(output),
    ])

    assert code == 0
    report = json.loads(output.read_text())
    (run,) = report["runs"]
    assert run["num_tasks"] == 2 and run["tasks"] == ["sst2", "mrpc"] and run["batch_shape"] == [4, 16]
    assert [r["strategy"] for r in run["results"]] == [*strategies, SUMMED]
    for r in run["results"]:
        for key in ("median_step_s", "ratio_to_equal", "ratio_q25", "ratio_q75", "median_cpu_step_s", "cpu_ratio_to_equal",
                    "peak_mb", "peak_total_mb", "memory_ratio_to_equal"):
            assert math.isfinite(r[key]), (r["strategy"], key)
        assert r["median_step_s"] > 0 and r["ratio_to_equal"] > 0 and r["cpu_ratio_to_equal"] > 0 and r["peak_total_mb"] > 0
        gradient_level = r["strategy"] in WEIGHTINGS and WEIGHTINGS[r["strategy"]].kind != "loss"
        assert (r["extra_buffer_mb"] > 0) == gradient_level
    assert run["results"][0]["ratio_to_equal"] == 1.0
    assert report["k1_vs_trainer"] is None  # --no_trainer_baseline

    table = capsys.readouterr().out
    header = next(line for line in table.splitlines() if line.startswith("| strategy"))
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| strategy")]
    assert [row.split("|")[1].strip() for row in rows] == [*strategies, SUMMED]
    assert all(row.count("|") == header.count("|") for row in rows)
    assert "K = 2 tasks: sst2, mrpc" in table and "K = 1 vs a plain Trainer" not in table


def _k1_config(tiny_checkpoint, glue_dir, tmp_path):
    return SpeedConfig(tasks=[1], weightings=["equal"], batch_size=4, seq_len=16, repeats=1, warmup=0,
                       model_name_or_path=tiny_checkpoint, glue_dir=str(glue_dir), threads=1, memory=False,
                       output=str(tmp_path / "bench.json"))


def test_k1_step_does_the_same_update_as_a_plain_trainer_step(tmp_path, tiny_checkpoint, glue_dir):
    """Same weights, same batch, dropout off: after one full step of each side (training_step, clipping,
    the Trainer's default optimizer, zero_grad) every parameter of both models is the same."""
    import torch

    pair = build_trainer_pair(_k1_config(tiny_checkpoint, glue_dir, tmp_path), str(tmp_path / "trainers"))
    plain, ours = pair.models[TRAINER], pair.models[OURS]
    assert pair.trainer_model == "BertForSequenceClassification"
    assert len(pair.parameters) == len(list(plain.parameters())) == len(list(ours.parameters()))
    assert all(m.p == 0 for model in (plain, ours) for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert all(torch.equal(theirs, mine) for theirs, mine in pair.parameters)
    assert pair.inputs[OURS] == {"sst2": {**pair.inputs[TRAINER], "task": "sst2"}}
    assert list(pair.inputs[TRAINER]["input_ids"].shape) == [4, 16]
    start = [theirs.detach().clone() for theirs, _ in pair.parameters]

    # The gradients first: the optimizer step (Adam, clipping) would hide a wrong common scale of the loss.
    for side in (TRAINER, OURS):
        pair.trainers[side].training_step(pair.models[side], pair.inputs[side])
    for theirs, mine in pair.parameters:
        assert theirs.grad is not None and mine.grad is not None
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-5, atol=1e-8)
    for model in (plain, ours):
        model.zero_grad()

    for side in (TRAINER, OURS):
        trainer_pair_step(pair, side)()

    for (theirs, mine), before in zip(pair.parameters, start):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-6)
    moved = [float((theirs.detach() - before).abs().max()) for (theirs, _), before in zip(pair.parameters, start)]
    assert min(moved) > 0  # an Adam step moves every parameter that has a gradient: here all of them
    assert all(p.grad is None or not p.grad.any() for model in (plain, ours) for p in model.parameters())
    for side in (TRAINER, OURS):
        optimizer = pair.trainers[side].optimizer
        assert type(optimizer.optimizer).__name__ == "AdamW" and optimizer.defaults.get("fused")


def test_k1_vs_trainer_report_and_table(tmp_path, tiny_checkpoint, glue_dir):
    config = _k1_config(tiny_checkpoint, glue_dir, tmp_path)

    result = run_trainer_baseline(config, log=lambda message: None)

    assert result["task"] == "sst2" and result["task_rows"] == "sst2 train rows 0-3" and result["batch_shape"] == [4, 16]
    assert result["gradient_relative_difference"] < 1e-5 and result["update_relative_difference"] < 1e-5
    assert result["update_max_abs_difference"] < 1e-6
    for key in ("ratio_to_trainer", "ratio_q25", "ratio_q75", "cpu_ratio_to_trainer", "cpu_ratio_q25", "cpu_ratio_q75",
                "trainer_median_step_s", "hf_mtl_median_step_s", "trainer_median_cpu_step_s", "hf_mtl_median_cpu_step_s"):
        assert math.isfinite(result[key]) and result[key] > 0, key
    ours, theirs = result[OURS], result[TRAINER]
    assert theirs["ratio_to_trainer"] == 1.0 and len(ours["ratios"]) == len(ours["cpu_ratios"]) == 1
    assert result["ratio_to_trainer"] == ours["ratio_to_trainer"] == ours["ratios"][0]
    assert result["hf_mtl_median_step_s"] == ours["median_step_s"] and result["trainer_median_step_s"] == theirs["median_step_s"]

    report = new_report("speed", config, [], "method")
    report["k1_vs_trainer"] = json.loads(json.dumps(result))  # as read back from the JSON report
    table = markdown_table(report)
    lines = table.splitlines()
    assert "### K = 1 vs a plain Trainer step" in lines and "the goal is ≤ 1.02" in table
    header = next(line for line in lines if line.startswith("| side"))
    rows = [line for line in lines if line.startswith(("| Trainer + BertForSequenceClassification", "| MultiTaskTrainer"))]
    assert len(rows) == 2 and all(row.count("|") == header.count("|") for row in rows)
    assert f"| {result['ratio_to_trainer']:.3f} |" in rows[1]
