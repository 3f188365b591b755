"""Tests of pet/engine/ema.py (timm's ModelEmaV3 semantics) and of the best checkpoint."""
import torch
from torch import nn

from pet.engine.checkpointer import Checkpointer
from pet.engine.ema import EMAHook, ModelEMA, ema_decay
from pet.engine.events import MetricsStorage
from pet.engine.hooks import BestCheckpointer, EvalHook


def bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))


def test_update_averages_parameters_and_copies_buffers():
    model = bn_model()
    ema = ModelEMA(model, decay=0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(8, 4))  # moves the BatchNorm running statistics
    ema.update(model, 0)
    for name, p in model.named_parameters():
        assert torch.allclose(ema.module.state_dict()[name], 0.9 * before[name] + 0.1 * p)
    for name, b in model.named_buffers():
        assert torch.equal(ema.module.state_dict()[name], b)
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training


def test_decay_warms_up_as_timm_and_never_passes_decay():
    assert ema_decay(0.999, 0, warmup=False) == 0.999
    assert ema_decay(0.999, 0, warmup=True) == 0.0  # the first update copies the weights
    assert ema_decay(0.999, 7, warmup=True) == 1 - 8 ** (-2 / 3)
    assert ema_decay(0.999, 10 ** 9, warmup=True) == 0.999


def test_hook_updates_every_n_iterations():
    model = bn_model()
    ema = ModelEMA(model, decay=0.5)
    hook = EMAHook(model, ema, every=2)
    storage = MetricsStorage()
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    start = ema.module[0].weight.clone()
    storage.begin_iteration(0)
    hook.after_step(storage)
    assert torch.equal(ema.module[0].weight, start)
    storage.begin_iteration(1)
    hook.after_step(storage)
    torch.testing.assert_close(ema.module[0].weight, 0.5 * start + 0.5, rtol=1e-6, atol=1e-7)


def test_ema_is_a_checkpointable_restored_bit_exactly(tmp_path):
    model = bn_model()
    ema = ModelEMA(model, decay=0.7)
    with torch.no_grad():
        model[0].weight.mul_(3.0)
    ema.update(model, 0)
    Checkpointer(str(tmp_path), model=model, ema=ema).save("model_final", 1)
    restored_model = bn_model()
    restored = ModelEMA(restored_model, decay=0.7)
    Checkpointer(str(tmp_path), resume=True, model=restored_model, ema=restored).load()
    for key, value in ema.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value)


def test_best_checkpoint_is_written_only_when_accuracy_improves(tmp_path):
    model = bn_model()
    accuracies = iter([50.0, 40.0, 60.0])
    eval_hook = EvalHook(lambda: {"accuracy": next(accuracies)}, period=1, max_iter=3, iter_per_epoch=1)
    best = BestCheckpointer(Checkpointer(str(tmp_path), model=model), eval_hook)
    storage = MetricsStorage()
    best.before_train(storage)
    saved = []
    for it in range(3):
        storage.begin_iteration(it)
        eval_hook.after_step(storage)
        best.after_step(storage)
        path = tmp_path / "model_best.pth"
        saved.append(torch.load(path, weights_only=True)["accuracy"] if path.exists() else None)
    assert saved == [50.0, 50.0, 60.0]
    checkpoint = torch.load(tmp_path / "model_best.pth", weights_only=True)
    assert checkpoint["iteration"] == 3 and checkpoint["epoch"] == 3 and set(checkpoint["model"]) == set(model.state_dict())
    assert not (tmp_path / "last_checkpoint").exists()
