"""`hf-mtl bench lora` end to end on a tiny random BERT: LoRA trains far fewer parameters than full fine-tuning,
its aggregator matrix is as much smaller, and the table and JSON carry a finite ratio for every strategy (not the
timings themselves)."""

from __future__ import annotations

import json
import math

from hf_mtl.cli import main


def test_bench_lora_smoke(tmp_path, glue_dir, tiny_checkpoint, capsys):
    output = tmp_path / "bench.json"
    code = main(["bench", "lora", "--tasks", "2", "--weightings", "equal,upgrad", "--batch_size", "4", "--seq_len", "16",
                 "--repeats", "1", "--warmup", "0", "--model_name_or_path", tiny_checkpoint, "--glue_dir", str(glue_dir),
                 "--threads", "1", "--lora_r", "2", "--output", str(output)])
    assert code == 0
    report = json.loads(output.read_text())
    (run,) = report["runs"]
    assert run["num_tasks"] == 2 and run["tasks"] == ["sst2", "mrpc"]
    assert [r["strategy"] for r in run["results"]] == ["equal", "upgrad"]
    for r in run["results"]:
        for key in ("ratio_to_full", "cpu_ratio_to_full", "full_median_step_s", "lora_median_step_s"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["strategy"], key)
        for side in ("full", "lora"):  # a tiny model's step may add no measurable memory: >= 0, not > 0
            assert math.isfinite(r[f"{side}_memory"]["peak_mb"]) and r[f"{side}_memory"]["peak_total_mb"] > 0
        assert "memory_ratio_to_full" in r
        assert r["lora_trainable_parameters"] < r["full_trainable_parameters"] / 10
    equal, upgrad = run["results"]
    assert equal["full_extra_buffer_mb"] == equal["lora_extra_buffer_mb"] == 0.0
    # the K x P matrix holds the trainable shared parameters only: LoRA matrices and the pooler, no frozen weight
    assert 0 < upgrad["lora_extra_buffer_mb"] < upgrad["full_extra_buffer_mb"] / 10

    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| strategy")]
    assert [row.split("|")[1].strip() for row in rows] == ["equal", "upgrad"]
    assert "K = 2 tasks: sst2, mrpc" in table


def test_bench_lora_refuses_bad_settings(capsys, tmp_path):
    assert main(["bench", "lora", "--lora_r", "0", "--output", str(tmp_path / "x.json")]) != 0
    assert "--lora_r must be a whole number >= 1" in capsys.readouterr().err
