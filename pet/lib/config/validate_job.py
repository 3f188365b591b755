"""Value checks of the job's other sections: MODEL, DATA, TEST and the run keys, with no torch
import. The registry names (MODEL.TYPE, DATA.DATASET) are checked by the registries' owners;
``pet.engine.job.validate_job`` runs every check of a training job in one place.
"""
import re
from typing import Optional

from yacs.config import CfgNode

from pet.lib.config.errors import ConfigError
from pet.lib.config.validate import MAX_INT, check_bool, check_choice, check_int

# numpy's seeds are 32-bit; torch.set_num_threads crashes far above any real core count.
MAX_SEED = 2 ** 32 - 1
MAX_THREADS = 1024
# Patch sides that tile the 8x8 images.
PATCH_SIZES = (1, 2, 4)


def validate_run(cfg: CfgNode) -> None:
    """Check OUTPUT_DIR, SEED, NUM_THREADS, LOG_PERIOD, DETERMINISTIC and TF32."""
    if not isinstance(cfg.OUTPUT_DIR, str) or not cfg.OUTPUT_DIR.strip():
        raise ConfigError(f"OUTPUT_DIR: expected a directory path, got {cfg.OUTPUT_DIR!r}")
    check_int(cfg.SEED, "SEED", minimum=0, maximum=MAX_SEED)
    check_int(cfg.NUM_THREADS, "NUM_THREADS", minimum=0, maximum=MAX_THREADS)
    check_int(cfg.LOG_PERIOD, "LOG_PERIOD", minimum=1)
    for key in ("DETERMINISTIC", "TF32"):
        if not isinstance(cfg[key], bool):
            raise ConfigError(f"{key}: expected True or False, got {cfg[key]!r}")


