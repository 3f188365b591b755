"""A tiny auxiliary-classifier GAN (AC-GAN) on the 8x8 digits: the example of a model trained with
several optimizers (SOLVER.OPTIMIZERS: one for ``generator``, one for ``discriminator``) through
MMEngine's ``train_step(batch, optim_wrappers)`` protocol.

The discriminator tells real images from generated ones and, as AC-GAN's auxiliary classifier,
names the digit of each; the generator draws a digit of a given label. ``forward`` (what the
run evaluates) is the discriminator's classifier, so the held-out accuracy measures it.
"""
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from pet.data.digits import IMAGE_SIZE, MAX_LEVEL

PIXELS = IMAGE_SIZE * IMAGE_SIZE


class Generator(nn.Module):
    """(noise, label) -> an 8x8 image with values in [0, 1]."""

    def __init__(self, num_classes: int, noise_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.noise_dim = noise_dim
        self.embed = nn.Embedding(num_classes, noise_dim)
        self.body = nn.Sequential(nn.Linear(noise_dim, hidden_dim), nn.LeakyReLU(0.2),
                                  nn.Linear(hidden_dim, hidden_dim), nn.LeakyReLU(0.2),
                                  nn.Linear(hidden_dim, PIXELS))

    def forward(self, noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(noise * self.embed(labels)))


class Discriminator(nn.Module):
    """An image in [0, 1] -> (real-or-generated logit, class logits)."""

    def __init__(self, num_classes: int, hidden_dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(PIXELS, hidden_dim), nn.LeakyReLU(0.2),
                                  nn.Linear(hidden_dim, hidden_dim), nn.LeakyReLU(0.2))
        self.real = nn.Linear(hidden_dim, 1)
        self.classes = nn.Linear(hidden_dim, num_classes)

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        features = self.body(images)
        return self.real(features).squeeze(1), self.classes(features)


def with_constant_parameters(module: nn.Module, *inputs: torch.Tensor):
    """``module(*inputs)`` with its parameters as constants: the gradient reaches the inputs
    and none of its parameters (the generator's step through the discriminator). Under
    separate DDP or MODEL.COMPILE the module's own network runs, eagerly and outside DDP,
    which then expects no backward."""
    inner = getattr(module, "_orig_mod", module)  # torch.compile's wrapper
    inner = getattr(inner, "module", inner)  # DistributedDataParallel's
    constants = {name: param.detach() for name, param in inner.named_parameters()}
    return torch.func.functional_call(inner, constants, inputs)


class DigitsGAN(nn.Module):
    """``generator`` and ``discriminator``, each stepped by its own optimizer."""

    def __init__(self, num_classes: int = 10, noise_dim: int = 16, hidden_dim: int = 128) -> None:
        super().__init__()
        self.noise_dim = noise_dim  # here, not read off the generator: under DDP it is wrapped
        self.generator = Generator(num_classes, noise_dim, hidden_dim)
        self.discriminator = Discriminator(num_classes, hidden_dim)

    def forward(self, levels: torch.Tensor) -> torch.Tensor:
        """The discriminator's class logits of real images (intensity levels 0..16)."""
        return self.discriminator(levels.float() / MAX_LEVEL)[1]

    def train_step(self, batch: Tuple[torch.Tensor, torch.Tensor],
                   optim_wrappers) -> Dict[str, torch.Tensor]:
        """One discriminator step, then one generator step, on a batch of real images and as
        many generated ones (noise from torch's global generator, so a resumed run draws the
        same; the generated digits take the real batch's labels). Returns both losses."""
        levels, labels = batch
        real = levels.float().flatten(1) / MAX_LEVEL
        count = len(real)
        noise = torch.randn(count, self.noise_dim, device=real.device)
        ones, zeros = torch.ones(count, device=real.device), torch.zeros(count, device=real.device)

        disc = optim_wrappers["discriminator"]
        with disc.optim_context(self):
            with torch.no_grad():
                fake = self.generator(noise, labels)
            # Real and generated images in one pass: one forward per backward (DDP's rule).
            is_real, classes = self.discriminator(torch.cat([real, fake]))
            loss_disc = (F.binary_cross_entropy_with_logits(is_real, torch.cat([ones, zeros]))
                         + F.cross_entropy(classes[:count], labels))
        disc.update_params(loss_disc)

        gen = optim_wrappers["generator"]
        with gen.optim_context(self):
            fake = self.generator(noise, labels)
            is_real, classes = with_constant_parameters(self.discriminator, fake)
            loss_gen = F.binary_cross_entropy_with_logits(is_real, ones) + F.cross_entropy(classes, labels)
        gen.update_params(loss_gen)
        return {"loss_disc": loss_disc.detach(), "loss_gen": loss_gen.detach()}
