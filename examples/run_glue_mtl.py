#!/usr/bin/env python
"""Fine-tune one encoder on several GLUE tasks at once: transformers' `run_glue.py`, multi-task.

    python examples/run_glue_mtl.py --tasks sst2,mrpc,stsb --glue_dir ../shared/data/glue \\
        --weighting geometric --max_train_samples 2000 --max_steps 60 --do_train --do_eval --output_dir out/example

Same flags as `hf-mtl train` (which runs this flow with a few more conveniences: config files, resuming
from the last checkpoint in --output_dir, push_to_hub).
"""

import logging
import sys

import transformers
from transformers import AutoTokenizer, HfArgumentParser, set_seed

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, parse_tasks
from hf_mtl.arguments import DataArguments, ModelArguments
from hf_mtl.pipeline import build_datasets
from hf_mtl.modeling import resolve_model_path

logger = logging.getLogger(__name__)


def main() -> None:
    # 1. Arguments: model, data, and TrainingArguments with the multi-task fields (tasks, weighting, gamma, ...).
    parser = HfArgumentParser((ModelArguments, DataArguments, MultiTaskTrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, stream=sys.stdout)
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    set_seed(training_args.seed)

    # 2. Tasks and data: every task is loaded (local GLUE TSVs or the Hub), capped and tokenised.
    tasks = parse_tasks(training_args.tasks)
    encoder_path = resolve_model_path(model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(encoder_path)
    train_sets, eval_sets = build_datasets(tasks, tokenizer, data_args)

    # 3. Model: the pretrained encoder plus one fresh head per task.
    model = MultiTaskModel.from_encoder(encoder_path, tasks, classifier_dropout=model_args.classifier_dropout)

    # 4. Train and evaluate; the trainer steps task by task with the chosen weighting.
    trainer = MultiTaskTrainer(model=model, args=training_args, train_dataset=train_sets,
                               eval_dataset=eval_sets, processing_class=tokenizer, tasks=tasks)
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        trainer.save_metrics("train", result.metrics)
    if training_args.do_eval:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)


if __name__ == "__main__":
    main()
