"""Accuracy of a classifier on the held-out items."""
from typing import Dict, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from pet.data import call_model, to_device


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, num_items: int) -> Dict[str, float]:
    """{"accuracy": top-1 accuracy in %, "test_loss": mean cross-entropy} of ``model`` on the
    (inputs, labels) ``batches`` of ``num_items`` held-out items, in eval mode (BatchNorm
    running statistics, no dropout); the model's train/eval mode is restored afterwards. Draws
    no random numbers from the training process, so it never shifts a seeded run."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for inputs, labels in batches:
        logits = call_model(model, to_device(inputs, device))
        labels = to_device(labels, device)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        correct += (logits.argmax(dim=1) == labels).sum()
    model.train(was_training)
    return {"accuracy": 100.0 * correct.item() / num_items, "test_loss": loss_sum.item() / num_items}
