"""`pipeline("multi-task")`: one encoder pass, every head; `hf-mtl predict RUN --task all`; export/evaluate --best."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import every_kind_tasks, make_trainer, training_arguments

from hf_mtl.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def every_kind_run(tmp_path_factory, glue_dir, silver_dir, tokenizer):
    """A tiny run of one task of every kind trained 3 steps, evaluated and saved at every step (pooler pooling,
    so its sentence tasks export)."""
    specs, train, evaluation = every_kind_tasks(glue_dir, silver_dir, 16, tokenizer)
    run = tmp_path_factory.mktemp("every-kind") / "run"
    args = training_arguments(run, max_steps=3, eval_strategy="steps", eval_steps=1, save_strategy="steps",
                              save_steps=1, per_device_eval_batch_size=16, learning_rate=0.3)
    trainer = make_trainer(args, train, tokenizer, eval_dataset=evaluation, tasks=specs)
    trainer.model.config.pooling = "pooler"
    trainer.train()
    trainer.save_model()
    trainer.save_state()
    return run, specs, trainer.task_best.best


def test_one_encoder_pass_gives_every_head_the_logits_of_its_own_forward(every_kind_run, tokenizer):
    from hf_mtl.hub import load_run

    run, specs, _ = every_kind_run
    model, _ = load_run(run)
    model.eval()
    batch = tokenizer(["A fine film.", "Tim Cook visited London and Paris."], padding=True, return_tensors="pt")
    calls = []
    handle = model.encoder.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        logits = model.forward_heads(**batch)
    handle.remove()
    assert len(calls) == 1
    assert sorted(logits) == sorted(s.name for s in specs if s.kind != "multiple_choice")
    with torch.no_grad():
        for task, value in logits.items():
            torch.testing.assert_close(value, model(**batch, task=task).logits)
    with pytest.raises(ValueError, match="task 'pick_paraphrase' is multiple choice"):
        model.forward_heads(**batch, tasks=["pick_paraphrase"])


def test_the_pipeline_loads_a_run_by_path_and_predicts_every_task(every_kind_run):
    from transformers import pipeline

    import hf_mtl  # noqa: F401 - registers the pipeline

    run, specs, _ = every_kind_run
    serve = pipeline("multi-task", model=str(run))
    single = serve("Tim Cook visited London.")
    assert list(single) == ["sst2", "stsb", "ner", "entity_types"]  # multiple choice is left out
    sst2 = next(s for s in specs if s.name == "sst2")
    assert single["sst2"]["label"] in sst2.label_names and 0.5 <= single["sst2"]["score"] <= 1
    assert isinstance(single["stsb"]["value"], float)
    assert all(0 < entry["score"] <= 1 and entry["label"] for entry in single["entity_types"]) and all(
        entry["score"] > 0.5 for entry in single["entity_types"])
    ner_tags = {tag.split("-")[-1] for tag in next(s for s in specs if s.name == "ner").label_names}
    for group in single["ner"]:
        assert group["entity_group"] in ner_tags
        assert "Tim Cook visited London."[group["start"]:group["end"]].lower() == group["word"].replace(" ##", "").replace("##", "")
    # The sst2 prediction is the one of the model's own forward on the same text.
    model, tokenizer = serve.model, serve.tokenizer
    with torch.no_grad():
        logits = model(**tokenizer("Tim Cook visited London.", return_tensors="pt"), task="sst2").logits[0]
    assert single["sst2"]["score"] == pytest.approx(torch.softmax(logits, -1).max().item(), rel=1e-5)
    # Batching gives what one input at a time gives; pairs and lists as text-classification takes them.
    inputs = ["A fine film.", {"text": "A man plays.", "text_pair": "Someone plays music."}, "Dull."]
    batched = serve(inputs, batch_size=3)
    one_by_one = [serve(x) for x in inputs]
    assert len(batched) == 3
    for b, o in zip(batched, one_by_one):
        assert b["sst2"]["label"] == o["sst2"]["label"] and b["sst2"]["score"] == pytest.approx(o["sst2"]["score"], abs=1e-5)
        assert b["stsb"]["value"] == pytest.approx(o["stsb"]["value"], abs=1e-5)
    pair = serve({"text": "A man plays.", "text_pair": "Someone plays music."}, tasks=["stsb"])
    with torch.no_grad():
        encoded = tokenizer("A man plays.", "Someone plays music.", return_tensors="pt")
        assert pair["stsb"]["value"] == pytest.approx(model(**encoded, task="stsb").logits.item(), abs=1e-5)
    # Truncation as in the standard pipelines; every label with top_k=None.
    long = " ".join(["word"] * 600)
    with pytest.raises(RuntimeError, match="512"):  # 602 tokens run past the 512 position embeddings
        serve(long, tasks=["sst2"])
    assert serve(long, tasks=["sst2"], truncation=True)["sst2"]["label"] in sst2.label_names
    everything = serve("Fine.", tasks="sst2", top_k=None)["sst2"]
    assert sorted(e["label"] for e in everything) == sorted(sst2.label_names)
    assert sum(e["score"] for e in everything) == pytest.approx(1.0)


def test_bad_pipeline_inputs_are_refused(every_kind_run):
    from transformers import pipeline

    run, _, _ = every_kind_run
    assert list(pipeline("multi-task", model=str(run), tasks=["stsb"])("x")) == ["stsb"]  # set when built
    serve = pipeline("multi-task", model=str(run))
    with pytest.raises(ValueError, match=r"tasks='cola' is not a task of this model; its tasks are \['sst2'"):
        serve("x", tasks=["cola"])
    with pytest.raises(ValueError, match="task 'pick_paraphrase' is multiple choice"):
        serve("x", tasks="pick_paraphrase")
    with pytest.raises(ValueError, match=r"an input dict takes the keys text and text_pair, got \['sentence'\]"):
        serve({"sentence": "x"})
    with pytest.raises(ValueError, match="top_k=0"):
        serve("x", top_k=0)
    with pytest.raises(ValueError, match="aggregation_strategy='words'"):
        serve("x", aggregation_strategy="words")


def test_importing_hf_mtl_does_not_import_transformers_pipelines_and_registers_it_when_that_is_imported():
    code = ("import sys, hf_mtl; assert 'transformers.pipelines' not in sys.modules; "
            "from transformers.pipelines import PIPELINE_REGISTRY; "
            "print(PIPELINE_REGISTRY.supported_tasks['multi-task']['impl'].__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "MultiTaskPipeline"
    before = ("from transformers import pipeline; import hf_mtl; from transformers.pipelines import PIPELINE_REGISTRY; "
              "print('multi-task' in PIPELINE_REGISTRY.get_supported_tasks())")
    assert subprocess.run([sys.executable, "-c", before], capture_output=True, text=True, check=True).stdout.strip() == "True"


def test_predict_task_all_writes_every_task_per_row(every_kind_run, tmp_path, capsys):
    run, _, _ = every_kind_run
    rows = tmp_path / "in.jsonl"
    rows.write_text("\n".join(json.dumps(r) for r in [{"text": "A fine film.", "text_pair": "Good."},
                                                        {"text": "Tim Cook visited London.", "text_pair": "He did."}]))
    assert main(["predict", str(run), "--task", "all", "--input", str(rows), "--output", str(tmp_path / "out.jsonl")]) == 0
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [w["index"] for w in written] == [0, 1]
    assert all(set(w) == {"index", "sst2", "stsb", "ner", "entity_types"} for w in written)
    from transformers import pipeline

    serve = pipeline("multi-task", model=str(run))
    expected = serve({"text": "A fine film.", "text_pair": "Good."}, truncation=True, max_length=128)
    assert written[0]["sst2"]["label"] == expected["sst2"]["label"]
    assert written[0]["stsb"]["value"] == pytest.approx(expected["stsb"]["value"], abs=1e-5)
    tsv = tmp_path / "in.tsv"
    tsv.write_text("text\nA fine film.\nDull.\n")
    assert main(["predict", str(run), "--task", "all", "--input", str(tsv), "--output", str(tmp_path / "out.tsv")]) == 0
    lines = (tmp_path / "out.tsv").read_text().splitlines()
    assert lines[0] == "index\tsst2\tstsb\tner\tentity_types" and len(lines) == 3
    assert lines[1].split("\t")[1] == serve("A fine film.")["sst2"]["label"]
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\nx\n")
    assert main(["predict", str(run), "--task", "all", "--input", str(bad), "--output", str(tmp_path / "o.tsv")]) == 2
    assert "no column 'text'" in capsys.readouterr().err


def test_export_best_uses_the_task_best_checkpoint(every_kind_run, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification

    from hf_mtl.hub import load_run

    run, _, bests = every_kind_run
    record = bests["sst2"]
    assert main(["export", str(run), "--task", "sst2", "--best", "--output", str(tmp_path / "best")]) == 0
    exported = AutoModelForSequenceClassification.from_pretrained(tmp_path / "best").eval()
    at_best, tokenizer = load_run(run / record["checkpoint"])
    final, _ = load_run(run)
    batch = tokenizer(["A fine film."], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(exported(**batch).logits, at_best.eval()(**batch, task="sst2").logits)
        moved = not torch.allclose(exported(**batch).logits, final.eval()(**batch, task="sst2").logits)
    assert moved or record["step"] == 3
    card = (tmp_path / "best" / "README.md").read_text()
    assert f"Exported from `{record['checkpoint']}`, the step at which task `sst2` was best" in card
    assert "optimistic" in card
    # The run's own card lists every task's best checkpoint.
    from hf_mtl.model_card import write_run_model_card

    run_card = write_run_model_card(run).read_text()
    assert "## Each task's best checkpoint" in run_card and "| sst2 | score (higher is better)" in run_card
    assert main(["export", str(run), "--task", "nope", "--best", "--output", str(tmp_path / "x")]) == 2
    assert "--task 'nope' has no recorded best" in capsys.readouterr().err


def test_evaluate_best_reports_each_task_at_its_best_step(every_kind_run, glue_dir, tmp_path, capsys):
    run, _, bests = every_kind_run
    from hf_mtl.cli import evaluate

    main_metrics = evaluate([str(run), "--best", "--tasks", "sst2,stsb", "--glue_dir", str(glue_dir),
                             "--max_eval_samples", "16", "--output_dir", str(tmp_path / "eval")])
    metrics = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert metrics == pytest.approx(main_metrics)
    assert metrics["eval_sst2_best_step"] == bests["sst2"]["step"] and metrics["eval_stsb_best_step"] == bests["stsb"]["step"]
    # Each task's value at its best step is what training recorded there (the same 16 dev rows).
    assert metrics["eval_sst2_accuracy"] == pytest.approx(bests["sst2"]["value"])
    stsb = (metrics["eval_stsb_pearson"] + metrics["eval_stsb_spearmanr"]) / 2
    assert stsb == pytest.approx(bests["stsb"]["value"], abs=1e-5)
    assert metrics["eval_glue_score"] == pytest.approx((metrics["eval_sst2_accuracy"] + stsb) / 2)
    assert "optimistic" in capsys.readouterr().out


def test_best_on_a_run_without_evaluation_during_training_is_refused(tmp_path, glue_dir, tokenizer, capsys):
    from conftest import tokenized_glue

    train, _ = tokenized_glue(glue_dir, tokenizer, train_rows=16)
    run = tmp_path / "run"
    trainer = make_trainer(training_arguments(run, max_steps=1), train, tokenizer)
    trainer.train()
    trainer.save_model()
    trainer.save_state()
    for command in (["export", str(run), "--task", "sst2", "--best", "--output", str(tmp_path / "x")],
                    ["evaluate", str(run), "--best", "--glue_dir", str(glue_dir)]):
        assert main(command) == 2
        assert "recorded no per-task best: it did not evaluate during training" in capsys.readouterr().err


def test_bench_serve_times_one_pass_against_the_exported_models(every_kind_run, glue_dir, tmp_path, capsys):
    from hf_mtl.bench import bench

    run, _, _ = every_kind_run
    report = tmp_path / "serve.json"
    assert bench(["serve", str(run), "--glue_dir", str(glue_dir), "--inputs", "8", "--batch_size", "4", "--repeats",
                  "1", "--warmup", "0", "--output", str(report)]) == 0
    out = capsys.readouterr().out
    assert "K = 4 heads (sst2, stsb, ner, entity_types)" in out and "ratio (K single-task / one pass):" in out
    numbers = json.loads(report.read_text())
    assert numbers["ratio"] == pytest.approx(numbers["median_seconds"]["single_task"] / numbers["median_seconds"]["one_pass"])
    # Both ways serve the same model: the same answers on every input.
    assert numbers["same_labels"] == {"sst2": 1.0, "stsb": 1.0, "ner": 1.0, "entity_types": 1.0}


@pytest.mark.parametrize("first", ["import hf_mtl.multi_task_pipeline", "import hf_mtl.inference",
                                   "from transformers import pipeline; import hf_mtl"])
def test_the_pipeline_is_registered_whatever_is_imported_first(first):
    code = (f"{first}; from transformers.pipelines import PIPELINE_REGISTRY; "
            "print(PIPELINE_REGISTRY.supported_tasks['multi-task']['impl'].__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "MultiTaskPipeline" and "could not be registered" not in out.stderr
