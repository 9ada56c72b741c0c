"""MultiTaskTrainer with a tiny BERT on real GLUE rows: accumulation, logging, evaluation keys, resume."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TASKS, tokenized_glue, training_arguments
from conftest import make_trainer as make_tiny_trainer


@pytest.fixture(scope="module")
def datasets(glue_dir, tokenizer):
    return tokenized_glue(glue_dir, tokenizer)


def make_trainer(tmp_path, datasets, tokenizer, **overrides):
    train, evaluation = datasets
    return make_tiny_trainer(training_arguments(tmp_path, **overrides), train, tokenizer,
                             eval_dataset=evaluation)


@pytest.mark.parametrize("weighting", ["equal", "geometric", "grad_normalize"])
def test_gradient_accumulation_equals_one_large_batch(weighting, tmp_path, datasets, tokenizer):
    big = make_trainer(tmp_path / "big", datasets, tokenizer, weighting=weighting, per_device_train_batch_size=8)
    small = make_trainer(
        tmp_path / "small", datasets, tokenizer, weighting=weighting,
        per_device_train_batch_size=4, gradient_accumulation_steps=2,
    )
    before = {n: p.detach().clone() for n, p in big.model.named_parameters()}
    big.train()
    small.train()
    moved = 0.0
    for (name, p_big), p_small in zip(big.model.named_parameters(), small.model.parameters()):
        torch.testing.assert_close(p_small, p_big, rtol=1e-5, atol=1e-6, msg=name)
        moved = max(moved, (p_big - before[name]).abs().max().item())
    assert moved > 1e-3, "the parameters did not move: the comparison would be vacuous"
    logged = [h for h in big.state.log_history if "loss" in h]
    logged_small = [h for h in small.state.log_history if "loss" in h]
    assert [h["loss"] for h in logged] == pytest.approx([h["loss"] for h in logged_small], rel=1e-5)


def test_logs_every_task_loss_and_weight_and_evaluates_every_task(tmp_path, datasets, tokenizer):
    trainer = make_trainer(tmp_path, datasets, tokenizer, weighting="geometric")
    trainer.train()
    train_logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(train_logs) == 2
    for spec in TASKS:
        assert train_logs[0][f"loss_{spec.name}"] > 0
        # geometric: dF/dL_i = 1/L_i
        assert train_logs[0][f"weight_{spec.name}"] == pytest.approx(1 / train_logs[0][f"loss_{spec.name}"], rel=1e-6)
    expected_mean = sum(train_logs[0][f"loss_{s.name}"] for s in TASKS) / len(TASKS)
    assert train_logs[0]["loss"] == pytest.approx(expected_mean, rel=1e-4)

    metrics = trainer.evaluate()
    for key in ("eval_sst2_accuracy", "eval_mrpc_f1", "eval_mrpc_accuracy", "eval_stsb_pearson",
                "eval_stsb_spearmanr", "eval_sst2_loss", "eval_glue_score"):
        assert key in metrics, key
    per_task = [metrics["eval_sst2_accuracy"], (metrics["eval_mrpc_f1"] + metrics["eval_mrpc_accuracy"]) / 2,
                (metrics["eval_stsb_pearson"] + metrics["eval_stsb_spearmanr"]) / 2]
    assert metrics["eval_glue_score"] == pytest.approx(sum(per_task) / 3)


def test_weighting_state_is_checkpointed_and_restored(tmp_path, datasets, tokenizer):
    trainer = make_trainer(tmp_path, datasets, tokenizer, weighting="init", init_estimate_batches=2,
                           save_strategy="steps", save_steps=2)
    trainer.train()
    saved = json.loads((tmp_path / "checkpoint-2" / "weighting_state.json").read_text())
    assert saved["name"] == "init"
    estimated = trainer.weighting.state_dict()
    assert saved["state"] == estimated

    resumed = make_trainer(tmp_path, datasets, tokenizer, weighting="init", init_estimate_batches=2,
                           save_strategy="no", max_steps=3)
    assert resumed.weighting.needs_initial_losses
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert resumed.weighting.state_dict() == estimated


def test_mismatched_tasks_flag_is_rejected(tmp_path, datasets, tokenizer):
    with pytest.raises(ValueError, match="does not match the model's tasks"):
        make_trainer(tmp_path, datasets, tokenizer, tasks="sst2,mrpc")


def test_bf16_autocast_trains_grad_normalize_and_logs_norms(tmp_path, datasets, tokenizer):
    trainer = make_trainer(tmp_path, datasets, tokenizer, weighting="grad_normalize", bf16=True, use_cpu=True, optim="adamw_torch",
                           learning_rate=1e-3)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    dtypes = set()
    trainer.model.heads["sst2"].classifier.register_forward_hook(lambda m, i, out: dtypes.add(out.dtype))
    trainer.train()
    assert dtypes == {torch.bfloat16}, "the forward pass did not run under bf16 autocast"
    logs = [h for h in trainer.state.log_history if "loss" in h]
    for spec in TASKS:
        norm = logs[-1][f"grad_norm_{spec.name}"]
        assert 0 < norm < float("inf")
        assert logs[-1][f"weight_{spec.name}"] == pytest.approx(1 / norm, rel=1e-6)
    for name, p in trainer.model.named_parameters():
        assert torch.isfinite(p).all(), name
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())


def test_weighting_state_with_tensors_round_trips_without_pickle(tmp_path):
    from hf_mtl.checkpoint import load_weighting_state, save_weighting_state
    from hf_mtl.weighting.equal import EqualWeighting

    class WithBuffers(EqualWeighting):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.ema = torch.zeros(2, 3)

        def state_dict(self):
            return {**super().state_dict(), "ema": self.ema, "nested": {"steps": 4, "last": torch.ones(2)}}

        def load_state_dict(self, state):
            super().load_state_dict(state)
            self.ema, self.nested = state["ema"], state["nested"]

    saved = WithBuffers(TASKS[:2])
    saved.ema = torch.arange(6.0).reshape(2, 3)
    save_weighting_state(saved, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weighting_state.json", "weighting_state.safetensors"]
    restored = WithBuffers(TASKS[:2])
    assert load_weighting_state(restored, str(tmp_path))
    torch.testing.assert_close(restored.ema, saved.ema)
    assert restored.nested["steps"] == 4 and torch.equal(restored.nested["last"], torch.ones(2))
    assert not load_weighting_state(restored, str(tmp_path / "missing"))


def test_weighting_parameters_train_at_a_constant_rate_under_warmup(tmp_path, datasets, tokenizer):
    trainer = make_trainer(tmp_path, datasets, tokenizer, weighting="uncertainty", weighting_lr=0.05,
                           lr_scheduler_type="linear", warmup_steps=5, max_steps=2)
    trainer.train()
    groups = trainer.optimizer.param_groups
    assert groups[-1]["params"] == trainer.weighting.parameters()
    assert groups[-1]["lr"] == 0.05 and groups[-1]["weight_decay"] == 0.0
    assert groups[0]["lr"] < 0.5  # the model's own group follows the warm-up
    assert any(v != 0.0 for v in trainer.weighting.parameters()[0].tolist())


@pytest.mark.parametrize("max_grad_norm", [0.05, 0.0, 100.0])
def test_clipping_reuses_the_steps_gradient_norm(max_grad_norm, tmp_path, datasets, tokenizer, monkeypatch):
    """The engine measures the combined gradient's norm for its fault check; the Trainer's clipping and its
    logged grad_norm reuse it instead of reading the gradients again, with the same result as the
    Trainer's own `clip_grad_norm_` (clipping active at 0.05, off at 0, inactive at 100)."""
    settings = dict(weighting="geometric", max_grad_norm=max_grad_norm, max_steps=3)
    ours = make_trainer(tmp_path / "ours", datasets, tokenizer, **settings)
    reference = make_trainer(tmp_path / "reference", datasets, tokenizer, **settings)
    monkeypatch.setattr(reference, "_take_step_grad_norm", lambda: None)  # the Trainer measures and clips itself
    calls = []
    clip = ours.accelerator.clip_grad_norm_
    monkeypatch.setattr(ours.accelerator, "clip_grad_norm_", lambda *a, **k: calls.append(a) or clip(*a, **k))
    ours.train()
    reference.train()
    assert calls == [], "the Trainer read the gradients again for their norm"
    for (name, p), q in zip(reference.model.named_parameters(), ours.model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-7, msg=name)
    norms = [h["grad_norm"] for h in ours.state.log_history if "grad_norm" in h]
    expected = [h["grad_norm"] for h in reference.state.log_history if "grad_norm" in h]
    assert len(norms) == 3 and norms == pytest.approx(expected, rel=1e-5)
    if max_grad_norm == 0.05:
        assert min(expected) > 0.05, "clipping never acted: the comparison would not test it"
