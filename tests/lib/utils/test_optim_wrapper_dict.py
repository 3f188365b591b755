"""The wrapper's MMEngine API (get_lr, get_momentum, param_groups, backward) and OptimWrapperDict,
against the return values MMEngine documents (its optimizer-wrapper tutorial)."""
import pytest
import torch
from torch import nn

from pet.lib.utils.optim_wrapper import OptimWrapper, OptimWrapperDict


def sgd_wrapper(lr=0.01, **kwargs):
    return OptimWrapper(torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=lr, **kwargs))


def test_get_lr_and_get_momentum_return_what_mmengine_documents():
    wrapper = sgd_wrapper()
    assert wrapper.get_lr() == {"lr": [0.01]}
    assert wrapper.get_momentum() == {"momentum": [0]}
    assert wrapper.param_groups is wrapper.optimizer.param_groups


def test_get_momentum_reads_sgd_momentum_adam_betas0_and_0_otherwise():
    model = nn.Linear(2, 2)
    adamw = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.85, 0.99)))
    assert adamw.get_momentum() == {"momentum": [0.85]}
    assert sgd_wrapper(momentum=0.9).get_momentum() == {"momentum": [0.9]}
    adagrad = OptimWrapper(torch.optim.Adagrad(model.parameters(), lr=0.1))
    assert adagrad.get_momentum() == {"momentum": [0]}
    two_groups = OptimWrapper(torch.optim.SGD([{"params": [model.weight], "lr": 0.1},
                                               {"params": [model.bias]}], lr=0.2, momentum=0.5))
    assert two_groups.get_lr() == {"lr": [0.1, 0.2]} and two_groups.get_momentum() == {"momentum": [0.5, 0.5]}


def test_backward_scales_the_loss_with_a_scaler():
    model = nn.Linear(1, 1, bias=False)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), scaler=scaler)
    wrapper.backward(model(torch.ones(1, 1)).sum())
    assert model.weight.grad.item() == 4.0


def test_the_dict_reads_every_wrapper_as_mmengine_documents():
    gen, disc = sgd_wrapper(), sgd_wrapper()
    optim_dict = OptimWrapperDict(gen=gen, disc=disc)
    assert optim_dict.get_lr() == {"gen.lr": [0.01], "disc.lr": [0.01]}
    assert optim_dict.get_momentum() == {"gen.momentum": [0], "disc.momentum": [0]}
    assert list(optim_dict.keys()) == ["gen", "disc"] == list(optim_dict)
    assert list(optim_dict.values()) == [gen, disc] and dict(optim_dict.items()) == {"gen": gen, "disc": disc}
    assert optim_dict["gen"] is gen and "disc" in optim_dict and len(optim_dict) == 2


def test_the_dict_saves_and_loads_every_wrapper():
    scaled = OptimWrapper(torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1),
                          scaler=torch.amp.GradScaler("cpu", init_scale=8.0), accumulation_steps=2)
    optim_dict = OptimWrapperDict(gen=scaled, disc=sgd_wrapper())
    scaled.update_params(scaled.optimizer.param_groups[0]["params"][0].sum())  # 1 of 2 micro-batches
    state = optim_dict.state_dict()
    assert set(state) == {"gen", "disc"} and state["gen"]["micro_batches"] == 1
    assert state["gen"]["scaler"]["scale"] == 8.0
    fresh = OptimWrapperDict(gen=OptimWrapper(torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1),
                                              scaler=torch.amp.GradScaler("cpu"), accumulation_steps=2),
                             disc=sgd_wrapper())
    fresh.load_state_dict(state)
    assert fresh["gen"].micro_batches == 1 and fresh["gen"].scaler.get_scale() == 8.0
    with pytest.raises(KeyError, match="disc"):
        fresh.load_state_dict({"gen": state["gen"]})


def test_the_dict_updates_nothing_itself_and_takes_only_wrappers():
    optim_dict = OptimWrapperDict(gen=sgd_wrapper(), disc=sgd_wrapper())
    for method in ("update_params", "backward", "step", "optim_context"):
        with pytest.raises(NotImplementedError, match=rf"optim_wrappers\['gen'\].{method}"):
            getattr(optim_dict, method)(torch.zeros(()))
    with pytest.raises(TypeError, match="only accepts OptimWrapper values, got SGD for 'gen'"):
        OptimWrapperDict(gen=torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1))


def test_a_non_finite_step_names_the_optimizer_and_its_own_keys():
    # An optimizer of SOLVER.OPTIMIZERS: the hint names its entry's keys (SOLVER.OPTIMIZERS.<name>.BASE_LR),
    # whether the step raises at once (no fused kernel) or at the next read (fused).
    for implementation in ({"foreach": False}, {"fused": True}):
        gen, disc = nn.Linear(1, 1), nn.Linear(1, 1)
        wrappers = OptimWrapperDict(
            gen=OptimWrapper(torch.optim.SGD(gen.parameters(), lr=0.1, **implementation), name="gen"),
            disc=OptimWrapper(torch.optim.SGD(disc.parameters(), lr=0.1, **implementation), name="disc"))
        wrappers["disc"].update_params(disc(torch.ones(1, 1)).sum())
        with pytest.raises(FloatingPointError, match=r"^the gen optimizer's loss became nan; lower "
                                                     r"SOLVER.OPTIMIZERS.gen.BASE_LR, enable "
                                                     r"SOLVER.OPTIMIZERS.gen.CLIP_GRADIENTS or skip such steps "
                                                     r"with SOLVER.SKIP_NONFINITE$"):
            wrappers["gen"].update_params(gen(torch.ones(1, 1)).sum() * float("nan"))
            wrappers.read_back()
