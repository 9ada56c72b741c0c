"""`hf-mtl bench torchjd` on a tiny random BERT: the same update as torchjd's own path, the report shape,
the error messages."""

from __future__ import annotations

import json
import math

import pytest

from hf_mtl.bench.common import build, trainer_optimizer
from hf_mtl.bench.torchjd import AGGREGATORS, TorchJDConfig, update_gap
from hf_mtl.cli import main

pytest.importorskip("torchjd", reason="torchjd (test extra) is not installed")


@pytest.fixture(scope="module")
def setup(tiny_checkpoint, glue_dir):
    config = TorchJDConfig(tasks=[3], batch_size=4, seq_len=16, model_name_or_path=tiny_checkpoint,
                           glue_dir=str(glue_dir), threads=1)
    return build(config, 3, list(AGGREGATORS), trainer_optimizer(config))


def exact_torchjd(name):
    """torchjd's aggregator with its solver made exact (as tests/test_aggregators.py): no regularisation
    of UPGrad's QP, MGDA's Frank-Wolfe run to convergence."""
    import torchjd.aggregation as a
    from torchjd.linalg import QuadprogProjector

    return {"upgrad": lambda: a.UPGrad(projector=QuadprogProjector(reg_eps=0.0)),
            "mgda": lambda: a.MGDA(epsilon=1e-12, max_iters=100_000),
            "pcgrad": a.PCGrad}[name]()


@pytest.mark.parametrize("name", list(AGGREGATORS))
def test_same_update_as_torchjd_mtl_backward(setup, name, monkeypatch):
    """Heads' raw task gradients and the encoder's aggregate, same scale (UPGrad mean, MGDA convex, PCGrad sum):
    our engine and torchjd's mtl_backward + jac_to_grad give the same gradient on every parameter."""
    import torch

    if name == "pcgrad":
        # torchjd draws one torch.randperm per task: hand it the orders our pcgrad uses at this step.
        weighting = setup.weightings["pcgrad"]
        orders = iter(torch.as_tensor(o) for o in weighting.task_orders(weighting.steps, len(setup.specs)))
        monkeypatch.setattr(torch, "randperm", lambda n, *args, **kwargs: next(orders))
    gap = update_gap(setup, name, exact_torchjd(name))
    assert gap["update_relative_difference"] < 1e-5, gap
    assert gap["update_cosine"] > 1 - 1e-8, gap


def test_bench_torchjd_smoke(tmp_path, tiny_checkpoint, glue_dir, capsys):
    output = tmp_path / "bench.json"
    code = main([
        "bench", "torchjd", "--tasks", "2", "--weightings", "upgrad", "--batch_size", "4", "--seq_len", "16",
        "--repeats", "2", "--warmup", "0", "--model_name_or_path", tiny_checkpoint, "--glue_dir", str(glue_dir),
        "--threads", "1", "--output", str(output),
    ])

    assert code == 0
    report = json.loads(output.read_text())
    assert report["command"].startswith("hf-mtl bench torchjd ") and report["environment"]["torchjd"].startswith("0.18")
    (run,) = report["runs"]
    assert run["num_tasks"] == 2 and run["tasks"] == ["sst2", "mrpc"]
    (result,) = run["results"]
    assert result["aggregator"] == "upgrad" and result["torchjd_aggregator"].startswith("UPGrad")
    # torchjd's default UPGrad adds 1e-4 to the trace-normalised Gram matrix: here task norms differ ~60-fold,
    # so the smaller one's projection moves by several % (exact settings agree: test above). Same direction.
    assert 0 <= result["update_relative_difference"] < 0.2 and result["update_cosine"] > 0.99
    for key in ("memory_ratio", "process_memory_ratio"):
        assert math.isfinite(result[key]) and result[key] > 0
    ours, theirs = result["hf_mtl"], result["torchjd"]
    assert theirs["ratio_to_torchjd"] == 1.0 and len(ours["ratios"]) == 2
    for side in (ours, theirs):
        for key in ("median_step_s", "median_cpu_step_s", "peak_mb", "peak_total_mb"):
            assert math.isfinite(side[key]) and side[key] > 0, key
    for key in ("ratio_to_torchjd", "cpu_ratio_to_torchjd", "ratio_q25", "ratio_q75"):
        assert math.isfinite(ours[key]) and ours[key] > 0, key

    table = capsys.readouterr().out
    header = next(line for line in table.splitlines() if line.startswith("| aggregator"))
    (row,) = [line for line in table.splitlines() if line.startswith("| upgrad")]
    assert row.count("|") == header.count("|") and "K = 2 tasks: sst2, mrpc" in table


def test_unsupported_aggregator_is_named_with_the_fix(capsys):
    assert main(["bench", "torchjd", "--weightings", "upgrad,cagrad"]) == 2
    message = capsys.readouterr().err
    assert "--weightings upgrad,cagrad" in message and "unsupported: cagrad" in message
    assert "--weightings upgrad,mgda,pcgrad" in message


def test_missing_torchjd_says_how_to_install(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "torchjd", None)  # import torchjd now raises ImportError
    assert main(["bench", "torchjd", "--tasks", "2"]) == 2
    message = capsys.readouterr().err
    assert "pip install \"torchjd[quadprog-projector]>=0.18,<0.19\"" in message
