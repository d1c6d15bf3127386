"""`estimate=true`: a dry run. The model and fine-tuning method are built as the run would build them (no data
is read: the vocabulary size comes from the tokenizer's config or the pretrained model), and parameters, FLOPs,
memory per device, time and cost are printed; nothing is trained or written."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import OmegaConf

from lightning_llm.log import quiet_known_noise
from lightning_llm.recipe.outputs import remove_if_empty
from lightning_llm.recipe.results import RunResults
from lightning_llm.recipe.run import TrainingRecipe, instantiate_model
from lightning_llm.tokenizers import HFTokenizer
from lightning_llm.training.estimate import estimate_for_trainer, format_estimate

CHAR_VOCABULARY = 256  # a character tokenizer's size is the corpus' alphabet: about this for text


class EstimateRecipe(TrainingRecipe):
    """check -> load_pretrained -> build the model and fine-tuning -> estimate, printed."""

    def run(self) -> RunResults:
        quiet_known_noise()
        try:
            self.check()
            self.load_pretrained()
            self.estimate()
        finally:
            remove_if_empty(self.output_dir)
        return self.results

    def vocab_size(self) -> int:
        """The vocabulary the run would have: the pretrained tokenizer's, a Hugging Face one's, or the trained
        tokenizer's configured size."""
        cfg = self.cfg
        if self.pretrained is not None and self.pretrained.tokenizer is not None:
            return self.pretrained.tokenizer.vocab_size
        if cfg.tokenizer.type == "hf":
            return HFTokenizer.from_pretrained(cfg.tokenizer.get("path") or cfg.model.get("pretrained")).vocab_size
        return CHAR_VOCABULARY if cfg.tokenizer.type == "char" else int(cfg.tokenizer.vocab_size)

    def estimate(self) -> None:
        cfg = self.cfg
        model = instantiate_model(cfg.model, self.vocab_size())
        instantiate(cfg.objective).prepare_model(model)
        finetune = instantiate(cfg.finetune)
        finetune.apply(model)
        trainer = instantiate(cfg.trainer, logger=False, callbacks=[], enable_progress_bar=False)
        price = OmegaConf.select(cfg, "callbacks.compute.price_per_device_hour")
        self.results.estimate = estimate_for_trainer(
            trainer, model, finetune, cfg.data.batch_size, cfg.data.block_size, cfg.paths.cache_dir, price
        )
        self.results.status = "estimated"
        print(format_estimate(self.results.estimate))
