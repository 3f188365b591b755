"""Every shipped config under cfgs/ loads, validates and builds its whole solver, and together
they cover what the README promises: both models, every schedule policy, both length units."""
from pathlib import Path

import pytest

from pet.lib.config import load_cfg
from pet.lib.config.cli import import_custom_modules
from pet.engine.job import validate_job
from pet.lib.utils.lr_scheduler import LearningRateScheduler
from pet.lib.utils.optimizer import Optimizer
from pet.models import build_model

CFGS = sorted((Path(__file__).resolve().parents[3] / "cfgs").glob("*.yaml"))


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """The digits written as image files, for the config of README's "Your own model and data"."""
    from tools.write_image_folder import write_image_folder

    root = tmp_path_factory.mktemp("data") / "digits_folder"
    write_image_folder(str(root), 0.2, 0)
    return root


@pytest.mark.parametrize("cfg_file", CFGS, ids=[p.stem for p in CFGS])
def test_shipped_config_builds_its_solver(cfg_file, request):
    cfg = load_cfg(str(cfg_file))
    import_custom_modules(cfg)
    if cfg.DATA.ROOT:  # a data set on disk: written where the config's user would have it
        cfg.DATA.ROOT = str(request.getfixturevalue("image_folder"))
    iter_per_epoch = validate_job(cfg)
    assert cfg.OUTPUT_DIR == f"ckpts/{cfg_file.stem}"
    optimizer = Optimizer(build_model(cfg), cfg.SOLVER.OPTIMIZER).build()
    scheduler = LearningRateScheduler(optimizer, cfg.SOLVER, iter_per_epoch=iter_per_epoch)
    assert scheduler.max_iter > 0


def test_shipped_configs_cover_models_policies_and_units():
    cfgs = [load_cfg(str(path)) for path in CFGS]
    assert {c.MODEL.TYPE for c in cfgs} == {"cnn", "transformer", "digits_gan"}
    assert {c.SOLVER.SCHEDULER.POLICY for c in cfgs} == {"STEP", "COSINE", "POLY", "STEP_COSINE"}
    assert {c.SOLVER.SCHEDULER.TOTAL_EPOCHS is None for c in cfgs} == {True, False}
    combos = {(c.MODEL.TYPE, c.SOLVER.OPTIMIZER.TYPE, c.SOLVER.SCHEDULER.POLICY) for c in cfgs}
    assert {("cnn", "SGD", "STEP"), ("transformer", "ADAMW", "COSINE")} <= combos
    default = load_cfg(str(CFGS[0].parent / "digits_cnn_sgd_step.yaml"))
    assert default.SOLVER.SCHEDULER.WARM_UP_METHOD == "LINEAR"
