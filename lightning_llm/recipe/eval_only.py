"""`train=false`: evaluate a trained model without training: the checkpoint, its tokenizer and the eval suite;
no datamodule (unless a task reads the training texts), no trainer, no validation pass."""

from __future__ import annotations

import time

from omegaconf import open_dict

from lightning_llm.checkpoints import model_from_pretrained
from lightning_llm.errors import ConfigError
from lightning_llm.eval import build_suite, evaluate
from lightning_llm.finetune import count_parameters
from lightning_llm.recipe.run import TrainingRecipe


class EvaluationRecipe(TrainingRecipe):
    """check -> load_pretrained -> setup_evaluation -> evaluate -> report (what train=false runs)."""

    def check(self) -> None:
        cfg = self.cfg
        if not cfg.model.get("pretrained") and cfg.get("ckpt_path"):
            with open_dict(cfg.model):  # a training checkpoint to evaluate is a pretrained model like any other
                cfg.model.pretrained = cfg.ckpt_path
            with open_dict(cfg):
                cfg.ckpt_path = None
        if not cfg.model.get("pretrained"):
            raise ConfigError(
                "train=false evaluates a trained model: give model.pretrained=<run folder, .ckpt or Hugging Face "
                "folder>"
            )
        _, tasks = build_suite(cfg.get("eval"))
        if not tasks:
            raise ConfigError("train=false with no eval tasks has nothing to do: choose a suite, e.g. eval=offline")
        super().check()
        self.tasks = tasks

    def stages(self) -> list:
        return [self.load_pretrained, self.setup_evaluation, self.evaluate, self.report]

    def setup_evaluation(self) -> None:
        """The model as trained and its tokenizer; the data only when a task needs the training texts."""
        self.model = model_from_pretrained(self.pretrained)
        self.results.model = {
            "config": self.model.config.to_dict(),
            "family": self.model.family,
            "pretrained": self.pretrained.source,
        }
        self.results.parameters = count_parameters(self.model)
        self.train_texts = None
        if any(task.needs_train_texts for task in self.tasks):
            self.setup_data()
            self.train_texts = self.datamodule.train_texts

    def evaluate(self) -> None:
        cfg = self.cfg
        tokenizer = self.pretrained.tokenizer
        self.results.eval = evaluate(cfg.eval, self.model, tokenizer, self.output_dir, cfg.seed, self.train_texts)

    def report(self) -> None:
        results = self.results
        results.status = "partial" if self.incomplete_eval() else "completed"
        results.wall_seconds = round(time.perf_counter() - self.started, 2)
        results.write(self.output_dir)
        print(f"outputs: {self.output_dir} (results.json, report.html)")
