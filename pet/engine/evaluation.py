"""Accuracy of a classifier on the held-out images."""
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from pet.data import ImageSplit, eval_batches


@torch.no_grad()
def evaluate(model: nn.Module, split: ImageSplit, batch_size: int) -> Dict[str, float]:
    """{"accuracy": top-1 accuracy in %, "test_loss": mean cross-entropy} of ``model`` on
    ``split``, in eval mode (BatchNorm running statistics, no dropout); the model's train/eval
    mode is restored afterwards. Draws no random numbers, so it never shifts a seeded run."""
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    device = next(model.parameters()).device
    for levels, labels in eval_batches(split, batch_size):
        levels, labels = levels.to(device), labels.to(device)
        logits = model(levels)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(dim=1) == labels).sum().item()
    model.train(was_training)
    return {"accuracy": 100.0 * correct / len(split), "test_loss": loss_sum / len(split)}
