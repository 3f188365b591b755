"""The training loop, its standard hooks and evaluation."""
from pet.engine.evaluation import evaluate
from pet.engine.trainer import Trainer, build_eval_hook, build_train_hooks

__all__ = ["Trainer", "build_eval_hook", "build_train_hooks", "evaluate"]
