"""Your own data on disk: a folder of image files read by a torch Dataset, registered as the data
set ``digits_folder`` (the example of README's "Your own model and data"; its config is
cfgs/digits_folder_cnn.yaml, its data written by tools/write_image_folder.py).

The layout is torchvision's ImageFolder: ``ROOT/<split>/<label>/<any name>.pgm``, one binary PGM
("P5", 8-bit) per image, the folder's name the image's integer label. Each item is read from its
file when asked for, as a data set too large for memory is read. The training items are
augmented with all three random generators the loader seeds per item (torch, numpy, ``random``):
any worker count or a resumed run sees the same augmented images.
"""
import os
import random
import re
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from pet.data import DATASETS
from pet.data.digits import shift_image

# A header field: whitespace and "#" comments, then a decimal number (the PGM spec's grammar).
_HEADER_FIELD = re.compile(rb"(?:\s|#[^\n]*(?:\n|$))+(\d+)")
# Chance that a training image has its intensities moved by one level, and that one of its
# border rows is blanked: small perturbations a scanner or a pen would make.
JITTER_PROBABILITY = 0.5
BLANK_ROW_PROBABILITY = 0.1


def decode_pgm(raw: bytes, path: str) -> Tuple[np.ndarray, int]:
    """(levels, maxval) of a binary PGM file's bytes ``raw``: levels a (H, W) uint8 array.

    Raises ValueError naming ``path`` when ``raw`` is not an 8-bit binary PGM (wrong magic,
    bad header, a 16-bit maxval, too few or too many pixel bytes, a pixel above maxval).
    """
    if not raw.startswith(b"P5"):
        raise ValueError(f"{path}: not a binary PGM file (expected the magic 'P5', got {raw[:2]!r})")
    fields, position = [], 2
    for name in ("width", "height", "maxval"):
        match = _HEADER_FIELD.match(raw, position)
        if match is None:
            raise ValueError(f"{path}: not a valid PGM header (no {name} at byte {position})")
        fields.append(int(match.group(1)))
        position = match.end()
    # One whitespace byte ends the header; the pixels follow, one byte each.
    if raw[position:position + 1] not in (b" ", b"\t", b"\n", b"\r", b"\x0b", b"\x0c"):
        raise ValueError(f"{path}: not a valid PGM header (no whitespace after maxval at byte {position})")
    width, height, max_level = fields
    if width == 0 or height == 0 or not 0 < max_level < 256:
        raise ValueError(f"{path}: unsupported PGM {width}x{height}, maxval {max_level}; "
                         f"allowed: a non-empty image with maxval 1..255 (8-bit)")
    pixels = raw[position + 1:]
    if len(pixels) != width * height:
        raise ValueError(f"{path}: a {width}x{height} PGM holds {width * height} pixel bytes, "
                         f"this file {len(pixels)} (truncated or corrupt)")
    levels = np.frombuffer(pixels, dtype=np.uint8).reshape(height, width)
    if int(levels.max()) > max_level:
        raise ValueError(f"{path}: a pixel of level {int(levels.max())} is above the file's maxval {max_level}")
    return levels, max_level


def read_pgm(path: str) -> Tuple[torch.Tensor, int]:
    """(levels, maxval) of the PGM file at ``path``: levels a (1, H, W) uint8 tensor (a copy,
    writable). Raises ValueError for a file that is not an 8-bit binary PGM, OSError when it
    cannot be read."""
    with open(path, "rb") as f:
        levels, max_level = decode_pgm(f.read(), path)
    return torch.from_numpy(levels.copy()).unsqueeze(0), max_level


def find_samples(folder: str) -> List[Tuple[str, int]]:
    """(path, label) of every ``folder/<label>/*.pgm``, labels and files sorted.

    Raises FileNotFoundError when ``folder`` holds no PGM file, ValueError for a sub-folder
    whose name is not a label (an integer >= 0).
    """
    samples = []
    class_dirs = [entry for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith(".")]
    for entry in class_dirs:
        if not (entry.name.isascii() and entry.name.isdigit()):
            raise ValueError(f"{entry.path}: a class folder must be named by its label, an integer >= 0")
    for entry in sorted(class_dirs, key=lambda e: int(e.name)):
        names = sorted(name for name in os.listdir(entry.path) if name.endswith(".pgm"))
        samples.extend((os.path.join(entry.path, name), int(entry.name)) for name in names)
    if not samples:
        raise FileNotFoundError(f"{folder}: no <label>/*.pgm files")
    return samples


class ImageFolder(Dataset):
    """The images of ``root/split/<label>/*.pgm``, found once at construction and each read
    from its file when asked for.

    Item ``i`` is (a (1, H, W) uint8 tensor of intensity levels, its int label). With
    ``augment`` (default: for the "train" split only) an image is shifted by up to
    ``max_shift`` pixels (torch), its ink moved by one level half the time (numpy), and one of
    its border rows blanked one time in ten (``random``).

    ``num_classes`` is the largest label + 1: the outputs a classifier needs.
    """

    def __init__(self, root: str, split: str, max_shift: int = 0, augment: Optional[bool] = None) -> None:
        self.folder = os.path.join(os.path.abspath(root), split)
        self.samples = find_samples(self.folder)
        self.num_classes = max(label for _, label in self.samples) + 1
        self.max_shift = max_shift
        self.augment = split == "train" if augment is None else augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        image, max_level = read_pgm(path)
        if self.augment:
            image = augment_image(image, self.max_shift, max_level)
        return image, label


def augment_image(image: torch.Tensor, max_shift: int, max_level: int) -> torch.Tensor:
    """``image`` (1, H, W) uint8 levels, randomly shifted, jittered and row-blanked (see
    ImageFolder); a new tensor."""
    if max_shift > 0:
        dy, dx = torch.randint(-max_shift, max_shift + 1, (2,)).tolist()
        image = shift_image(image, dy, dx, max_shift)
    if np.random.random() < JITTER_PROBABILITY:
        step = int(np.random.choice((-1, 1)))
        # The ink only: the background stays 0, as the border a shift fills in.
        moved = (image.to(torch.int16) + step).clamp(0, max_level).to(torch.uint8)
        image = torch.where(image > 0, moved, image)
    if random.random() < BLANK_ROW_PROBABILITY:
        image = image.clone()
        image[:, random.choice((0, image.shape[-2] - 1))] = 0
    return image


@DATASETS.register(name="digits_folder")
def build_digits_folder(data) -> Tuple[ImageFolder, ImageFolder]:
    """(train, test) read from DATA.ROOT/train/ and DATA.ROOT/test/; the training images
    shifted by up to DATA.MAX_SHIFT pixels. Raises FileNotFoundError when DATA.ROOT is empty or
    misses either folder."""
    root = data.ROOT
    if not root:
        raise FileNotFoundError("DATA.ROOT is empty; give a folder with train/ and test/, "
                                "as python tools/write_image_folder.py DIR writes")
    for split in ("train", "test"):
        # Short: the job shows the first 160 characters, and the way out must be among them.
        if not os.path.isdir(os.path.join(root, split)):
            raise FileNotFoundError(f"DATA.ROOT {root}: no {split}/ folder; write one with "
                                    f"python tools/write_image_folder.py DIR")
    return ImageFolder(root, "train", data.MAX_SHIFT), ImageFolder(root, "test")
