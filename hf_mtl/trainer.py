"""`MultiTaskTrainer`: the Hugging Face `Trainer`, stepping task by task with a weighting strategy.

What it overrides, and why:

* `get_train_dataloader`: the multi-task stream (`hf_mtl.sampling`): every task in every step, its share of
  the rows sized by `--sampling_alpha`, or one task per step (`--task_sampling one_per_step`); identical on
  every rank.
* `training_step`: the Trainer calls it once per micro-batch; the step's micro-batches are gathered
  and the whole step runs at the last one (inside the Trainer's gradient-sync context) through
  `TaskByTaskStep`, tasks outer and micro-batches inner, so gradient accumulation gives the update
  of one large batch for every strategy.
* `compute_loss`: the one place a task's loss is computed (the engine calls it for every task's forward
  pass, as do the `init` estimate and evaluation); given a whole multi-task batch it returns the
  strategy's objective F(L_1..L_K) as one differentiable scalar.
* `evaluate`: per-task metrics as `eval_<task>_<metric>` plus the macro score over tasks, `eval_glue_score`
  when every task is a GLUE task, else `eval_score`.
* `log`: adds `loss_<task>`, `weight_<task>`, for gradient-level strategies `grad_norm_<task>`, and
  for those that see all task gradients at once `cos_<task>_<task>` (the cosine between two task
  gradients: negative means conflict), means since the last log, to the training logs, so
  every `report_to` backend and `trainer_state.json` get them. `loss` itself is the plain mean of
  the task losses, comparable across strategies. What the sampler drew: `rows_<task>` (rows per step, all
  ranks together), `epochs_<task>` (passes over the task's training rows so far) and `sampling_alpha`. In a
  one-task-per-step run a task's loss and weight are means over the steps that drew it.
* `create_optimizer`: adds the weighting's own trainable parameters (uncertainty, GradNorm, ...) as
  a parameter group, so their optimizer state is checkpointed like the model's.
* `train`: restores the weighting's state from the checkpoint it resumes from (the state is written
  next to each checkpoint as `weighting_state.json`, last, so its presence marks a complete
  checkpoint), and while it runs turns SIGTERM/SIGINT into "finish this step, save a checkpoint,
  stop" (`checkpoint_on_signal`).
* `_save_checkpoint`, `_finalize_training`: the Trainer's, with each task's best checkpoint
  (`hf_mtl.task_best.TaskBestCallback`, which records every task's best evaluation) kept out of
  `save_total_limit`'s rotation and its end-of-training clean-up.
* `create_model_card`: the multi-task card of `hf_mtl.model_card` (tasks, weighting, per-task metrics, curves),
  which `push_to_hub` uploads with the model, tokenizer and config.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
from accelerate.utils import DistributedType
from torch.utils.data import DataLoader
from transformers import Trainer
from transformers.trainer_utils import EvalPrediction

from .callbacks import WeightingStateCallback, signals_to_checkpoint
from .checkpoint import (
    WEIGHTING_STATE_FILE,
    checkpoint_damage,
    intact_checkpoint_before,
    is_complete_checkpoint,
    last_complete_checkpoint,
    load_engine_state,
    load_weighting_state,
)
from .data import label_statistics
from .distributed import all_reduce_sum
from .engine import StepResult, TaskByTaskStep
from .engine.state import loss_units
from .metrics import compute_task_metrics, glue_score, score_name, task_score
from .sampling import (
    MultiTaskBatchSampler,
    MultiTaskCollator,
    MultiTaskDataset,
    TaskCollator,
)
from .task_best import (
    TaskBestCallback,
    delete_checkpoints_except,
    parse_best_metrics,
    rotate_checkpoints_keeping,
)
from .task_file import parse_task_list
from .tasks import TaskSpec
from .training_args import MultiTaskTrainingArguments
from .weighting import Weighting, build_weighting

logger = logging.getLogger(__name__)

class MultiTaskTrainer(Trainer):
    """A `Trainer` for `MultiTaskModel` (see the module docstring for what changes).

    Args:
        model: a `MultiTaskModel`.
        args: `MultiTaskTrainingArguments`.
        train_dataset: task name -> tokenised training `Dataset` (columns `input_ids`, `attention_mask`,
            optionally `token_type_ids`, `labels`, `task`), as `hf_mtl.data.tokenize_splits` makes them.
        eval_dataset: evaluation key -> tokenised `Dataset`; keys are `TaskSpec.eval_keys()` values
            (`mrpc`, `mnli_matched`, ...).
        tasks: the task specs; by default rebuilt from `model.config.tasks` (GLUE metrics for GLUE names).
        weighting: a ready strategy; by default built from `args.weighting` and the training labels' statistics.
    """

    def __init__(
        self,
        model: Any = None,
        args: MultiTaskTrainingArguments | None = None,
        train_dataset: Mapping[str, Any] | None = None,
        eval_dataset: Mapping[str, Any] | None = None,
        processing_class: Any = None,
        tasks: Sequence[TaskSpec] | None = None,
        weighting: Weighting | None = None,
        data_collator: Any = None,
        **kwargs: Any,
    ) -> None:
        if args is None:
            args = MultiTaskTrainingArguments(output_dir="hf_mtl_output")
        self.tasks = list(tasks) if tasks is not None else model.config.task_specs
        names = [t.name for t in self.tasks]
        if args.tasks:
            wanted = [t.name for t in parse_task_list(args.tasks)]
            if wanted != names:
                raise ValueError(f"--tasks {args.tasks} does not match the model's tasks {names}; train a model built for these tasks.")
        self._eval_specs = {key: t for t in self.tasks for key in t.eval_keys().values()}
        multitask_train = None
        if train_dataset is not None:
            missing = [n for n in names if n not in train_dataset]
            if missing:
                raise ValueError(f"train_dataset: no training data for task(s) {missing}; it has {list(train_dataset)}.")
            multitask_train = MultiTaskDataset([train_dataset[n] for n in names], names)
        if eval_dataset is not None:
            unknown = [k for k in eval_dataset if k not in self._eval_specs]
            if unknown:
                raise ValueError(
                    f"eval_dataset: keys {unknown} match no task split; expected some of {list(self._eval_specs)}."
                )
        if data_collator is None and processing_class is not None:
            data_collator = TaskCollator(processing_class, self.tasks)
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=multitask_train,
            eval_dataset=dict(eval_dataset) if eval_dataset is not None else None,
            processing_class=processing_class,
            **kwargs,
        )
        ranks = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        if ranks != self.args.world_size:
            raise ValueError(
                f"{ranks} processes were launched but the Trainer sees world_size={self.args.world_size}: every "
                "process would train on the full batch by itself. Launch one process per device (torchrun "
                "--nproc_per_node), or pass --use_cpu to train on CPU processes."
            )
        if weighting is None:
            stats = (
                {n: label_statistics(ds, spec) for n, ds, spec in zip(names, multitask_train.datasets, self.tasks)}
                if multitask_train is not None
                else {}
            )
            weighting = build_weighting(args.weighting, self.tasks, stats, args.weighting_hparams(), seed=args.seed)
        self.weighting = weighting
        self.step_engine = TaskByTaskStep(weighting, names, self.accelerator, nan_policy=args.nan_policy,
                                          locate_rows=self._training_rows, compute_loss=self.compute_loss)
        self.add_callback(WeightingStateCallback(weighting, self.step_engine))
        self.add_callback(TaskBestCallback({t.name: list(t.eval_keys().values()) for t in self.tasks},
                                           parse_best_metrics(getattr(args, "best_metric_for_task", None), self.tasks)))
        #: The signal (e.g. `signal.SIGTERM`) that stopped the last `train()` early, None if it ran to the end.
        self.interrupted_by: int | None = None
        self._train_batch_sampler: MultiTaskBatchSampler | None = None
        self.model.config.weighting = {"name": weighting.name, **weighting.hparams()}
        self._pending_micro_batches: list[dict[str, dict[str, Any]]] = []
        self._step_grad_norm: float | None = None  # the last step's combined-gradient norm, for clipping
        self._task_logs: dict[str, list[float]] = {}
        self._step_means: list[float] = []  # the steps' mean task losses since the last log
        self._skipped_since_log = False

    # ---- data ---------------------------------------------------------------------------------

    def get_train_dataloader(self) -> DataLoader:
        """The multi-task stream of `--task_sampling`, `--sampling_alpha` and `--sampling_schedule`, with each task's
        `oversample` factor (`hf_mtl.sampling`)."""
        oversample = [spec.oversample or 1.0 for spec in self.tasks]
        sampler = self._batch_sampler(self.args.task_sampling, self.args.sampling_plan(),
                                      None if all(o == 1.0 for o in oversample) else oversample)
        steps = self.args.max_steps
        sampler.total_steps = steps if steps > 0 else math.ceil(self.args.num_train_epochs * sampler.steps_per_epoch)
        self._train_batch_sampler = sampler
        return self._stream_loader(sampler)

    def _batch_sampler(self, mode: str, schedule: Any = None, oversample: list[float] | None = None) -> MultiTaskBatchSampler:
        if self.train_dataset is None:
            raise ValueError("MultiTaskTrainer: training requires a train_dataset.")
        return MultiTaskBatchSampler(
            self.train_dataset.sizes,
            self._train_batch_size,
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            batches_per_step=self.args.world_size * self.args.gradient_accumulation_steps,
            mode=mode, schedule=schedule, oversample=oversample,
        )

    def _stream_loader(self, sampler: MultiTaskBatchSampler) -> DataLoader:
        loader = DataLoader(
            self.train_dataset,
            batch_sampler=sampler,
            collate_fn=MultiTaskCollator(self.data_collator),
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers and self.args.dataloader_num_workers > 0,
        )
        return self.accelerator.prepare(loader)

    # ---- training -----------------------------------------------------------------------------

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """The Trainer's optimizer, plus a parameter group for a learning strategy's own parameters
        (no weight decay; `weighting.parameter_lr()` or the trainer's learning rate)."""
        optimizer = super().create_optimizer(model)
        own = self.weighting.parameters()
        if own and not any(p is own[0] for group in optimizer.param_groups for p in group["params"]):
            lr = self.weighting.parameter_lr() or self.args.learning_rate
            optimizer.add_param_group({"params": own, "lr": lr, "weight_decay": 0.0})
        return optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        """The Trainer's schedule for the model; the weighting's own parameters keep a constant rate
        (the papers' setting: a warm-up or decay meant for fine-tuning would freeze them)."""
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        if self.weighting.parameters() and isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            scheduler.lr_lambdas[-1] = _constant_rate
            scheduler.optimizer.param_groups[-1]["lr"] = scheduler.base_lrs[-1]
        return scheduler

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """`Trainer.train`, resuming the weighting's state too. `resume_from_checkpoint=True` takes the last
        complete, intact checkpoint of `output_dir` (a half-written or damaged one is skipped with a warning);
        a path must be complete and intact (`checkpoint_damage`), and its weighting state must fit this run."""
        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            checkpoint = last_complete_checkpoint(self.args.output_dir)
            if checkpoint is None:
                raise ValueError(f"resume_from_checkpoint=True: no complete checkpoint in {self.args.output_dir}.")
        if isinstance(checkpoint, str):
            if not os.path.isdir(checkpoint):
                raise FileNotFoundError(
                    f"resume_from_checkpoint: {checkpoint} is not a folder; pass a checkpoint-N folder of an earlier run's "
                    "--output_dir, or leave the flag out to resume from the last intact checkpoint of --output_dir.")
            if not is_complete_checkpoint(checkpoint):
                usable = intact_checkpoint_before(checkpoint)
                raise ValueError(
                    f"resume_from_checkpoint: {checkpoint} is incomplete (no trainer_state.json or {WEIGHTING_STATE_FILE}: "
                    f"the run stopped while writing it). Resume from {usable or 'an earlier complete checkpoint'} instead."
                )
            problem = checkpoint_damage(checkpoint)
            if problem is not None:
                usable = intact_checkpoint_before(checkpoint, or_after=True)
                instead = (f"Resume from the last intact one instead (--resume_from_checkpoint {usable})" if usable
                           else f"There is no intact checkpoint next to it: restore that file, or delete {checkpoint} to start over")
                raise ValueError(f"resume_from_checkpoint: {checkpoint} is damaged: {problem}. {instead}.")
            engine_state = load_engine_state(checkpoint, self.step_engine.state_dict())  # checked before either loads
            load_weighting_state(self.weighting, checkpoint)
            self.step_engine.load_state_dict(engine_state)
            self.task_best.restore(checkpoint)
        self.interrupted_by = None
        with signals_to_checkpoint(self):
            return super().train(checkpoint, *args, **kwargs)

    @property
    def task_best(self) -> TaskBestCallback:
        """The callback recording each task's best evaluation (`hf_mtl.task_best`)."""
        return next(cb for cb in self.callback_handler.callbacks if isinstance(cb, TaskBestCallback))

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """The Trainer's checkpoint, with each task's best checkpoint kept out of `save_total_limit`'s rotation."""
        limit, keep = self.args.save_total_limit, self.task_best.checkpoints()
        if not limit or not keep:
            return super()._save_checkpoint(model, trial)
        self.args.save_total_limit = None  # the rotation below replaces the Trainer's
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        if self.args.should_save:
            rotate_checkpoints_keeping(self._get_output_dir(trial=trial), limit, keep, self.state.best_model_checkpoint)

    def _finalize_training(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
        """The Trainer's end of training; with `save_total_limit=1` it deletes every checkpoint but its own best,
        and each task's best checkpoint is kept too."""
        keep = self.task_best.checkpoints()
        best = self.state.best_model_checkpoint
        if self.args.save_total_limit != 1 or not keep or best is None:
            return super()._finalize_training(trial, *args, **kwargs)
        self.args.save_total_limit = None
        try:
            output = super()._finalize_training(trial, *args, **kwargs)
        finally:
            self.args.save_total_limit = 1
        if self.args.should_save:
            delete_checkpoints_except(self._get_output_dir(trial=trial), keep | {os.path.basename(best)})
        return output

    def _training_rows(self, step: int, micro_batch: int, task_index: int) -> list[int] | None:
        """The training-set rows of task `task_index` in this process's micro-batch `micro_batch` of optimizer
        step `step` (1-based), recomputed from the sampler (which depends on seed, epoch and task only)."""
        sampler = self._train_batch_sampler
        if sampler is None:
            return None
        epoch, step = divmod(step - 1, sampler.steps_per_epoch)
        local = step * self.args.gradient_accumulation_steps + micro_batch
        index = local * self.args.world_size + self.args.process_index  # accelerate deals batches round-robin
        return sampler.rows(epoch, index, task_index).tolist()

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        self._pending_micro_batches.append(self._prepare_inputs(inputs))
        if len(self._pending_micro_batches) < self.current_gradient_accumulation_steps:
            return torch.zeros((), device=self.args.device)
        micro_batches, self._pending_micro_batches = self._pending_micro_batches, []
        if self.weighting.needs_initial_losses:
            self.weighting.set_initial_losses(self._estimate_initial_losses(model))
        model.train()
        with self.compute_loss_context_manager():
            result = self.step_engine(model, micro_batches, step=self.state.global_step + 1)
        self._record(result)
        if self._train_batch_sampler is not None:
            # What the sampler put in this step, all ranks together (logged as rows_<task>).
            rows = self._train_batch_sampler.step_rows(self.state.global_step)
            for name, count in zip(self.step_engine.task_names, rows.tolist()):
                self._task_logs.setdefault(f"rows_{name}", []).append(float(count))
        self._step_grad_norm = result.grad_norm
        return torch.tensor(result.mean_loss, device=self.args.device)

    def _clip_grad_norm(self, model: torch.nn.Module) -> Any:
        """The Trainer's clipping, with the norm the step already measured for its fault check (so the
        gradients are read once, not twice), and no pass over them when the factor would be 1: clipping
        multiplies by min(1, max_norm / (norm + 1e-6)), as `torch.nn.utils.clip_grad_norm_` does."""
        norm = self._take_step_grad_norm()
        if norm is None:
            return super()._clip_grad_norm(model)
        factor = self.args.max_grad_norm / (norm + 1e-6)
        if factor < 1.0:
            torch._foreach_mul_([p.grad for p in model.parameters() if p.grad is not None], factor)
        return norm

    def _get_grad_norm(self, model: torch.nn.Module, grad_norm: Any = None) -> Any:
        """The logged `grad_norm`: the step's measured norm when clipping did not already give it."""
        if grad_norm is None:
            grad_norm = self._take_step_grad_norm()
        return super()._get_grad_norm(model, grad_norm=grad_norm)

    def _take_step_grad_norm(self) -> float | None:
        """The combined gradient's norm measured by this step's engine, once; None where the Trainer must
        measure it itself (a grad scaler unscales first; DeepSpeed, FSDP and XLA clip their own way)."""
        norm, self._step_grad_norm = self._step_grad_norm, None
        if norm is None or self.accelerator.scaler is not None or self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return None
        return None if self.accelerator.distributed_type == DistributedType.XLA else norm

    def compute_loss(self, model: torch.nn.Module, inputs: Mapping[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        """The one place a task's loss is computed; given a whole multi-task batch, the strategy's objective.

        * One task's batch (`{"task": name, "input_ids": ..., "labels": ...}`, as the collator makes it):
          the Trainer's own `compute_loss` (the model's loss, or `compute_loss_func` / label smoothing when
          the Trainer was given them). The step engine calls this for every task's forward pass, and so do
          the `init` estimate and evaluation, so overriding this branch in a subclass (class weights, label
          smoothing, a focal loss) changes training, the initial-loss estimate and evaluation alike.
        * A multi-task batch (`{task: batch}`, one batch of every task): each task's loss through the branch
          above, combined into F(L_1..L_K) (`weighting.objective`) as one differentiable scalar. Its
          gradient is the update the task-by-task step produces for a loss-level strategy (the step computes
          it without keeping K graphs alive). Gradient-level strategies have no loss objective and raise.
          With `return_outputs=True`: `(F, {"losses": {task: L_task}, "outputs": {task: model output}})`.
        """
        if not _is_multitask_batch(inputs):
            # A copy: the Trainer pops `labels` for compute_loss_func / label smoothing, and the engine
            # reuses its batches (a fault re-run).
            return super().compute_loss(model, dict(inputs), return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        names = self.step_engine.task_names
        if sorted(inputs) != sorted(names):
            raise ValueError(f"compute_loss: a multi-task batch needs one batch of every task {names}; got {sorted(inputs)}.")
        losses, outputs = {}, {}
        for name in names:
            losses[name], outputs[name] = self.compute_loss(model, inputs[name], return_outputs=True)
        objective = self.weighting.objective(torch.stack([losses[name] for name in names]))
        return (objective, {"losses": losses, "outputs": outputs}) if return_outputs else objective

    def _record(self, result: StepResult) -> None:
        names = self.step_engine.task_names
        self._step_means.append(result.mean_loss)
        self._skipped_since_log |= result.skipped_step
        values = {"loss": result.losses, "weight": result.weights, "grad_norm": result.grad_norms or []}
        for kind, per_task in values.items():
            for name, value in zip(names, per_task):
                self._task_logs.setdefault(f"{kind}_{name}", []).append(value)
        for i, j in ((i, j) for i in range(len(names)) for j in range(i + 1, len(names)) if result.cosines):
            self._task_logs.setdefault(f"cos_{names[i]}_{names[j]}", []).append(result.cosines[i][j])

    @torch.no_grad()
    def _estimate_initial_losses(self, model: torch.nn.Module) -> list[float]:
        """Mean loss of each task over the first `init_estimate_batches` batches, before any update (eval mode)."""
        model.eval()
        names = self.step_engine.task_names
        sums = torch.zeros(2, len(names), dtype=torch.float64, device=self.args.device)
        # Every task in every batch, also when training draws one task per step.
        loader = self._stream_loader(self._batch_sampler("all_per_step"))
        for b, batch in enumerate(loader):
            if b >= self.args.init_estimate_batches:
                break
            batch = self._prepare_inputs(batch)
            for i, name in enumerate(names):
                n = loss_units(batch[name])
                sums[0, i] += self.compute_loss(model, batch[name]).double() * n
                sums[1, i] += n
        all_reduce_sum([sums])
        return (sums[0] / sums[1]).tolist()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._task_logs:
            # A task skipped by --nan_policy has no value that step: the mean is over the steps that have one
            # (no entry at all when none has).
            for key, values in self._task_logs.items():
                finite = [v for v in values if math.isfinite(v)]
                if finite:
                    logs[key] = sum(finite) / len(finite)
            self._task_logs = {}
        if "loss" in logs:
            if self._skipped_since_log:
                # The Trainer fills a skipped step's NaN loss with a running average; the mean of the steps
                # that were taken says what happened (NaN when every step since the last log was skipped).
                finite = [v for v in self._step_means if math.isfinite(v)]
                logs["loss"] = sum(finite) / len(finite) if finite else math.nan
            self._step_means, self._skipped_since_log = [], False
            logs.update(self.step_engine.skip_counts())
            logs.update(self._sampling_logs())
        super().log(logs, start_time)

    def _sampling_logs(self) -> dict[str, float]:
        """`epochs_<task>`, the passes over each task's training rows so far, and the current `sampling_alpha`."""
        sampler = self._train_batch_sampler
        if sampler is None or self.state.global_step < 1:
            return {}
        seen = sampler.rows_seen(self.state.global_step)
        logs = {f"epochs_{name}": float(rows / n)
                for name, rows, n in zip(self.step_engine.task_names, seen.tolist(), sampler.task_sizes)}
        logs["sampling_alpha"] = sampler.alpha_at(self.state.global_step - 1)
        return logs

    # ---- evaluation ---------------------------------------------------------------------------

    def evaluate(
        self,
        eval_dataset: Mapping[str, Any] | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        """Evaluate every task split; returns `<prefix>_<key>_<metric>` for each and the macro score over tasks,
        `<prefix>_glue_score` when every task is a GLUE task, else `<prefix>_score` (`metrics.score_name`)."""
        eval_sets = eval_dataset if eval_dataset is not None else self.eval_dataset
        if not isinstance(eval_sets, Mapping) or not eval_sets:
            raise ValueError("MultiTaskTrainer.evaluate: pass eval_dataset as a non-empty {eval key: Dataset} mapping.")
        metrics: dict[str, float] = {}
        split_scores: dict[str, list[float]] = {}
        user_metrics = self.compute_metrics
        try:
            for key, dataset in eval_sets.items():
                spec = self._eval_specs[key]
                computed: dict[str, float] = {}
                self.compute_metrics = partial(_metrics_for_task, spec, computed)
                metrics.update(super().evaluate(dataset, ignore_keys, f"{metric_key_prefix}_{key}"))
                split_scores.setdefault(spec.name, []).append(task_score(computed))
        finally:
            self.compute_metrics = user_metrics
        score = glue_score({task: sum(s) / len(s) for task, s in split_scores.items()})
        key = f"{metric_key_prefix}_{score_name(self.tasks)}"
        metrics[key] = score
        self.log({key: score})
        return metrics

    # ---- sharing ------------------------------------------------------------------------------

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        """Write the multi-task model card (`README.md`) and its training curves to `args.output_dir`.

        `Trainer.push_to_hub` calls this before uploading the folder. The card lists the base model
        (`finetuned_from`, default: where the encoder was loaded from), the tasks and datasets, the
        weighting with its hyperparameters, the latest evaluation (per-task metrics and GLUE score),
        the training hyperparameters, the curves from `hf_mtl.plotting` and a usage snippet; see
        `hf_mtl.model_card.write_model_card`. `tasks`, `dataset_tags`, `dataset` and `dataset_args` are
        accepted for compatibility and ignored: the tasks come from the model's config.
        """
        if not self.is_world_process_zero():
            return
        from .model_card import training_hyperparameters, write_model_card

        model = self.accelerator.unwrap_model(self.model)
        write_model_card(
            self.args.output_dir,
            model.config,
            log_history=self.state.log_history,
            hyperparameters=training_hyperparameters(self.args, self.state.global_step),
            model_id=getattr(self, "hub_model_id", None) or self.args.hub_model_id or self.args.output_dir,
            base_model=finetuned_from,
            model_name=model_name,
            language=language,
            license=license,
            tags=tags,
            task_bests=self.task_best.best,
        )


def _is_multitask_batch(inputs: Mapping[str, Any]) -> bool:
    """`{task: batch}` (a batch of several tasks) rather than one task's model inputs."""
    return bool(inputs) and all(isinstance(value, Mapping) for value in inputs.values())


def _constant_rate(step: int) -> float:
    return 1.0


def _metrics_for_task(spec: TaskSpec, sink: dict[str, float], prediction: EvalPrediction) -> dict[str, float]:
    """`compute_metrics` for one task's split; also keeps the values in `sink` for the GLUE score."""
    sink.update(compute_task_metrics(spec, prediction.predictions, prediction.label_ids))
    return dict(sink)
