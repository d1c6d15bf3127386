"""The recipe: one run of a composed config through named stages, its checks, results and provenance."""

from lightning_llm.recipe.run import TrainingRecipe, instantiate_model, resolved_config, run_experiment, train

__all__ = ["TrainingRecipe", "instantiate_model", "resolved_config", "run_experiment", "train"]
