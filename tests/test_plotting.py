"""Seeing a run: TensorBoard scalars and progress-bar lines for every task, and the PNGs of `hf-mtl plot`."""

from __future__ import annotations

import contextlib
import io
import json
import sys

import pytest

from hf_mtl.cli import main
from hf_mtl.plotting import collect_curves, load_log_history, plot_curves, require_matplotlib

from test_hub import train_run

TASK_NAMES = ["sst2", "mrpc", "stsb"]


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory, tiny_checkpoint, glue_dir):
    """A 4-step `hf-mtl train` run reporting to TensorBoard with the progress bar on; (output dir, stdout)."""
    pytest.importorskip("tensorboard", reason="tensorboard (test extra) is not installed")
    encoder = tiny_checkpoint
    output = tmp_path_factory.mktemp("run")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        train_run(encoder, glue_dir, output, "--report_to", "tensorboard", "--disable_tqdm", "false")
    return output, printed.getvalue()


def test_tensorboard_events_hold_every_task_loss_and_weight(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output, _ = logged_run
    event_files = list(output.rglob("events.out.tfevents.*"))
    assert event_files, f"no TensorBoard event file under {output}"
    accumulator = EventAccumulator(str(event_files[0].parent))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    history = json.loads((output / "trainer_state.json").read_text())["log_history"]
    for task in TASK_NAMES:
        for kind in ("loss", "weight"):
            events = accumulator.Scalars(f"train/{kind}_{task}")
            logged = [(h["step"], h[f"{kind}_{task}"]) for h in history if f"{kind}_{task}" in h]
            assert [e.step for e in events] == [step for step, _ in logged] == [1, 2, 3, 4]
            assert [e.value for e in events] == pytest.approx([value for _, value in logged], rel=1e-6)
        assert f"eval/{task}_loss" in tags
    assert {"eval/sst2_accuracy", "eval/mrpc_f1", "eval/stsb_pearson", "eval/glue_score"} <= tags


def test_progress_bar_prints_every_task_loss_and_weight(logged_run):
    _, printed = logged_run
    lines = [line for line in printed.splitlines() if "'loss_sst2'" in line]
    assert len(lines) == 4, printed[-2000:]
    for task in TASK_NAMES:
        assert f"'loss_{task}'" in lines[0] and f"'weight_{task}'" in lines[0]


def test_plot_command_writes_the_pngs_of_a_real_run(logged_run, tmp_path, capsys):
    from PIL import Image

    output, _ = logged_run
    assert main(["plot", str(output), "--output_dir", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    assert written == ["epochs.png", "eval.png", "loss.png", "rows.png", "training_curves.png", "weights.png"]
    for name in written:
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.width >= 600 and image.height >= 400
    summary = Image.open(tmp_path / "training_curves.png")
    assert summary.getextrema() != ((255, 255), (255, 255), (255, 255), (255, 255)), "a blank figure"
    assert f"Wrote {tmp_path / 'loss.png'}" in capsys.readouterr().out

    curves = collect_curves(load_log_history(output), TASK_NAMES)
    assert list(curves.loss) == list(curves.weight) == TASK_NAMES
    assert curves.loss["stsb"][0] == [1, 2, 3, 4]
    assert curves.eval["mrpc"]["f1"][0] == [2, 4]
    # what the sampler drew: every task the same rows per step (α = 0), passes growing by rows / training rows
    history = json.loads((output / "trainer_state.json").read_text())["log_history"]
    rows = {task: [h[f"rows_{task}"] for h in history if f"rows_{task}" in h] for task in TASK_NAMES}
    assert [curves.rows[task][1] for task in TASK_NAMES] == list(rows.values()) and len(set(rows["sst2"])) == 1
    steps, epochs = curves.epochs["mrpc"]
    assert steps == [1, 2, 3, 4] and epochs == sorted(epochs) and epochs[0] > 0
    assert set(curves.eval["stsb"]) == {"pearson", "spearmanr"}


def test_gradient_norms_and_multi_split_tasks_are_plotted(tmp_path):
    history = [
        {"step": s, "loss": 1.0 / s, "loss_mnli": 1.1 / s, "loss_my_task": 0.9 / s, "weight_mnli": 1.0, "weight_my_task": 1.0,
         "grad_norm": 2.0, "grad_norm_mnli": 3.0 / s, "grad_norm_my_task": 1.0 / s}
        for s in (10, 20, 30)
    ] + [{"step": 30, "eval_mnli_matched_accuracy": 0.7, "eval_mnli_mismatched_accuracy": 0.71, "eval_mnli_matched_loss": 0.6,
          "eval_my_task_accuracy": 0.8, "eval_glue_score": 0.75, "eval_my_task_runtime": 1.0}]
    curves = collect_curves(history)
    assert list(curves.grad_norm) == ["mnli", "my_task"]
    assert curves.grad_norm["mnli"] == ([10, 20, 30], [0.3, 0.15, 0.1])
    assert curves.eval == {"mnli": {"matched_accuracy": ([30], [0.7]), "mismatched_accuracy": ([30], [0.71])},
                           "my_task": {"accuracy": ([30], [0.8])}}
    assert curves.glue_score == ([30], [0.75])
    written = {p.name for p in plot_curves(curves, tmp_path)}
    assert written == {"loss.png", "weights.png", "grad_norm.png", "eval.png", "training_curves.png"}
    assert all((tmp_path / name).stat().st_size > 5000 for name in written)


def test_final_evaluation_of_eval_results_json_becomes_the_last_point(tmp_path):
    (tmp_path / "trainer_state.json").write_text(json.dumps(
        {"global_step": 40, "log_history": [{"step": 20, "loss": 1.0, "loss_sst2": 1.0, "weight_sst2": 1.0}]}))
    (tmp_path / "eval_results.json").write_text(json.dumps({"eval_sst2_accuracy": 0.9, "eval_glue_score": 0.9, "epoch": 1.0}))
    history = load_log_history(tmp_path)
    assert history[-1] == {"eval_sst2_accuracy": 0.9, "eval_glue_score": 0.9, "step": 40}
    assert collect_curves(history).eval == {"sst2": {"accuracy": ([40], [0.9])}}


def test_a_folder_without_state_is_refused_with_the_fix(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "holds no trainer_state.json" in capsys.readouterr().err


def test_missing_matplotlib_names_the_extra(monkeypatch, tmp_path):
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": 1, "loss_a": 1.0}]}))
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r'pip install "hf_mtl\[plot\]"'):
        require_matplotlib()
    with pytest.raises(SystemExit, match=r'hf-mtl plot: Plotting needs matplotlib.*pip install "hf_mtl\[plot\]"'):
        main(["plot", str(tmp_path)])