def validate_model(model: CfgNode) -> None:
    """Check the values of ``MODEL`` (all but TYPE; whether the device exists is the
    engine's question)."""
    device = model.DEVICE
    if not (isinstance(device, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", device)):
        raise ConfigError(f"MODEL.DEVICE: unknown value {device!r}; allowed: auto, cpu, cuda, cuda:N")
    check_int(model.NUM_CLASSES, "MODEL.NUM_CLASSES", minimum=2)
    if not isinstance(model.WEIGHTS, str):
        raise ConfigError(f"MODEL.WEIGHTS: expected a file path or \"\", got {model.WEIGHTS!r}")
    validate_compile(model.COMPILE)
    channels = tuple(model.CNN.CHANNELS)
    if len(channels) != 3 or not all(isinstance(c, int) and c >= 1 for c in channels):
        raise ConfigError(f"MODEL.CNN.CHANNELS: expected three positive integers, got {channels!r}")
    check_int(model.CNN.HIDDEN_DIM, "MODEL.CNN.HIDDEN_DIM", minimum=1)
    _check_probability(model.CNN.DROPOUT, "MODEL.CNN.DROPOUT")
    t = model.TRANSFORMER
    check_int(t.EMBED_DIM, "MODEL.TRANSFORMER.EMBED_DIM", minimum=1)
    check_int(t.DEPTH, "MODEL.TRANSFORMER.DEPTH", minimum=1)
    check_int(t.NUM_HEADS, "MODEL.TRANSFORMER.NUM_HEADS", minimum=1)
    check_choice(t.PATCH_SIZE, "MODEL.TRANSFORMER.PATCH_SIZE", PATCH_SIZES)
    if t.EMBED_DIM % t.PATCH_SIZE ** 2 != 0:
        raise ConfigError(
            f"MODEL.TRANSFORMER.EMBED_DIM: {t.EMBED_DIM} must be divisible by "
            f"MODEL.TRANSFORMER.PATCH_SIZE**2={t.PATCH_SIZE ** 2}"
        )
    if t.EMBED_DIM % t.NUM_HEADS != 0:
        raise ConfigError(
            f"MODEL.TRANSFORMER.EMBED_DIM: {t.EMBED_DIM} must be divisible by "
            f"MODEL.TRANSFORMER.NUM_HEADS={t.NUM_HEADS}"
        )
    if not t.MLP_RATIO > 0:
        raise ConfigError(f"MODEL.TRANSFORMER.MLP_RATIO: must be > 0, got {t.MLP_RATIO!r}")
    hidden = int(t.EMBED_DIM * t.MLP_RATIO)  # the MLP's width, as the model rounds it
    if not 1 <= hidden <= MAX_INT:
        raise ConfigError(f"MODEL.TRANSFORMER.MLP_RATIO: {t.MLP_RATIO!r} x MODEL.TRANSFORMER.EMBED_DIM {t.EMBED_DIM} "
                          f"gives an MLP of {hidden:.4g} units; allowed: 1 to {MAX_INT}")
    _check_probability(t.DROPOUT, "MODEL.TRANSFORMER.DROPOUT")


def validate_data(data: CfgNode) -> None:
    """Check the values of ``DATA`` (all but DATASET)."""
    if not 0.0 < data.TEST_FRACTION < 1.0:
        raise ConfigError(f"DATA.TEST_FRACTION: must be in (0, 1), got {data.TEST_FRACTION!r}")
    check_int(data.SPLIT_SEED, "DATA.SPLIT_SEED", minimum=0, maximum=MAX_SEED)
    check_int(data.BATCH_SIZE, "DATA.BATCH_SIZE", minimum=1)
    check_int(data.MAX_SHIFT, "DATA.MAX_SHIFT", minimum=0)
    check_int(data.NUM_WORKERS, "DATA.NUM_WORKERS", minimum=-1)
    check_int(data.PREFETCH_FACTOR, "DATA.PREFETCH_FACTOR", minimum=1)
    if data.MAX_SHIFT >= 4:
        raise ConfigError(f"DATA.MAX_SHIFT: must be < 4 pixels on 8x8 images, got {data.MAX_SHIFT}")


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def validate_compile(compile_cfg: CfgNode) -> None:
    """Check MODEL.COMPILE."""
    check_bool(compile_cfg.ENABLED, "MODEL.COMPILE.ENABLED")
    check_bool(compile_cfg.FULLGRAPH, "MODEL.COMPILE.FULLGRAPH")
    check_choice(compile_cfg.MODE, "MODEL.COMPILE.MODE", COMPILE_MODES)
    if compile_cfg.DYNAMIC is not None and not isinstance(compile_cfg.DYNAMIC, bool):
        raise ConfigError(f"MODEL.COMPILE.DYNAMIC: expected None, True or False, got {compile_cfg.DYNAMIC!r}")


def validate_batch_size(data: CfgNode, num_train_images: int) -> None:
    """ConfigError when the batch size leaves an epoch without a single iteration."""
    if data.DROP_LAST and num_train_images < data.BATCH_SIZE:
        raise ConfigError(
            f"DATA.BATCH_SIZE: {data.BATCH_SIZE} with DATA.DROP_LAST=True leaves no full "
            f"batch in an epoch; use a smaller batch or DATA.DROP_LAST False"
        )


def validate_micro_batches(cfg: CfgNode, num_train_images: int, world_size: int = 1) -> None:
    """ConfigError when a step's batch cannot be shared out as ``world_size`` processes times
    SOLVER.ACCUMULATION_STEPS micro-batches (checked after the SOLVER section)."""
    batch, k = cfg.DATA.BATCH_SIZE, cfg.SOLVER.ACCUMULATION_STEPS
    parts = world_size * k
    processes = f" x {world_size} processes" if world_size > 1 else ""
    if batch % parts != 0:
        raise ConfigError(
            f"DATA.BATCH_SIZE: {batch} images per step cannot be split into SOLVER.ACCUMULATION_STEPS="
            f"{k}{processes} equal micro-batches; use a multiple of {parts}"
        )
    last = num_train_images % batch
    if not cfg.DATA.DROP_LAST and 0 < last < parts:
        raise ConfigError(
            f"DATA.DROP_LAST: False leaves a last batch of {last} images, fewer than the {parts} "
            f"micro-batches of SOLVER.ACCUMULATION_STEPS={k}{processes}; set DATA.DROP_LAST True"
        )


def validate_strategy(cfg: CfgNode, world_size: Optional[int]) -> None:
    """ConfigError when SOLVER.DISTRIBUTED.STRATEGY fsdp cannot run this job: a feature built
    for a whole model in every process, or one process (no torchrun; None: not known)."""
    if cfg.SOLVER.DISTRIBUTED.STRATEGY != "fsdp":
        return
    if cfg.SOLVER.OPTIMIZERS:
        raise ConfigError("SOLVER.DISTRIBUTED.STRATEGY: fsdp is not supported with SOLVER.OPTIMIZERS (built "
                          "for a whole model in each process); use ddp or turn SOLVER.OPTIMIZERS off")
    if world_size is not None and world_size < 2:
        raise ConfigError(f"SOLVER.DISTRIBUTED.STRATEGY: fsdp shards the model over the processes of a "
                          f"torchrun job, and this run has {world_size}; launch it with torchrun "
                          f"--nproc_per_node 2 (or more), or use ddp")


def validate_num_classes(model: CfgNode, num_labels: int) -> None:
    """ConfigError when the model has fewer outputs than the data set has labels (the loss
    would fail inside the first step)."""
    if model.NUM_CLASSES < num_labels:
        raise ConfigError(f"MODEL.NUM_CLASSES: {model.NUM_CLASSES} is fewer than the {num_labels} "
                          f"labels of the data set; set it to at least {num_labels}")


def validate_test(test: CfgNode) -> None:
    """Check ``TEST``."""
    check_int(test.EVAL_ITERS, "TEST.EVAL_ITERS", minimum=0)
    epochs = test.EVAL_EPOCHS
    # None (the default) means "use EVAL_ITERS"; the loader lets any scalar through for it.
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, (int, float))
                               or not epochs > 0):
        raise ConfigError(f"TEST.EVAL_EPOCHS: expected a number > 0 or None, got {epochs!r}")
    check_int(test.BATCH_SIZE, "TEST.BATCH_SIZE", minimum=1)


def _check_probability(value, key: str) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{key}: must be in [0, 1), got {value!r}")
