"""Task kinds (`hf_mtl.kinds`): every kind trains with every weighting strategy, and each kind's pieces give
exact values on fixed inputs: the loss, the label statistics that `init` and `prior` divide by, the metrics,
the word-piece alignment of token tags and the multiple-choice batches and scores.

Real components only: the real MiniLM tokenizer, tiny random BERT models, `MultiTaskTrainer`, and datasets
built in memory then prepared and tokenised by the library (`resolve_labels`, `prepare_dataset`,
`tokenize_splits`). Hand-computed values use `math` only, never the code under test.
"""

from __future__ import annotations

import json
import math

import datasets
import numpy as np
import pytest
import torch
from conftest import make_trainer, tiny_model, training_arguments

from hf_mtl.data import (
    label_statistics,
    prepare_dataset,
    resolve_labels,
    tokenize_splits,
)
from hf_mtl.kinds import IGNORE_INDEX, KINDS, get_kind
from hf_mtl.label_stats import LabelStatistics
from hf_mtl.metrics import compute_task_metrics
from hf_mtl.tasks import TaskSpec
from hf_mtl.weighting import WEIGHTINGS, build_weighting

# ---- one small task of every kind -------------------------------------------------------------------

NAMES = ["Amrozi", "Kowalczyk", "Tim", "Anna"]
PLACES = ["Cupertino", "Paris", "Zurich", "Wolfeschlegelsteinhausen"]


