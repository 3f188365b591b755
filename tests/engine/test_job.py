"""Tests of pet/engine/job.py (and the value checks of pet/lib/config/validate_job.py): every key
of MODEL, DATA, TEST and the run keys is checked with a message naming it, the names from the
registries."""
import pytest
from yacs.config import CfgNode

from pet.data import DATASETS, iter_per_epoch
from pet.lib.config import ConfigError, get_cfg, merge_from_list
from pet.engine.job import validate_job


def test_defaults_are_valid_and_give_the_iterations_per_epoch():
    cfg = get_cfg()
    assert validate_job(cfg) == iter_per_epoch(cfg) == 44
    # Nothing a test registered stays behind; the example's module (cfgs/image_folder.py), once
    # imported, keeps its entry as any CUSTOM_IMPORTS module does.
    assert set(DATASETS.names()) <= {"digits", "digits_folder"} and DATASETS.names()[0] == "digits"


@pytest.mark.parametrize("overrides, message", [
    (["OUTPUT_DIR", " "], "OUTPUT_DIR: expected a directory path"),
    (["SEED", "-1"], "SEED: expected an integer >= 0, got -1"),
    (["LOG_PERIOD", "0"], "LOG_PERIOD: expected an integer >= 1, got 0"),
    (["MODEL.TYPE", "resnet"], "MODEL.TYPE: unknown value 'resnet'; allowed: cnn, transformer"),
    (["MODEL.NUM_CLASSES", "1"], "MODEL.NUM_CLASSES: expected an integer >= 2"),
    (["MODEL.CNN.CHANNELS", "(8, 8)"], "MODEL.CNN.CHANNELS: expected three positive integers"),
    (["MODEL.CNN.DROPOUT", "1.0"], "MODEL.CNN.DROPOUT: must be in [0, 1), got 1.0"),
    (["MODEL.TRANSFORMER.PATCH_SIZE", "3"], "MODEL.TRANSFORMER.PATCH_SIZE: unknown value 3; allowed: 1, 2, 4"),
    (["MODEL.TRANSFORMER.EMBED_DIM", "62"], "EMBED_DIM: 62 must be divisible by MODEL.TRANSFORMER.PATCH_SIZE**2=4"),
    (["MODEL.TRANSFORMER.NUM_HEADS", "3"], "EMBED_DIM: 64 must be divisible by MODEL.TRANSFORMER.NUM_HEADS=3"),
    (["DATA.DATASET", "mnist"], "DATA.DATASET: unknown value 'mnist'; allowed: digits"),
    (["DATA.TEST_FRACTION", "1.0"], "DATA.TEST_FRACTION: must be in (0, 1), got 1.0"),
    (["DATA.BATCH_SIZE", "0"], "DATA.BATCH_SIZE: expected an integer >= 1, got 0"),
    (["DATA.BATCH_SIZE", "2000"], "DATA.BATCH_SIZE: 2000 with DATA.DROP_LAST=True leaves no full batch"),
    (["DATA.MAX_SHIFT", "4"], "DATA.MAX_SHIFT: must be < 4 pixels"),
    (["MODEL.COMPILE.MODE", "fast"], "MODEL.COMPILE.MODE: unknown value 'fast'; allowed: default, reduce-overhead, "
                                     "max-autotune, max-autotune-no-cudagraphs"),
    (["MODEL.COMPILE.DYNAMIC", "1"], "MODEL.COMPILE.DYNAMIC: expected None, True or False, got 1"),
    (["DATA.NUM_WORKERS", "-2"], "DATA.NUM_WORKERS: expected an integer >= -1, got -2"),
    (["DATA.PREFETCH_FACTOR", "0"], "DATA.PREFETCH_FACTOR: expected an integer >= 1, got 0"),
    (["MODEL.NUM_CLASSES", "5"], "MODEL.NUM_CLASSES: 5 is fewer than the 10 labels of the data set"),
    (["TEST.EVAL_EPOCHS", "0"], "TEST.EVAL_EPOCHS: expected a number > 0 or None, got 0"),
    (["TEST.BATCH_SIZE", "0"], "TEST.BATCH_SIZE: expected an integer >= 1, got 0"),
    (["MODEL.DEVICE", "gpu"], "MODEL.DEVICE: unknown value 'gpu'; allowed: auto, cpu, cuda, cuda:N"),
    (["MODEL.DEVICE", "cuda:x"], "MODEL.DEVICE: unknown value 'cuda:x'"),
    (["SOLVER.AMP.DTYPE", "float8"], "SOLVER.AMP.DTYPE: unknown value 'float8'; allowed: bfloat16, float16"),
    (["SOLVER.ACCUMULATION_STEPS", "0"], "SOLVER.ACCUMULATION_STEPS: expected an integer >= 1, got 0"),
    (["SOLVER.ACCUMULATION_STEPS", "3"], "DATA.BATCH_SIZE: 32 images per step cannot be split into "
                                         "SOLVER.ACCUMULATION_STEPS=3 equal micro-batches; use a multiple of 3"),
    # 1437 training images: a last batch of 29 (DROP_LAST False) cannot feed 32 micro-batches.
    (["DATA.DROP_LAST", "False", "SOLVER.ACCUMULATION_STEPS", "32"],
     "DATA.DROP_LAST: False leaves a last batch of 29 images, fewer than the 32 micro-batches"),
    # The solver is checked with the data's iterations per epoch (44): epoch 30 is past the end.
    (["SOLVER.SCHEDULER.TOTAL_EPOCHS", "20", "SOLVER.SCHEDULER.STEPS", "(10, 30)"],
     "SOLVER.SCHEDULER.STEPS: every milestone must be below the schedule's length (20 epochs)"),
])
def test_bad_values_name_their_key(overrides, message):
    cfg = get_cfg()
    merge_from_list(cfg, overrides)
    with pytest.raises(ConfigError) as error:
        validate_job(cfg)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_the_batch_is_split_over_processes_and_micro_batches():
    cfg = get_cfg()
    merge_from_list(cfg, ["SOLVER.ACCUMULATION_STEPS", "2"])
    assert validate_job(cfg, world_size=2) == 44
    merge_from_list(cfg, ["DATA.BATCH_SIZE", "36"])
    with pytest.raises(ConfigError, match=r"^DATA.BATCH_SIZE: 36 images per step cannot be split into "
                       r"SOLVER.ACCUMULATION_STEPS=2 x 4 processes equal micro-batches; use a multiple of 8$"):
        validate_job(cfg, world_size=4)


