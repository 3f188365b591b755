"""TYPE MUON: one optimizer, torch's Muon on the 2-D hidden matrices and torch's AdamW on the
rest, stepping exactly like the two torch classes side by side; checkpoints, clipping, the
scheduler and the explanation treat it like any other optimizer."""
import copy
import io
import pickle

import torch
from torch import nn

from pet.lib.config import get_cfg
from pet.lib.utils.muon import MuonWithAdamW
from pet.lib.utils.optimizer import Optimizer
from pet.lib.utils.param_groups import explain_params
from pet.reports.param_report import rule_label


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(10, 8)
        self.body = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8), nn.LayerNorm(8))
        self.head = nn.Linear(8, 3)


def muon_cfg(**overrides):
    o = get_cfg().SOLVER.OPTIMIZER
    o.TYPE, o.BASE_LR, o.WEIGHT_DECAY, o.MUON.ADAMW_LR_MULT = "muon", 0.02, 0.01, 0.5
    for key, value in overrides.items():
        o[key] = value
    return o


def set_grads(model, seed):
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen)


def test_matrices_go_to_muon_the_rest_to_adamw_with_its_lr():
    labels = {a.name: (rule_label(a), a.lr) for a in explain_params(Net(), Optimizer(Net(), muon_cfg()).spec.grouping)}
    assert labels["body.0.weight"] == ("default+muon", 0.02) and labels["body.2.weight"] == ("default+muon", 0.02)
    assert labels["embed.weight"] == ("embed+adamw", 0.01)
    assert labels["head.weight"] == ("default+adamw", 0.01)
    assert labels["body.0.bias"] == ("bias+adamw", 0.01) and labels["body.3.weight"] == ("norm+adamw", 0.01)


def test_one_step_equals_torch_muon_and_adamw_side_by_side():
    model = Net()
    ref = copy.deepcopy(model)
    opt = Optimizer(model, muon_cfg(BETAS=(0.8, 0.95))).build()
    assert type(opt) is MuonWithAdamW
    muon = torch.optim.Muon([ref.body[0].weight, ref.body[2].weight], lr=0.02, weight_decay=0.01,
                            momentum=0.95, nesterov=True, adjust_lr_fn="match_rms_adamw")
    adamw = torch.optim.AdamW([
        dict(params=[ref.embed.weight], weight_decay=0.0),
        dict(params=[ref.body[0].bias, ref.body[2].bias], weight_decay=0.0),
        dict(params=[ref.body[3].weight, ref.body[3].bias], weight_decay=0.0),
        dict(params=[ref.head.weight], weight_decay=0.01),
        dict(params=[ref.head.bias], weight_decay=0.0)], lr=0.01, betas=(0.8, 0.95))
    for step in range(3):
        set_grads(model, step)
        set_grads(ref, step)
        opt.step()
        muon.step()
        adamw.step()
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, msg=name)


def test_state_dict_round_trip_pickle_and_clipping():
    model = Net()
    opt = Optimizer(model, muon_cfg()).build()
    set_grads(model, 0)
    opt.step()
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    twin_model = copy.deepcopy(model)
    twin = Optimizer(twin_model, muon_cfg()).build()
    twin.load_state_dict(torch.load(buffer, weights_only=True))
    for m, o in ((model, opt), (twin_model, twin)):
        set_grads(m, 1)
        o.step()
    for p, q in zip(model.parameters(), twin_model.parameters()):
        torch.testing.assert_close(p, q)
    clone = pickle.loads(pickle.dumps(opt))
    assert clone.state_dict()["param_groups"] == opt.state_dict()["param_groups"]

    cfg = muon_cfg()
    cfg.CLIP_GRADIENTS.ENABLED, cfg.CLIP_GRADIENTS.CLIP_TYPE, cfg.CLIP_GRADIENTS.CLIP_VALUE = True, "full_model", 0.1
    clipped_model, plain_model = Net(), Net()
    clipped = Optimizer(clipped_model, cfg).build()
    plain = Optimizer(plain_model, muon_cfg()).build()
    assert isinstance(clipped, MuonWithAdamW) and type(clipped).__name__ == "ClippedMuonWithAdamW"
    set_grads(clipped_model, 2)
    set_grads(plain_model, 2)
    torch.nn.utils.clip_grad_norm_(plain_model.parameters(), 0.1)
    clipped.step()
    plain.step()
    for p, q in zip(clipped_model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_a_group_added_later_steps_with_its_side_as_torch_does():
    model, extra = Net(), nn.Linear(4, 4)
    ref, ref_extra = copy.deepcopy(model), copy.deepcopy(extra)
    opt = MuonWithAdamW([dict(params=[model.body[0].weight], use_muon=True)], lr=0.02)
    opt.step()  # before the new groups exist
    opt.add_param_group(dict(params=[extra.weight], use_muon=True))
    opt.add_param_group(dict(params=[extra.bias]))
    muon = torch.optim.Muon([ref.body[0].weight, ref_extra.weight], lr=0.02, weight_decay=0.0)
    adamw = torch.optim.AdamW([ref_extra.bias], lr=0.02, weight_decay=0.0)
    for step in range(2):
        for m, e in ((model, extra), (ref, ref_extra)):
            set_grads(m, step)
            e.weight.grad, e.bias.grad = torch.full((4, 4), 0.1 * (step + 1)), torch.full((4,), 0.2)
        opt.step()
        muon.step()
        adamw.step()
    torch.testing.assert_close(model.body[0].weight, ref.body[0].weight)
    torch.testing.assert_close(extra.weight, ref_extra.weight)
    torch.testing.assert_close(extra.bias, ref_extra.bias)
