"""`hf-mtl bench speed` end to end on a tiny random BERT: the table and JSON shapes, not the timings."""

from __future__ import annotations

import json
import math

from hf_mtl.benchmark import SUMMED, benchmark_tasks
from hf_mtl.cli import main
from hf_mtl.weighting import WEIGHTINGS

from conftest import tiny_encoder_config


def test_benchmark_tasks_reuse_glue_tasks_under_new_names():
    tasks = benchmark_tasks(6)
    assert [spec.name for spec, _, _ in tasks] == ["sst2", "mrpc", "stsb", "wnli", "sst2_b", "mrpc_b"]
    assert [(base, block) for _, base, block in tasks][4:] == [("sst2", 1), ("mrpc", 1)]
    assert tasks[4][0].kind == tasks[0][0].kind and tasks[4][0].num_labels == tasks[0][0].num_labels


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
        "--threads", "1", "--output", str(output),
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

    table = capsys.readouterr().out
    header = next(line for line in table.splitlines() if line.startswith("| strategy"))
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| strategy")]
    assert [row.split("|")[1].strip() for row in rows] == [*strategies, SUMMED]
    assert all(row.count("|") == header.count("|") for row in rows)
    assert "K = 2 tasks: sst2, mrpc" in table