@pytest.mark.parametrize("overrides, world_size, message", [
    (["SOLVER.DISTRIBUTED.STRATEGY", "fsdp"], 1, "fsdp shards the model over the processes of a torchrun job"),
    (["SOLVER.DISTRIBUTED.STRATEGY", "FSDP"], 2, "SOLVER.DISTRIBUTED.STRATEGY: unknown value 'FSDP'; allowed: ddp, fsdp"),
    (["SOLVER.ASYNC_CHECKPOINT", "True"], 2, "SOLVER.ASYNC_CHECKPOINT: True needs SOLVER.DISTRIBUTED.STRATEGY fsdp"),
    (["SOLVER.DISTRIBUTED.FSDP_BLOCKS", "['']"], 2, "SOLVER.DISTRIBUTED.FSDP_BLOCKS: expected a list"),
])
def test_the_strategy_is_checked_against_the_job(overrides, world_size, message):
    cfg = get_cfg()
    merge_from_list(cfg, overrides)
    with pytest.raises(ConfigError, match=message):
        validate_job(cfg, world_size=world_size)


@pytest.mark.parametrize("world_size", [2, None])
def test_fsdp_refuses_several_optimizers(world_size):
    cfg = get_cfg()
    merge_from_list(cfg, ["SOLVER.DISTRIBUTED.STRATEGY", "fsdp"])
    cfg.SOLVER.OPTIMIZERS = CfgNode({"backbone": {"BASE_LR": 0.1}, "head": {"BASE_LR": 0.2}})
    with pytest.raises(ConfigError, match=r"^SOLVER.DISTRIBUTED.STRATEGY: fsdp is not supported with "
                                          r"SOLVER.OPTIMIZERS \(built for a whole model"):
        validate_job(cfg, world_size=world_size)


def test_a_tool_that_does_not_run_the_job_accepts_fsdp():
    """check_cfg and the other tools do not know the number of processes (None): an fsdp
    config checks; train_net, which knows it, refuses one process."""
    cfg = get_cfg()
    merge_from_list(cfg, ["MODEL.TYPE", "transformer", "SOLVER.DISTRIBUTED.STRATEGY", "fsdp",
                          "SOLVER.ASYNC_CHECKPOINT", "True"])
    assert validate_job(cfg) == validate_job(cfg, world_size=2) == 44


@pytest.mark.parametrize("overrides, message", [
    (["MODEL.TYPE", "cnn"], "MODEL.TYPE cnn names no blocks; set SOLVER.DISTRIBUTED.FSDP_BLOCKS"),
    (["SOLVER.DISTRIBUTED.FSDP_BLOCKS", "['backbone.nothing.*']"], "'backbone.nothing.*' matches no submodule"),
    (["SOLVER.OPTIMIZER.TYPE", "MUON"], "SOLVER.OPTIMIZER.TYPE: MUON cannot step parameters sharded"),
    (["SOLVER.OPTIMIZER.IMPLEMENTATION", "fused"], "'fused' cannot step SGD on sharded parameters"),
])
def test_what_fsdp_cannot_shard_is_refused_before_the_processes_meet(overrides, message):
    """The model (built on the meta device) and the optimizer, checked by validate_job: every
    process refuses alike, before the process group (one line from the first process)."""
    cfg = get_cfg()
    merge_from_list(cfg, ["MODEL.TYPE", "transformer", "SOLVER.DISTRIBUTED.STRATEGY", "fsdp", *overrides])
    with pytest.raises(ConfigError, match=message):
        validate_job(cfg, world_size=2)
