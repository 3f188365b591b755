"""A user's data set for the tests of tests/tools/test_own_data.py (a CUSTOM_IMPORTS module):
the digits, with every read of a training item logged and one item broken on request.

Environment (set by the test): PROBE_LOG, a directory: each process appends
"<RANK> <pid> <index>" per training item read to its own file there. PROBE_BAD_INDEX and
PROBE_BAD_KIND: that item raises ("raises"), is 9x9 ("shape"), has label 12 ("label"), or kills
the worker reading it ("kill").
"""
import os
import signal

import torch
from torch.utils.data import Dataset

from pet.data import DATASETS, build_datasets


class Probe(Dataset):
    def __init__(self, digits):
        self.digits = digits
        self.num_classes = digits.num_classes

    def __len__(self):
        return len(self.digits)

    def __getitem__(self, index):
        log = os.environ.get("PROBE_LOG")
        if log:
            with open(os.path.join(log, f"reads-{os.getpid()}.txt"), "a") as f:
                f.write(f"{os.environ.get('RANK', '0')} {os.getpid()} {index}\n")
        image, label = self.digits[index]
        if index == int(os.environ.get("PROBE_BAD_INDEX", "-1")):
            kind = os.environ["PROBE_BAD_KIND"]
            if kind == "raises":
                raise OSError(f"cannot decode item {index}: truncated file")
            if kind == "shape":
                image = torch.zeros(1, 9, 9, dtype=torch.uint8)
            if kind == "label":
                label = 12
            if kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
        return image, label


@DATASETS.register(name="probe")
def build_probe(data):
    digits = data.clone()
    digits.defrost()
    digits.DATASET = "digits"
    train, test = build_datasets(digits)
    return Probe(train), test


@DATASETS.register(name="probe_broken")
def build_broken(data):
    raise FileNotFoundError(f"no such directory: {data.ROOT or '(DATA.ROOT is empty)'}")
