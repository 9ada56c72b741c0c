"""`hf-mtl evaluate`, `predict` and `export` on the output folder of a real (tiny) `hf-mtl train` run."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from test_hub import dev_batch, train_run

from hf_mtl.cli import main
from hf_mtl.modeling import MultiTaskModel
from hf_mtl.tasks import GLUE_TASKS

TRAINING_ONLY = ("runtime", "per_second", "preparation_time")


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_checkpoint, glue_dir):
    encoder = tiny_checkpoint
    output = tmp_path_factory.mktemp("run")
    train_run(encoder, glue_dir, output)
    return output


def test_evaluate_prints_and_writes_the_training_evaluation_keys(run, glue_dir, capsys):
    assert main(["evaluate", str(run), "--glue_dir", str(glue_dir), "--max_seq_length", "64",
                 "--max_eval_samples", "24"]) == 0
    written = json.loads((run / "evaluate" / "eval_results.json").read_text())
    trained = json.loads((run / "eval_results.json").read_text())
    metric_keys = {k for k in trained if k.startswith("eval_") and not k.endswith(TRAINING_ONLY)}
    assert {k for k in written if not k.endswith(TRAINING_ONLY)} == metric_keys
    for key in metric_keys:
        assert written[key] == pytest.approx(trained[key], rel=1e-6, abs=1e-7), key
    printed = capsys.readouterr().out
    assert "***** eval metrics *****" in printed and "eval_glue_score" in printed and "eval_stsb_pearson" in printed


def test_evaluate_a_subset_of_tasks(run, glue_dir, tmp_path):
    assert main(["evaluate", str(run), "--tasks", "mrpc", "--glue_dir", str(glue_dir), "--max_eval_samples", "24",
                 "--max_seq_length", "64", "--output_dir", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "eval_results.json").read_text())
    assert {k for k in written if not k.endswith(TRAINING_ONLY)} == {
        "eval_mrpc_f1", "eval_mrpc_accuracy", "eval_mrpc_loss", "eval_glue_score"}
    assert written["eval_glue_score"] == pytest.approx((written["eval_mrpc_f1"] + written["eval_mrpc_accuracy"]) / 2)


def expected_predictions(run, task, tokenizer, glue_dir, rows):
    model = MultiTaskModel.from_pretrained(run).eval()
    with torch.no_grad():
        logits = model(**dev_batch(GLUE_TASKS[task], tokenizer, glue_dir, rows)).logits
    return logits


def test_predict_writes_label_names_for_a_file_of_sentences(run, tokenizer, glue_dir, tmp_path):
    dev = (glue_dir / "SST-2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:13]
    (tmp_path / "in.tsv").write_text("sentence\n" + "".join(line.split("\t")[0] + "\n" for line in dev), encoding="utf-8")
    assert main(["predict", str(run), "--task", "sst2", "--input", str(tmp_path / "in.tsv"),
                 "--output", str(tmp_path / "out" / "preds.tsv")]) == 0
    lines = (tmp_path / "out" / "preds.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction"
    names = ["negative", "positive"]
    expected = expected_predictions(run, "sst2", tokenizer, glue_dir, 12).argmax(-1).tolist()
    assert lines[1:] == [f"{i}\t{names[c]}" for i, c in enumerate(expected)]
    assert not any(p.name.startswith(".") for p in (tmp_path / "out").iterdir()), "predict left scratch files"


def test_predict_reads_the_original_glue_headers_and_index_column(run, tokenizer, glue_dir, tmp_path):
    mrpc = (glue_dir / "MRPC" / "dev.tsv").read_text(encoding="utf-8-sig").splitlines()[:9]
    (tmp_path / "mrpc.tsv").write_text("\n".join(mrpc) + "\n", encoding="utf-8")  # `#1 String`, `#2 String`, `Quality`
    assert main(["predict", str(run), "--task", "mrpc", "--input", str(tmp_path / "mrpc.tsv"),
                 "--output", str(tmp_path / "mrpc-preds.tsv")]) == 0
    names = ["not_equivalent", "equivalent"]
    expected = expected_predictions(run, "mrpc", tokenizer, glue_dir, 8).argmax(-1).tolist()
    assert (tmp_path / "mrpc-preds.tsv").read_text().splitlines()[1:] == [f"{i}\t{names[c]}" for i, c in enumerate(expected)]

    stsb = (glue_dir / "STS-B" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    (tmp_path / "stsb.tsv").write_text("\n".join([stsb[0], *stsb[101:109]]) + "\n", encoding="utf-8")
    assert main(["predict", str(run), "--task", "stsb", "--input", str(tmp_path / "stsb.tsv"),
                 "--output", str(tmp_path / "stsb-preds.tsv")]) == 0
    rows = [line.split("\t") for line in (tmp_path / "stsb-preds.tsv").read_text().splitlines()[1:]]
    assert [index for index, _ in rows] == [line.split("\t")[0] for line in stsb[101:109]] == [str(i) for i in range(100, 108)]
    model = MultiTaskModel.from_pretrained(run).eval()
    batch = dev_batch(GLUE_TASKS["stsb"], tokenizer, glue_dir, 108)
    with torch.no_grad():
        scores = model(**batch).logits[100:, 0].tolist()
    assert [float(value) for _, value in rows] == pytest.approx(scores, rel=1e-5)


def test_predict_reports_a_missing_column_and_an_empty_text(run, tmp_path, capsys):
    (tmp_path / "bad.tsv").write_text("text\nfine\n", encoding="utf-8")
    assert main(["predict", str(run), "--task", "sst2", "--input", str(tmp_path / "bad.tsv"), "--output", str(tmp_path / "p.tsv")]) == 2
    assert "no column 'sentence' for task 'sst2'; the header has ['text']" in capsys.readouterr().err
    (tmp_path / "empty.tsv").write_text("sentence1\tsentence2\na\tb\nc\t \n", encoding="utf-8")
    assert main(["predict", str(run), "--task", "mrpc", "--input", str(tmp_path / "empty.tsv"), "--output", str(tmp_path / "p.tsv")]) == 2
    assert f"{tmp_path / 'empty.tsv'}, line 3: text column 'sentence2' is empty" in capsys.readouterr().err


def test_export_command_gives_a_pipeline_with_the_task_labels(run, tokenizer, glue_dir, tmp_path):
    from transformers import pipeline

    assert main(["export", str(run), "--task", "sst2", "--output", str(tmp_path / "sst2")]) == 0
    classify = pipeline("text-classification", model=str(tmp_path / "sst2"), device="cpu")
    rows = (glue_dir / "SST-2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:9]
    results = classify([row.split("\t")[0] for row in rows])
    expected = expected_predictions(run, "sst2", tokenizer, glue_dir, 8).argmax(-1).tolist()
    assert [r["label"] for r in results] == [["negative", "positive"][c] for c in expected]


def test_commands_work_on_a_copy_of_the_run_without_its_training_files(run, tmp_path, glue_dir):
    """A run folder reduced to what a Hub repository holds (no trainer_state, no training_args)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(run / name, shared / name)
    assert main(["export", str(shared), "--task", "mrpc", "--output", str(tmp_path / "mrpc")]) == 0
    assert main(["evaluate", str(shared), "--tasks", "sst2", "--glue_dir", str(glue_dir), "--max_eval_samples", "8",
                 "--output_dir", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "eval_results.json").is_file()