def _rows(kind: str, count: int, offset: int = 0) -> list[dict]:
    """`count` rows of a small, learnable task of `kind` (every label value occurs in the first 8 rows)."""
    rows = []
    for n in range(offset, offset + count):
        name, place = NAMES[n % 4], PLACES[(n // 2) % 4]
        if kind == "classification":
            rows.append({"review": f"{name} found the film {'wonderful' if n % 2 else 'dreadful'}",
                         "sentiment": "positive" if n % 2 else "negative"})
        elif kind == "regression":  # a vector target: num_labels = 2
            rows.append({"text": f"{name} travelled {n % 5} times to {place}", "scores": [float(n % 5), (n % 3) / 2]})
        elif kind == "multi_label":
            labels = [["person"], ["person", "place"], [], ["place"]][n % 4]
            rows.append({"text": f"{name if 'person' in labels else 'someone'} went {place if 'place' in labels else 'away'}",
                         "labels": labels})
        elif kind == "token_classification":
            words = [name, "met", "Tim", "Cook", "in", place][: 2 + n % 5]
            tags = ["B-PER", "O", "B-PER", "I-PER", "O", "B-LOC"][: len(words)]
            rows.append({"tokens": words, "ner_tags": tags})
        elif kind == "multiple_choice":
            answer = (0, 1, 2, 0)[n % 4]  # positions 6 : 3 : 3
            choices = [f"{place} is a {w}" for w in ("city", "person", "number")]
            rows.append({"context": f"Where did {name} go? {place}.", "choices": choices, "label": answer})
    return rows


#: name, kind, text columns, label column, and extra TaskSpec fields of the task of each kind.
KIND_TASKS = {
    "classification": ("sentiment", ("review",), "sentiment", {}),
    "regression": ("scores", ("text",), "scores", {"num_labels": 2}),
    "multi_label": ("topics", ("text",), "labels", {}),
    "token_classification": ("ner", ("tokens",), "ner_tags", {}),
    "multiple_choice": ("completion", ("context", "choices"), "label", {}),
}


def test_every_registered_kind_has_a_task_here() -> None:
    assert set(KIND_TASKS) == set(KINDS), "add a task of the new kind to KIND_TASKS and _rows"


def build_task(spec: TaskSpec, train_rows: list[dict], eval_rows: list[dict] | None, tokenizer, max_length: int = 32):
    """(resolved spec, prepared splits, tokenised splits) of in-memory rows, as `load_task` would make them."""
    raw = {"train": datasets.Dataset.from_list(train_rows)}
    if eval_rows:
        raw["validation"] = datasets.Dataset.from_list(eval_rows)
    raw = datasets.DatasetDict(raw)
    spec = resolve_labels(spec, raw)
    prepared = prepare_dataset(spec, raw)
    return spec, prepared, tokenize_splits(prepared, spec, tokenizer, max_length)


@pytest.fixture(scope="module")
def kind_tasks(tokenizer):
    """One task of every kind (K = 5): (specs, {task: train split}, {task: validation split})."""
    specs, train, evaluation = [], {}, {}
    for kind, (name, text, label, extra) in KIND_TASKS.items():
        spec = TaskSpec(name=name, kind=kind, num_labels=extra.get("num_labels"), text_columns=text, label_column=label)
        spec, _, splits = build_task(spec, _rows(kind, 12), _rows(kind, 8, offset=12), tokenizer)
        specs.append(spec)
        train[spec.name], evaluation[spec.name] = splits["train"], splits["validation"]
    return specs, train, evaluation


def test_label_sets_and_head_sizes_of_every_kind(kind_tasks) -> None:
    specs, _, _ = kind_tasks
    by_kind = {spec.kind: spec for spec in specs}
    assert by_kind["classification"].label_names == ("negative", "positive")
    assert by_kind["regression"].num_labels == 2 and by_kind["regression"].label_names is None
    assert by_kind["multi_label"].label_names == ("person", "place")
    assert by_kind["token_classification"].label_names == ("B-LOC", "B-PER", "I-PER", "O")
    assert by_kind["multiple_choice"].num_labels == 3
    model = tiny_model(specs)
    sizes = {spec.kind: model.heads[spec.name].classifier.out_features for spec in specs}
    assert sizes == {"classification": 2, "regression": 2, "multi_label": 2, "token_classification": 4,
                     "multiple_choice": 1}


# ---- every kind x every weighting strategy ----------------------------------------------------------

#: Extra training flags a strategy needs (any other runs on its defaults).
STRATEGY_FLAGS = {
    "static": {"task_weights": json.dumps({spec[0]: w for spec, w in zip(KIND_TASKS.values(), (1.0, 0.5, 2.0, 1.0, 0.25))})},
}
VARIANTS = [pytest.param(name, STRATEGY_FLAGS.get(name, {}), id=name) for name in WEIGHTINGS] + [
    pytest.param("init", {"init_estimate_batches": 1}, id="init-estimated"),
    pytest.param("prior+pcgrad", {}, id="prior+pcgrad"),
    pytest.param("geometric+mgda", {}, id="geometric+mgda"),
    pytest.param("init+grad_normalize", {}, id="init+grad_normalize"),
]


@pytest.mark.parametrize("weighting, flags", VARIANTS)
def test_every_kind_trains_with_every_strategy(weighting, flags, kind_tasks, tokenizer, tmp_path) -> None:
    specs, train, _ = kind_tasks
    args = training_arguments(tmp_path, weighting=weighting, per_device_train_batch_size=4, learning_rate=0.1, **flags)
    trainer = make_trainer(args, train, tokenizer, tasks=specs)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()

    logs = [h for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    assert len(logs) == 2
    for h in logs:
        assert math.isfinite(h["loss"])
        for spec in specs:
            assert math.isfinite(h[f"loss_{spec.name}"]) and h[f"loss_{spec.name}"] > 0, (spec.name, h)
            assert math.isfinite(h[f"weight_{spec.name}"]), (spec.name, h)
    params = dict(trainer.model.named_parameters())
    assert all(torch.isfinite(p).all() for p in params.values())
    assert any(not torch.equal(p, before[n]) for n, p in params.items() if n.startswith("encoder.")), "encoder"
    for spec in specs:
        head = f"heads.{spec.name}.classifier.weight"
        assert not torch.equal(params[head], before[head]), f"the {spec.kind} head did not move"
    assert trainer.model.config.weighting["name"] == weighting


def test_every_kind_is_evaluated_with_its_metrics(kind_tasks, tokenizer, tmp_path) -> None:
    specs, train, evaluation = kind_tasks
    trainer = make_trainer(training_arguments(tmp_path, per_device_train_batch_size=4), train, tokenizer,
                           eval_dataset=evaluation, tasks=specs)
    trainer.train()
    metrics = trainer.evaluate()
    expected = ["eval_sentiment_accuracy", "eval_scores_pearson", "eval_scores_spearmanr", "eval_topics_f1_micro",
                "eval_topics_f1_macro", "eval_topics_exact_match", "eval_ner_accuracy", "eval_ner_precision",
                "eval_ner_recall", "eval_ner_f1", "eval_completion_accuracy", "eval_score"]
    for key in expected:
        assert key in metrics and math.isfinite(metrics[key]), key
    for spec in specs:
        assert math.isfinite(metrics[f"eval_{spec.name}_loss"])
    assert "eval_glue_score" not in metrics  # not GLUE tasks: the macro score is `score`


# ---- exact losses ------------------------------------------------------------------------------------

def _ce(logits: list[float], label: int) -> float:
    return math.log(sum(math.exp(z) for z in logits)) - logits[label]


def _bce(logit: float, target: float) -> float:
    return target * math.log(1 + math.exp(-logit)) + (1 - target) * math.log(1 + math.exp(logit))


def test_classification_loss_is_mean_cross_entropy() -> None:
    logits, labels = [[2.0, 0.0], [0.0, 1.0], [0.5, -0.5]], [0, 1, 1]
    loss = get_kind("classification").loss(torch.tensor(logits), torch.tensor(labels))
    assert loss.item() == pytest.approx(sum(_ce(z, y) for z, y in zip(logits, labels)) / 3, rel=1e-6)


def test_regression_loss_is_squared_error_summed_over_dimensions_averaged_over_rows() -> None:
    kind = get_kind("regression")
    vector = kind.loss(torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
    assert vector.item() == pytest.approx(((1 + 4) + (9 + 16)) / 2)
    scalar = kind.loss(torch.tensor([[1.0], [2.0]]), torch.tensor([0.0, 4.0]))  # (n, 1) outputs, (n,) targets
    assert scalar.item() == pytest.approx((1 + 4) / 2)


def test_multi_label_loss_is_binary_cross_entropy_over_labels_and_rows() -> None:
    logits, targets = [[0.0, 2.0, -3.0], [-1.0, 0.0, 1.0]], [[1, 0, 0], [0, 1, 1]]
    loss = get_kind("multi_label").loss(torch.tensor(logits), torch.tensor(targets, dtype=torch.float32))
    expected = sum(_bce(z, t) for zr, tr in zip(logits, targets) for z, t in zip(zr, tr)) / 6
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_token_classification_loss_averages_over_labelled_pieces_only() -> None:
    logits = [[[9.0, -9.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 2.0], [-9.0, 9.0, 0.0]],
              [[0.0, 3.0, 0.0], [0.5, 0.5, 0.0], [7.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]
    labels = [[IGNORE_INDEX, 0, 2, IGNORE_INDEX], [1, IGNORE_INDEX, IGNORE_INDEX, 2]]
    loss = get_kind("token_classification").loss(torch.tensor(logits), torch.tensor(labels))
    kept = [(logits[r][t], y) for r in range(2) for t, y in enumerate(labels[r]) if y != IGNORE_INDEX]
    assert len(kept) == 4
    assert loss.item() == pytest.approx(sum(_ce(z, y) for z, y in kept) / 4, rel=1e-6)


def test_multiple_choice_loss_is_cross_entropy_over_the_choices() -> None:
    scores, answers = [[0.1, 0.2, 3.0], [1.0, -1.0, 0.0]], [2, 0]
    loss = get_kind("multiple_choice").loss(torch.tensor(scores), torch.tensor(answers))
    assert loss.item() == pytest.approx((_ce(scores[0], 2) + _ce(scores[1], 0)) / 2, rel=1e-6)


# ---- exact label statistics, and the init / prior references built on them ---------------------------

def _entropy(counts: list[float]) -> float:
    total = sum(counts)
    return -sum(c / total * math.log(c / total) for c in counts if c)


def _binary_entropy(p: float) -> float:
    return _entropy([p, 1 - p])


def _spec(kind: str, name: str, num_labels: int, text=("text",)) -> TaskSpec:
    return TaskSpec(name=name, kind=kind, num_labels=num_labels, text_columns=text)


STATS_CASES = {
    # kind: (spec, training labels as prepared, initial loss, prior loss, words in the prior's source)
    "classification": (_spec("classification", "c", 3), [0, 0, 2, 0], math.log(3), _entropy([3, 0, 1]), "entropy"),
    "regression": (_spec("regression", "r", 2), [[1.0, 2.0], [3.0, 0.0], [2.0, 1.0]],
                   (5 + 9 + 5) / 3,  # E||y||^2
                   2 / 3 + 2 / 3,  # Var of [1, 3, 2] + Var of [2, 0, 1]
                   "variance"),
    "multi_label": (_spec("multi_label", "m", 3), [[1, 1, 0], [0, 0, 0], [1, 0, 0], [1, 0, 1]], math.log(2),
                    (_binary_entropy(3 / 4) + _binary_entropy(1 / 4) + _binary_entropy(1 / 4)) / 3, "binary entropy"),
    "token_classification": (_spec("token_classification", "t", 4, text=("tokens",)),
                             [[3, 1, IGNORE_INDEX, 2], [IGNORE_INDEX, 3, 3], [0]],  # -100: pieces that are not a word start
                             math.log(4), _entropy([1, 1, 1, 3]), "tag"),
    "multiple_choice": (_spec("multiple_choice", "q", 3, text=("context", "choices")), [0, 2, 2, 1], math.log(3),
                        _entropy([1, 1, 2]), "answer"),
}


def test_every_kind_has_a_statistics_case() -> None:
    assert set(STATS_CASES) == set(KINDS)


@pytest.mark.parametrize("kind", list(STATS_CASES))
def test_label_statistics_give_the_documented_initial_and_prior_losses(kind) -> None:
    spec, labels, initial, prior, source = STATS_CASES[kind]
    stats = get_kind(kind).label_statistics(spec, labels)
    assert stats.num_rows == len(labels)
    assert stats.initial_loss == pytest.approx(initial, rel=1e-12)
    assert stats.prior_loss == pytest.approx(prior, rel=1e-12)
    assert source in stats.prior_source
    assert stats.initial_source


@pytest.mark.parametrize("kind", list(STATS_CASES))
def test_init_and_prior_divide_by_the_kinds_reference_losses(kind) -> None:
    """dF/dL_i = 1 / L_i(init) and 1 / L_i(prior): the gradient of the objective with respect to each loss."""
    spec, labels, initial, prior, _ = STATS_CASES[kind]
    other = _spec("classification", "other", 2)
    stats = {spec.name: get_kind(kind).label_statistics(spec, labels),
             other.name: LabelStatistics(num_rows=4, class_counts=np.array([3, 1]))}
    for name, reference in (("init", initial), ("prior", prior)):
        weighting = build_weighting(name, [spec, other], label_stats=stats)
        losses = torch.tensor([0.7, 1.3], dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(weighting.objective(losses), losses)
        other_reference = math.log(2) if name == "init" else _entropy([3, 1])
        np.testing.assert_allclose(grad.numpy(), [1 / reference, 1 / other_reference], rtol=1e-12)


def test_label_statistics_of_tokenised_splits_and_the_trainers_prior(kind_tasks, tokenizer, tmp_path) -> None:
    """What the trainer hands `prior` and `init` (`label_statistics` of the tokenised training splits) against
    the hand-computed formulas on the rows of `_rows`."""
    specs, train, _ = kind_tasks
    rows = {kind: _rows(kind, 12) for kind in KINDS}
    expected = {}
    sentiment = [r["sentiment"] for r in rows["classification"]]
    expected["sentiment"] = (math.log(2), _entropy([sentiment.count("negative"), sentiment.count("positive")]))
    scores = np.array([r["scores"] for r in rows["regression"]], dtype=np.float32).astype(np.float64)
    expected["scores"] = (float(np.mean(np.sum(scores**2, axis=1))), float(np.sum(np.var(scores, axis=0))))
    topics = [r["labels"] for r in rows["multi_label"]]
    frequencies = [sum(name in t for t in topics) / len(topics) for name in ("person", "place")]
    expected["topics"] = (math.log(2), sum(_binary_entropy(p) for p in frequencies) / 2)
    tags = [tag for r in rows["token_classification"] for tag in r["ner_tags"]]  # no row is truncated at 32 pieces
    expected["ner"] = (math.log(4), _entropy([tags.count(t) for t in ("B-LOC", "B-PER", "I-PER", "O")]))
    answers = [r["label"] for r in rows["multiple_choice"]]
    expected["completion"] = (math.log(3), _entropy([answers.count(i) for i in range(3)]))

    for spec in specs:
        stats = label_statistics(train[spec.name], spec)
        assert (stats.initial_loss, stats.prior_loss) == pytest.approx(expected[spec.name], rel=1e-6), spec.name

    for name, index in (("init", 0), ("prior", 1)):
        trainer = make_trainer(training_arguments(tmp_path / name, weighting=name), train, tokenizer, tasks=specs)
        references = trainer.weighting.hparams()["initial_losses" if name == "init" else "prior_losses"]
        assert references == pytest.approx({task: value[index] for task, value in expected.items()}, rel=1e-6)


# ---- exact metrics -----------------------------------------------------------------------------------

def _one_hot(ids, count: int, fill: float = 0.0) -> np.ndarray:
    """Logits whose argmax is `ids` (any shape); `fill` where an id is -100 (padding)."""
    ids = np.asarray(ids)
    logits = np.full((*ids.shape, count), fill, dtype=np.float32)
    for index in np.ndindex(ids.shape):
        if ids[index] >= 0:
            logits[index + (ids[index],)] = 5.0
    return logits


def test_seqeval_entity_scores_and_word_accuracy_on_a_hand_made_bio_example() -> None:
    spec = TaskSpec("ner", "token_classification", None, ("tokens",), label_names=("B-LOC", "B-PER", "I-PER", "O"))
    loc, per, iper, o = 0, 1, 2, 3
    x = IGNORE_INDEX
    # Row 1: "Tim Cook visited Cupertino", Cupertino in 3 pieces; row 2: "Amrozi left"; row 3: "Paris" (+ padding).
    references = [[x, per, iper, o, loc, x, x, x], [x, per, x, x, o, x, x, x], [x, loc, x, x, x, x, x, x]]
    predicted = [[o, per, iper, o, per, loc, loc, o], [o, per, o, o, o, o, o, o], [per, o, per, per, o, o, o, o]]
    # Entities: reference PER(Tim Cook) LOC(Cupertino) PER(Amrozi) LOC(Paris); predicted PER(Tim Cook), PER(Cupertino),
    # PER(Amrozi): 2 right of 3 predicted and 4 true. Words: 7, of which 5 right. The -100 positions never count.
    metrics = compute_task_metrics(spec, _one_hot(predicted, 4), np.array(references))
    precision, recall = 2 / 3, 2 / 4
    assert metrics == pytest.approx({"accuracy": 5 / 7, "precision": precision, "recall": recall,
                                     "f1": 2 * precision * recall / (precision + recall)})
    predictions = get_kind("token_classification").predictions(spec, _one_hot(predicted, 4), np.array(references))
    assert predictions == [["B-PER", "I-PER", "O", "B-PER"], ["B-PER", "O"], ["O"]]


def test_a_tag_set_that_is_not_bio_gets_word_accuracy_only() -> None:
    spec = TaskSpec("pos", "token_classification", None, ("tokens",), label_names=("NOUN", "PROPN", "VERB"))
    references = np.array([[IGNORE_INDEX, 1, 2, 0, IGNORE_INDEX]])
    metrics = compute_task_metrics(spec, _one_hot([[0, 1, 2, 2, 0]], 3), references)
    assert metrics == pytest.approx({"accuracy": 2 / 3})


def test_multi_label_micro_and_macro_f1_and_exact_match_by_hand() -> None:
    spec = TaskSpec("topics", "multi_label", None, ("text",), label_names=("a", "b", "c", "never"))
    references = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=np.float32)
    predicted = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    logits = np.where(predicted == 1, 2.0, -2.0).astype(np.float32)
    logits[3, 0] = 0.0  # a logit of exactly 0 is not a prediction (> 0 is)
    metrics = compute_task_metrics(spec, logits, references)
    # Over all (row, label) decisions: TP 3, FP 1 (row 3, c), FN 2 (row 1, c; row 3, b).
    micro = 2 * 3 / (2 * 3 + 1 + 2)
    # Per label: a: TP 2 -> 1; b: TP 1, FN 1 -> 2/3; c: FP 1, FN 1 -> 0; `never` occurs nowhere and is left out.
    macro = (1 + 2 / 3 + 0) / 3
    assert metrics == pytest.approx({"f1_micro": micro, "f1_macro": macro, "exact_match": 2 / 4})
    assert get_kind("multi_label").predictions(spec, logits) == [["a"], ["b"], ["a", "c"], []]


def test_multiple_choice_accuracy_and_predictions() -> None:
    spec = TaskSpec("q", "multiple_choice", 3, ("context", "choices"))
    scores = np.array([[0.1, 2.0, 0.3], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    assert compute_task_metrics(spec, scores, np.array([1, 0, 0, 2])) == pytest.approx({"accuracy": 0.5})
    assert get_kind("multiple_choice").predictions(spec, scores) == [1, 0, 2, 1]


def test_vector_regression_metrics_pool_the_dimensions_and_predictions_are_lists() -> None:
    spec = TaskSpec("r", "regression", 2, ("text",))
    outputs = np.array([[1.0, 2.0], [2.0, 1.0], [3.0, 5.0]], dtype=np.float32)
    references = np.array([[1.0, 2.5], [2.0, 0.5], [3.5, 5.0]], dtype=np.float32)
    metrics = compute_task_metrics(spec, outputs, references)
    flat_out, flat_ref = outputs.reshape(-1).astype(np.float64), references.reshape(-1).astype(np.float64)
    assert metrics["pearson"] == pytest.approx(float(np.corrcoef(flat_out, flat_ref)[0, 1]), rel=1e-6)
    assert get_kind("regression").predictions(spec, outputs) == [[1.0, 2.0], [2.0, 1.0], [3.0, 5.0]]


# ---- word-piece alignment of token tags ---------------------------------------------------------------

WORDS = ["Amrozi", "met", "Kowalczyk", "in", "Cupertino"]
TAGS = ["B-PER", "O", "B-PER", "O", "B-LOC"]


def test_the_words_split_into_several_pieces(tokenizer) -> None:
    """The premise of the alignment tests: three of the words are several word pieces."""
    assert [len(tokenizer.tokenize(w)) for w in WORDS] == [3, 1, 4, 1, 3]


def test_the_first_piece_of_each_word_carries_its_tag_and_the_others_are_ignored(tokenizer) -> None:
    spec = TaskSpec("ner", "token_classification", None, ("tokens",), "tags")
    spec, prepared, tokenized = build_task(spec, [{"tokens": WORDS, "tags": TAGS}, {"tokens": ["Hi"], "tags": ["O"]}],
                                           None, tokenizer)
    loc, per, o = (spec.label_names.index(t) for t in ("B-LOC", "B-PER", "O"))
    x = IGNORE_INDEX
    row = tokenized["train"][0]
    assert tokenizer.convert_ids_to_tokens(row["input_ids"]) == [
        "[CLS]", "am", "##ro", "##zi", "met", "ko", "##wal", "##cz", "##yk", "in", "cup", "##ert", "##ino", "[SEP]"]
    assert row["labels"] == [x, per, x, x, o, per, x, x, x, o, loc, x, x, x]
    assert prepared["train"][0]["label"] == [per, o, per, o, loc]


def test_words_cut_off_by_max_seq_length_are_neither_trained_on_nor_predicted(tokenizer) -> None:
    spec = TaskSpec("ner", "token_classification", None, ("tokens",), "tags")
    spec, _, tokenized = build_task(spec, [{"tokens": WORDS, "tags": TAGS}], None, tokenizer, max_length=7)
    x, per, o = IGNORE_INDEX, spec.label_names.index("B-PER"), spec.label_names.index("O")
    labels = tokenized["train"][0]["labels"]
    assert labels == [x, per, x, x, o, per, x]  # [CLS] am ##ro ##zi met ko [SEP]: "Kowalczyk" starts, the rest is cut
    outputs = _one_hot([[o, per, o, o, o, per, o]], len(spec.label_names))
    assert get_kind("token_classification").predictions(spec, outputs, np.array([labels])) == [["B-PER", "O", "B-PER"]]


def test_token_classification_batches_pad_labels_with_the_ignore_index(tokenizer) -> None:
    spec = TaskSpec("ner", "token_classification", None, ("tokens",), "tags")
    spec, _, tokenized = build_task(spec, [{"tokens": WORDS, "tags": TAGS}, {"tokens": ["Hi"], "tags": ["O"]}],
                                    None, tokenizer)
    features = [{k: v for k, v in row.items() if k != "task"} for row in tokenized["train"]]
    batch = get_kind("token_classification").collate(features, tokenizer)
    assert batch["input_ids"].shape == batch["labels"].shape == (2, 14)
    assert batch["labels"][1].tolist() == [IGNORE_INDEX, spec.label_names.index("O")] + [IGNORE_INDEX] * 12
    assert batch["attention_mask"][1].tolist() == [1, 1, 1] + [0] * 11


# ---- multiple choice: batches and scores --------------------------------------------------------------

MC_ROWS = [
    {"context": "Tim Cook flew to", "choices": ["Cupertino", "a very long and winding road", "Zurich"], "label": 0},
    {"context": "Amrozi accused his brother", "choices": ["yes", "no", "of deliberately distorting his evidence"],
     "label": 2},
]


def test_multiple_choice_batches_are_batch_by_choices_by_tokens(tokenizer) -> None:
    spec = TaskSpec("mc", "multiple_choice", None, ("context", "choices"))
    spec, _, tokenized = build_task(spec, MC_ROWS, None, tokenizer)
    assert spec.num_labels == 3
    features = [{k: v for k, v in row.items() if k != "task"} for row in tokenized["train"]]
    batch = get_kind("multiple_choice").collate(features, tokenizer)
    longest = max(len(ids) for f in features for ids in f["input_ids"])
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert batch[key].shape == (2, 3, longest), key
    assert batch["labels"].tolist() == [0, 2]
    # Each pair is [CLS] context [SEP] choice [SEP], padded to the longest pair of the batch.
    first = tokenizer.convert_ids_to_tokens(batch["input_ids"][0, 2][batch["attention_mask"][0, 2] == 1].tolist())
    assert first == ["[CLS]", "tim", "cook", "flew", "to", "[SEP]", "zurich", "[SEP]"]


def test_choice_scores_are_one_shared_linear_layer_on_each_pooled_pair(tokenizer) -> None:
    spec = TaskSpec("mc", "multiple_choice", None, ("context", "choices"))
    spec, _, tokenized = build_task(spec, MC_ROWS, None, tokenizer)
    model = tiny_model([spec]).eval()
    features = [{k: v for k, v in row.items() if k != "task"} for row in tokenized["train"]]
    batch = get_kind("multiple_choice").collate(features, tokenizer)
    with torch.no_grad():
        output = model(**batch, task="mc")
        assert output.logits.shape == (2, 3)
        linear = model.heads["mc"].classifier
        assert linear.weight.shape == (1, model.config.encoder.hidden_size)
        for r, feature in enumerate(features):
            for j in range(3):  # each pair alone, unpadded, through the encoder and the one linear layer
                pair = {key: torch.tensor([feature[key][j]]) for key in ("input_ids", "attention_mask", "token_type_ids")}
                score = linear(model.encoder(**pair).pooler_output)
                torch.testing.assert_close(output.logits[r, j], score[0, 0], rtol=1e-5, atol=1e-5)
        expected_loss = sum(_ce(output.logits[r].tolist(), y) for r, y in enumerate([0, 2])) / 2
        assert output.loss.item() == pytest.approx(expected_loss, rel=1e-5)


def test_choices_in_one_column_each(tokenizer) -> None:
    spec = TaskSpec("mc", "multiple_choice", None, ("context", "a", "b"), label_names=("a", "b"))
    rows = [{"context": "Tim Cook flew to", "a": "Cupertino", "b": "the moon", "label": "a"},
            {"context": "Fish", "a": "fly", "b": "swim", "label": "b"}]
    spec, prepared, tokenized = build_task(spec, rows, None, tokenizer)
    assert spec.num_labels == 2 and prepared["train"]["label"] == [0, 1]
    assert [len(ids) for ids in tokenized["train"][1]["input_ids"]] == [5, 5]  # [CLS] fish [SEP] fly|swim [SEP]
