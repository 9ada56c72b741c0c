"""`hf-mtl export` for every task kind: the class of the kind, its config, the same logits as the multi-task model on
real tokenised inputs, the pooling of each task deciding (`cls` / `mean` sentence heads export as custom code:
tests/test_export_custom_code.py), and the NER export read by transformers' token-classification pipeline with the
real silver tag set.

Models are tiny random BERTs (conftest) with the real MiniLM tokenizer; the NER tag set is read from the real
silver data (conftest's `silver_dir_or_skip`: ../shared/data/silver or $SILVER_DIR), skipping when it is absent.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import silver_dir_or_skip, tiny_encoder_config, tiny_model

from hf_mtl.cli import main
from hf_mtl.export import export_task, save_task_model
from hf_mtl.modeling import MultiTaskConfig, MultiTaskModel
from hf_mtl.tasks import GLUE_TASKS, TaskSpec

TAGS = ("O", "B-PERSON", "I-PERSON", "B-GPE", "I-GPE", "B-DATE")
#: One task of every kind (classification and a one-output regression are GLUE's).
KIND_TASKS = [
    GLUE_TASKS["sst2"],
    GLUE_TASKS["stsb"],
    TaskSpec("vector", "regression", 3, ("text",)),
    TaskSpec("topics", "multi_label", None, ("text",), label_names=("sport", "politics", "science", "art")),
    TaskSpec("ner", "token_classification", None, ("tokens",), label_column="tags", label_names=TAGS),
    TaskSpec("answer", "multiple_choice", 3, ("context", "choices")),
]
EXPORTS = {  # task -> (class, problem_type)
    "sst2": ("BertForSequenceClassification", "single_label_classification"),
    "stsb": ("BertForSequenceClassification", "regression"),
    "vector": ("BertForSequenceClassification", "regression"),
    "topics": ("BertForSequenceClassification", "multi_label_classification"),
    "ner": ("BertForTokenClassification", None),
    "answer": ("BertForMultipleChoice", None),
}
SENTENCES = ["Tim Cook visited London on Monday.", "A gripping, beautifully acted film.", "It rained."]
WORDS = [["Tim", "Cook", "visited", "London", "on", "Monday", "."], ["It", "rained", "."]]
CONTEXTS = [("A man is playing a guitar.", ["He makes music.", "He is asleep.", "The guitar is made of ice."]),
            ("The shop was closed.", ["Nobody could buy bread.", "It rained.", "Prices went up sharply today."])]


def with_pooling(tasks, pooling: str, seed: int = 0) -> MultiTaskModel:
    """A tiny model whose sentence-level heads default to `pooling` (a task's own pooling wins)."""
    config = MultiTaskConfig(encoder=tiny_encoder_config().to_dict(), tasks=[t.to_dict() for t in tasks], pooling=pooling)
    torch.manual_seed(seed)
    return MultiTaskModel(config).eval()


def real_inputs(spec: TaskSpec, tokenizer) -> dict[str, torch.Tensor]:
    """Real tokenised inputs of the task's shape, rows of different lengths (padding is exercised)."""
    if spec.kind == "token_classification":
        return dict(tokenizer(WORDS, is_split_into_words=True, padding=True, return_tensors="pt"))
    if spec.kind == "multiple_choice":
        firsts = [context for context, choices in CONTEXTS for _ in choices]
        seconds = [choice for _, choices in CONTEXTS for choice in choices]
        encoded = tokenizer(firsts, seconds, padding=True, return_tensors="pt")
        return {key: value.reshape(len(CONTEXTS), 3, -1) for key, value in encoded.items()}
    if len(spec.text_columns) == 2:
        return dict(tokenizer(SENTENCES, SENTENCES[::-1], padding=True, return_tensors="pt"))
    return dict(tokenizer(SENTENCES, padding=True, return_tensors="pt"))


@pytest.fixture(scope="module")
def model() -> MultiTaskModel:
    model = tiny_model(KIND_TASKS, seed=1).eval()
    with torch.no_grad():  # heads far from zero, so that the predictions differ between rows and labels
        for head in model.heads.values():
            head.classifier.weight.normal_(0, 1.0)
    return model


@pytest.mark.parametrize("task", [spec.name for spec in KIND_TASKS])
def test_every_kind_exports_as_its_class_with_the_multitask_logits(task, model, tokenizer, tmp_path):
    import transformers

    from hf_mtl.kinds import get_kind

    spec = next(s for s in KIND_TASKS if s.name == task)
    folder = save_task_model(model, task, tmp_path / task, tokenizer=tokenizer)
    auto_class = getattr(transformers, get_kind(spec.kind).export_class)
    exported = auto_class.from_pretrained(folder).eval()
    architecture, problem_type = EXPORTS[task]
    assert type(exported).__name__ == architecture
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == [architecture] and config.get("problem_type") == problem_type
    inputs = real_inputs(spec, tokenizer)
    assert inputs["attention_mask"].min() == 0, "rows of different lengths: padding is exercised"
    with torch.no_grad():
        expected = model(**inputs, task=task).logits
        actual = exported(**inputs).logits
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
    if spec.label_names:
        assert exported.config.id2label == dict(enumerate(spec.label_names))
        assert exported.config.label2id == {name: i for i, name in enumerate(spec.label_names)}
    if task == "vector":
        assert exported.config.num_labels == 3 and actual.shape == (3, 3)
    if task == "answer":
        assert actual.shape == (2, 3)  # one score per choice
    card = (folder / "README.md").read_text()
    assert f"standard `{architecture}`" in card and "pipeline_tag:" in card


def test_export_cards_say_what_the_exported_model_is(model, tokenizer, tmp_path):
    cards = {task: (save_task_model(model, task, tmp_path / task, tokenizer=tokenizer) / "README.md").read_text()
             for task in ("ner", "topics", "answer")}
    assert "It is token classification" in cards["ner"] and "pipeline_tag: token-classification" in cards["ner"]
    assert 'pipeline("token-classification", model=' in cards["ner"] and 'aggregation_strategy="simple"' in cards["ner"]
    assert "Tags: 0 = O, 1 = B-PERSON" in cards["ner"]
    assert "It is multi-label classification" in cards["topics"] and "top_k=None" in cards["topics"]
    assert "It is multiple choice" in cards["answer"] and "AutoModelForMultipleChoice.from_pretrained" in cards["answer"]
    assert "pipeline_tag: multiple-choice" in cards["answer"]


def test_a_task_s_own_pooling_decides_and_token_classification_exports_with_any_pooling(tokenizer):
    tasks = [dataclasses.replace(GLUE_TASKS["sst2"], pooling="mean"), KIND_TASKS[4], GLUE_TASKS["mrpc"]]
    model = with_pooling(tasks, "cls")
    assert export_task(model, "sst2").config.pooling == "mean"  # custom code (tests/test_export_custom_code.py)
    assert export_task(model, "mrpc").config.pooling == "cls"
    exported = export_task(model, "ner").eval()
    inputs = real_inputs(KIND_TASKS[4], tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(exported(**inputs).logits, model(**inputs, task="ner").logits, rtol=0, atol=1e-5)
    assert type(exported).__name__ == "BertForTokenClassification"
    assert getattr(exported.bert, "pooler", None) is None  # the encoder's pooler is not part of a token classifier


def tiny_family(family: str, tasks, **overrides) -> MultiTaskModel:
    from transformers import AutoConfig

    config = AutoConfig.for_model(family, vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=37, **overrides)
    torch.manual_seed(0)
    return MultiTaskModel(MultiTaskConfig(encoder=config.to_dict(), tasks=[t.to_dict() for t in tasks])).eval()


@pytest.mark.parametrize(("family", "overrides"), [
    ("roberta", {}), ("distilbert", {"dim": 32, "n_layers": 1, "n_heads": 2, "hidden_dim": 37}), ("electra", {}),
])
def test_token_classification_exports_encoders_whose_sequence_heads_do_not(family, overrides):
    model = tiny_family(family, [KIND_TASKS[4], GLUE_TASKS["sst2"]], **overrides)
    exported = export_task(model, "ner").eval()
    input_ids = torch.randint(3, 100, (3, 10))
    with torch.no_grad():
        torch.testing.assert_close(exported(input_ids=input_ids).logits, model(input_ids=input_ids, task="ner").logits,
                                   rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="cannot export task 'sst2'"):
        export_task(model, "sst2")


def test_multiple_choice_maps_roberta_and_refuses_an_encoder_without_a_pooler():
    model = tiny_family("roberta", [KIND_TASKS[5]])
    exported = export_task(model, "answer").eval()
    input_ids = torch.randint(3, 100, (2, 3, 10))
    with torch.no_grad():
        torch.testing.assert_close(exported(input_ids=input_ids).logits,
                                   model(input_ids=input_ids, task="answer").logits, rtol=0, atol=1e-6)
    model = tiny_family("distilbert", [KIND_TASKS[5]], dim=32, n_layers=1, n_heads=2, hidden_dim=37)
    with pytest.raises(ValueError, match="(?s)has no pooler.*multiple-choice head"):
        export_task(model, "answer")


def test_ner_export_names_entity_groups_by_type_in_the_token_classification_pipeline(tokenizer, tmp_path):
    from transformers import pipeline

    rows = [json.loads(line) for line in (silver_dir_or_skip() / "ner" / "train.jsonl").read_text().splitlines()]
    tags = tuple(sorted({tag for row in rows for tag in row["ner_tags"]}))
    ner = TaskSpec("ner", "token_classification", None, ("tokens",), label_column="ner_tags", label_names=tags)
    model = tiny_model([ner, GLUE_TASKS["sst2"]], seed=0).eval()
    with torch.no_grad():  # a random head that tags most words as entities, of varied types
        model.heads["ner"].classifier.weight.normal_(0, 1.0)
        model.heads["ner"].classifier.bias[tags.index("O")] = -5.0
    run = tmp_path / "run"
    model.save_pretrained(run)
    tokenizer.save_pretrained(run)
    assert main(["export", str(run), "--task", "ner", "--output", str(tmp_path / "NER")]) == 0

    config = json.loads((tmp_path / "NER" / "config.json").read_text())
    assert config["id2label"] == {str(i): tag for i, tag in enumerate(tags)}
    assert config["architectures"] == ["BertForTokenClassification"]
    tagger = pipeline("token-classification", model=str(tmp_path / "NER"), aggregation_strategy="simple", device="cpu")
    entities = tagger("Tim Cook visited London on Monday.")
    types = {tag[2:] for tag in tags if tag != "O"}
    assert entities, "the head tags words as entities, so the pipeline groups some"
    assert {entity["entity_group"] for entity in entities} <= types, entities
    assert not any(entity["entity_group"].startswith("LABEL_") for entity in entities)
