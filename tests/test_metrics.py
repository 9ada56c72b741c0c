"""hf_mtl.metrics: exact values on small inputs worked out by hand, the metric kinds a TaskSpec may hold,
and the task / GLUE scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hf_mtl.metrics import METRICS, compute_task_metrics, glue_score, task_score
from hf_mtl.tasks import TaskSpec, get_task

# Logits whose argmax is [0, 1, 0, 1]; references [0, 1, 1, 1]:
# TP = 2 (rows 1, 3), TN = 1 (row 0), FP = 0, FN = 1 (row 2).
LOGITS = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [-1.0, 1.0]])
REFERENCES = np.array([0, 1, 1, 1])


def test_metric_names_are_the_glue_ones_and_the_multi_label_ones() -> None:
    assert set(METRICS) == {"accuracy", "f1", "matthews_correlation", "pearson", "spearmanr",
                            "f1_micro", "f1_macro", "exact_match"}


def test_mrpc_f1_and_accuracy_by_hand() -> None:
    metrics = compute_task_metrics(get_task("mrpc"), LOGITS, REFERENCES)
    # accuracy 3/4; precision 2/2, recall 2/3 -> F1 = 2·1·(2/3) / (1 + 2/3) = 0.8
    assert metrics == {"f1": pytest.approx(0.8, abs=1e-12), "accuracy": 0.75}
    assert all(type(value) is float for value in metrics.values())
    assert task_score(metrics) == pytest.approx(0.775, abs=1e-12)


def test_cola_matthews_correlation_by_hand() -> None:
    metrics = compute_task_metrics(get_task("cola"), LOGITS, REFERENCES)
    # (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = 2 / sqrt(2·3·1·2) = 1/sqrt(3)
    assert metrics == {"matthews_correlation": pytest.approx(1 / math.sqrt(3), abs=1e-12)}


def test_mnli_takes_the_argmax_of_three_logits() -> None:
    logits = np.array([[0.1, 0.2, 0.9], [3.0, 0.0, 0.0], [0.0, 1.0, 0.5]])
    assert compute_task_metrics(get_task("mnli"), logits, np.array([2, 0, 0])) == {"accuracy": pytest.approx(2 / 3)}


def test_stsb_pearson_and_spearman_by_hand() -> None:
    # Deviations from the mean 2.5: predictions (-1.5, -0.5, 0.5, 1.5), references (-1.5, 0.5, -0.5, 1.5):
    # covariance sum 4, variance sums 5 and 5 -> r = 0.8; ranks equal the values, so Spearman is 0.8 too.
    metrics = compute_task_metrics(get_task("stsb"), np.array([[1.0], [2.0], [3.0], [4.0]]), np.array([1, 3, 2, 4.0]))
    assert metrics == {"pearson": pytest.approx(0.8, abs=1e-12), "spearmanr": pytest.approx(0.8, abs=1e-12)}


def test_pearson_and_spearman_differ_on_a_monotone_outlier() -> None:
    # Ranks agree (Spearman 1); Pearson: deviations (-3, -2, -1, 6) vs (-1.5, -0.5, 0.5, 1.5):
    # 14 / sqrt(50 · 5) = 14 / sqrt(250).
    metrics = compute_task_metrics(get_task("stsb"), np.array([1.0, 2.0, 3.0, 10.0]), np.array([1.0, 2.0, 3.0, 4.0]))
    assert metrics["spearmanr"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["pearson"] == pytest.approx(14 / math.sqrt(250), abs=1e-12)


def test_f1_without_positive_predictions_is_zero() -> None:
    assert METRICS["f1"](np.array([0, 0]), np.array([1, 0])) == {"f1": 0.0}


def test_constant_regression_output_gives_nan_correlations() -> None:
    with pytest.warns(Warning):  # scipy says why: the correlation of a constant is undefined
        metrics = compute_task_metrics(get_task("stsb"), np.zeros((3, 1)), np.array([1.0, 2.0, 3.0]))
    assert math.isnan(metrics["pearson"]) and math.isnan(metrics["spearmanr"])


class EvaluateLikeModule:
    """Stands in for an `evaluate` module: keyword arguments, a dict back."""

    def compute(self, *, predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
        return {"errors": np.float64(np.sum(predictions != references))}


def test_evaluate_modules_and_callables_receive_class_ids_and_merge() -> None:
    seen: list[np.ndarray] = []

    def positives(predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
        seen.append(predictions)
        return {"predicted_positives": int(predictions.sum())}

    spec = TaskSpec(name="custom", kind="classification", num_labels=2, text_columns=("text",),
                    metrics=("accuracy", EvaluateLikeModule(), positives))
    metrics = compute_task_metrics(spec, LOGITS, REFERENCES)
    assert metrics == {"accuracy": 0.75, "errors": 1.0, "predicted_positives": 2.0}
    assert all(type(value) is float for value in metrics.values())
    np.testing.assert_array_equal(seen[0], [0, 1, 0, 1])


def test_unknown_metric_name_lists_the_valid_ones() -> None:
    """Offline, a name that is not built in cannot be loaded from the Hub: the error lists the built-in names
    and says a local module path works."""
    spec = TaskSpec(name="custom", kind="classification", num_labels=2, text_columns=("text",), metrics=("no_such_metric",))
    with pytest.raises(ValueError, match=r"task 'custom': metric 'no_such_metric' is not a built-in metric \(accuracy, "
                                         r"f1, matthews_correlation, pearson, spearmanr, .*seqeval\) and "
                                         r"evaluate.load\('no_such_metric'\) failed: .*local evaluate module"):
        compute_task_metrics(spec, LOGITS, REFERENCES)


LOCAL_METRIC = '''
import datasets
import evaluate


class WrongCount(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="rows predicted wrong", citation="", inputs_description="",
                                   features=datasets.Features({"predictions": datasets.Value("int64"),
                                                               "references": datasets.Value("int64")}))

    def _compute(self, predictions, references):
        return {"wrong": sum(p != r for p, r in zip(predictions, references))}
'''


def test_a_local_evaluate_module_is_a_metric_offline(tmp_path) -> None:
    """`metrics` may name an `evaluate` module by its local path: loaded with evaluate.load, offline."""
    pytest.importorskip("evaluate")
    path = tmp_path / "wrong_count.py"
    path.write_text(LOCAL_METRIC)
    spec = TaskSpec(name="custom", kind="classification", num_labels=2, text_columns=("text",),
                    metrics=("accuracy", str(path)))
    # LOGITS predict [0, 1, 0, 1] for REFERENCES [0, 1, 1, 1]: one wrong.
    assert compute_task_metrics(spec, LOGITS, REFERENCES) == {"accuracy": 0.75, "wrong": 1.0}


def test_metrics_returning_the_same_key_are_rejected() -> None:
    spec = TaskSpec(name="custom", kind="classification", num_labels=2, text_columns=("text",),
                    metrics=("accuracy", lambda predictions, references: {"accuracy": 1.0}))
    with pytest.raises(ValueError, match=r"returns \['accuracy'\], already returned"):
        compute_task_metrics(spec, LOGITS, REFERENCES)


def test_prediction_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match=r"shape \(4,\); a classification task takes logits of shape \(n, 2\)"):
        compute_task_metrics(get_task("sst2"), np.array([0, 1, 0, 1]), REFERENCES)
    with pytest.raises(ValueError, match=r"shape \(4, 2\); a regression task takes outputs of shape \(n, 1\)"):
        compute_task_metrics(get_task("stsb"), LOGITS, REFERENCES)
    with pytest.raises(ValueError, match=r"4 predictions for 3 references"):
        compute_task_metrics(get_task("sst2"), LOGITS, REFERENCES[:3])


def test_glue_score_is_the_macro_average_of_task_scores() -> None:
    scores = {"mrpc": task_score({"f1": 0.8, "accuracy": 0.75}), "sst2": task_score({"accuracy": 0.9}),
              "mnli": (0.7 + 0.6) / 2}  # matched and mismatched, averaged by the caller
    assert glue_score(scores) == pytest.approx((0.775 + 0.9 + 0.65) / 3, abs=1e-12)


def test_empty_scores_are_errors() -> None:
    with pytest.raises(ValueError, match=r"task_score: metrics is empty"):
        task_score({})
    with pytest.raises(ValueError, match=r"glue_score: scores is empty"):
        glue_score({})
