"""The data of a job: the data sets a config may name (torch Datasets) and the loaders that
read them through torch DataLoaders, resumable at any iteration."""

import torch
from torch.utils.data import Dataset
from yacs.config import CfgNode

from pet.data.batch import call_model, to_device
from pet.data.digits import MAX_LEVEL, DigitsDataset
from pet.data.items import DataItemError
from pet.data.loader import (
    EvalLoader,
    MicroBatch,
    TrainLoader,
    auto_num_workers,
    is_worker_failure,
    worker_failure_line,
)
from pet.data.registry import DATASETS, build_datasets
from pet.data.sampler import BatchPlan, batches_per_epoch


def num_workers(cfg: CfgNode, device: torch.device, processes_per_machine: int = 1) -> int:
    """DATA.NUM_WORKERS, -1 resolved for this machine and ``device`` (``auto_num_workers``)."""
    if cfg.DATA.NUM_WORKERS >= 0:
        return cfg.DATA.NUM_WORKERS
    return auto_num_workers(device.type, processes_per_machine)


def num_classes(data_set: Dataset) -> int:
    """The classes ``data_set`` declares (its ``num_classes``), 0 when it declares none."""
    return int(getattr(data_set, "num_classes", 0) or 0)


def iter_per_epoch(cfg: CfgNode) -> int:
    """Iterations per epoch of the training loader for ``cfg``: from the length of its training
    split (built once per process)."""
    train, _ = build_datasets(cfg.DATA)
    return batches_per_epoch(len(train), cfg.DATA.BATCH_SIZE, cfg.DATA.DROP_LAST)


def build_train_loader(cfg: CfgNode, train: Dataset, rank: int = 0, world_size: int = 1,
                       device: torch.device = torch.device("cpu"), processes_per_machine: int = 1) -> TrainLoader:
    """The seeded, resumable training loader of ``cfg`` for process ``rank`` of ``world_size``
    (batches pinned for a CUDA ``device``)."""
    plan = BatchPlan(len(train), cfg.DATA.BATCH_SIZE, cfg.DATA.DROP_LAST, cfg.SEED, rank=rank,
                     world_size=world_size, accumulation_steps=cfg.SOLVER.ACCUMULATION_STEPS)
    return TrainLoader(train, plan, cfg.SEED, num_workers=num_workers(cfg, device, processes_per_machine),
                       pin_memory=device.type == "cuda", prefetch_factor=cfg.DATA.PREFETCH_FACTOR,
                       num_classes=cfg.MODEL.NUM_CLASSES)


def build_eval_loader(cfg: CfgNode, test: Dataset, device: torch.device = torch.device("cpu"),
                      processes_per_machine: int = 1) -> EvalLoader:
    """The held-out items of ``cfg``, TEST.BATCH_SIZE at a time, in their fixed order."""
    return EvalLoader(test, cfg.TEST.BATCH_SIZE, seed=cfg.SEED,
                      num_workers=num_workers(cfg, device, processes_per_machine),
                      pin_memory=device.type == "cuda", num_classes=cfg.MODEL.NUM_CLASSES)


__all__ = [
    "DATASETS",
    "MAX_LEVEL",
    "BatchPlan",
    "DataItemError",
    "DigitsDataset",
    "EvalLoader",
    "MicroBatch",
    "TrainLoader",
    "auto_num_workers",
    "build_datasets",
    "build_eval_loader",
    "batches_per_epoch",
    "build_train_loader",
    "call_model",
    "is_worker_failure",
    "iter_per_epoch",
    "num_classes",
    "num_workers",
    "to_device",
    "worker_failure_line",
]
