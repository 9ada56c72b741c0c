"""`MultiTaskTrainer.compute_loss`: the one place a task's loss is computed, and the strategy's objective.

* Given a whole multi-task batch it returns F(L_1..L_K); its gradient equals the update of the
  task-by-task step for every loss-level strategy (to 1e-6).
* A subclass that overrides it for one task's batch changes training, the `init` estimate and
  evaluation alike.
"""

from __future__ import annotations

import pytest
import torch

from hf_mtl.trainer import MultiTaskTrainer
from hf_mtl.weighting import WEIGHTINGS

from conftest import TASKS3, tokenized_glue, training_arguments
from conftest import make_trainer as make_tiny_trainer

LOSS_LEVEL = [name for name, cls in WEIGHTINGS.items() if cls.kind == "loss"]


@pytest.fixture(scope="module")
def datasets(glue_dir, tokenizer):
    return tokenized_glue(glue_dir, tokenizer)


def make_trainer(tmp_path, datasets, tokenizer, cls=MultiTaskTrainer, **overrides):
    train, evaluation = datasets
    return make_tiny_trainer(training_arguments(tmp_path, **{"learning_rate": 0.1, **overrides}), train, tokenizer,
                             eval_dataset=evaluation, trainer_class=cls)


def first_batch(trainer):
    return trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))


@pytest.mark.parametrize("name", LOSS_LEVEL)
def test_objective_gradient_equals_the_task_by_task_step(name, tmp_path, datasets, tokenizer):
    overrides = {"task_weights": "sst2=2,stsb=0.5,mrpc=1"} if name == "static" else {}
    trainer = make_trainer(tmp_path, datasets, tokenizer, weighting=name, **overrides)
    model, batch = trainer.model, first_batch(trainer)
    model.train()
    objective, extra = trainer.compute_loss(model, batch, return_outputs=True)
    assert objective.dim() == 0 and sorted(extra["losses"]) == sorted(TASKS3)
    objective.backward()
    expected = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    trainer.step_engine(model, [batch], step=1)
    got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert sorted(got) == sorted(expected)
    scale = max(g.abs().max().item() for g in expected.values())
    assert scale > 0
    for n, g in expected.items():
        torch.testing.assert_close(got[n], g, rtol=1e-5, atol=1e-6 * scale, msg=n)


def test_gradient_level_strategies_have_no_objective(tmp_path, datasets, tokenizer):
    trainer = make_trainer(tmp_path, datasets, tokenizer, weighting="grad_normalize")
    with pytest.raises(TypeError, match="no loss objective"):
        trainer.compute_loss(trainer.model, first_batch(trainer))


def test_a_multitask_batch_must_hold_every_task(tmp_path, datasets, tokenizer):
    trainer = make_trainer(tmp_path, datasets, tokenizer)
    batch = first_batch(trainer)
    del batch["stsb"]
    with pytest.raises(ValueError, match=r"one batch of every task .*got \['mrpc', 'sst2'\]"):
        trainer.compute_loss(trainer.model, batch)


class TripledSST2(MultiTaskTrainer):
    """sst2's loss times 3: a user's own loss for one task."""

    calls: list[str]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if inputs.get("task") != "sst2":
            return result
        self.calls.append("sst2")
        return (result[0] * 3, result[1]) if return_outputs else result * 3


def test_an_overridden_compute_loss_changes_training_init_estimate_and_evaluation(tmp_path, datasets, tokenizer):
    plain = make_trainer(tmp_path / "plain", datasets, tokenizer, weighting="init", init_estimate_batches=1)
    TripledSST2.calls = []
    tripled = make_trainer(tmp_path / "tripled", datasets, tokenizer, cls=TripledSST2, weighting="init",
                           init_estimate_batches=1)
    plain.train()
    tripled.train()
    # init: L_i / L_i(init) with both measured through compute_loss -> sst2's factor 3 cancels in the ratio,
    # so the effective weight of sst2 is a third of the plain run's while its loss is three times larger.
    plain_log = next(h for h in plain.state.log_history if "weight_sst2" in h)
    tripled_log = next(h for h in tripled.state.log_history if "weight_sst2" in h)
    assert tripled_log["loss_sst2"] == pytest.approx(3 * plain_log["loss_sst2"], rel=1e-5)
    assert tripled_log["weight_sst2"] == pytest.approx(plain_log["weight_sst2"] / 3, rel=1e-5)
    assert tripled_log["weight_mrpc"] == pytest.approx(plain_log["weight_mrpc"], rel=1e-5)
    # Same update: F = Σ L_i / L_i(init) is unchanged when both L_sst2 and its estimate are tripled.
    for (name, p), q in zip(plain.model.named_parameters(), tripled.model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)
    calls_in_training = len(tripled.calls)
    assert calls_in_training >= 3  # the estimate batch and two steps
    plain_eval, tripled_eval = plain.evaluate(), tripled.evaluate()
    assert len(tripled.calls) > calls_in_training
    assert tripled_eval["eval_sst2_loss"] == pytest.approx(3 * plain_eval["eval_sst2_loss"], rel=1e-5)
    assert tripled_eval["eval_mrpc_loss"] == pytest.approx(plain_eval["eval_mrpc_loss"], rel=1e-5)
