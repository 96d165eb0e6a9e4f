"""The vectorised LpSGD step (issue 20) against the per-tensor step it replaced, kept here as the reference: the
same parameters, feature vectors and momentum buffers within 1e-6 in float64 over several steps, on an MLP and a
conv net, with and without Nesterov, without momentum, with a mixing rate >= 1, with zero gradient rows and with a
channels_last conv weight."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from sparsebench.methods.nn.lpsgd import LpSGD, row_norm, signed_pow


@torch.no_grad()
def reference_step(opt: LpSGD) -> None:
    """LpSGD.step as it was (one tensor after another, three powers per entry): the authors' LpCGD.step
    (WilliamLiPro/LpSS optimizer/lpcgd.py) with row norms floored at eps."""
    for g in opt.param_groups:
        lr, mu, lp = g["lr"], g["momentum"], g["lp"]
        for p in g["params"]:
            if p.grad is None:
                continue
            d, st = p.grad, opt.state[p]
            if mu:
                buf = st.get("momentum_buffer")
                if buf is None:
                    buf = st["momentum_buffer"] = d.clone()
                else:
                    buf.mul_(mu).add_(d)
                d = d.add(buf, alpha=mu) if g["nesterov"] else buf
            if lp is None:
                p.add_(d, alpha=-lr)
                continue
            q = lp / (lp - 1.0)
            v = st.get("v")
            if v is None:
                v = st["v"] = signed_pow(p, lp - 1.0)
            v.mul_(1.0 - lr).sub_(d / row_norm(d, q), alpha=lr)
            v.div_(row_norm(v, q))
            p.copy_(signed_pow(v, 1.0 / (lp - 1.0)))


def mlp(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                               torch.nn.Linear(32, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                               torch.nn.Linear(16, 5)).to(dtype)


def convnet(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 12, 3, bias=False), torch.nn.BatchNorm2d(12), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(12, 5)).to(dtype)


def groups(model, ps, eta):
    weights = [m.weight for m in model if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))][:-1]
    ids = {id(w) for w in weights}
    free = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": free, "lp": None}] + [{"params": [w], "lp": p, "lr": eta} for w, p in zip(weights, ps)]


def run_both(make, x, y, steps=6, ps=(1.07, 1.3), eta=0.02, dead_row=False, **opt_kw):
    """Trains two copies of the model, one with LpSGD.step, one with the reference; returns both (model, opt)."""
    out = []
    for step in (LpSGD.step, reference_step):
        model = make()
        opt = LpSGD(groups(model, ps, eta), lr=0.1, **opt_kw)
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            if dead_row:       # a unit whose gradient row is exactly zero (a dead ReLU unit)
                model[0].weight.grad[1].zero_()
            step(opt)
        out.append((model, opt))
    return out


def assert_same(a, b, atol):
    (ma, oa), (mb, ob) = a, b
    for pa, pb in zip(ma.parameters(), mb.parameters()):
        assert (pa - pb).abs().max() <= atol
        sa, sb = oa.state[pa], ob.state[pb]
        assert sa.keys() == sb.keys()
        for k in sa:
            assert (sa[k] - sb[k]).abs().max() <= atol, k


def data(conv, dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 3, 9, 9, generator=g) if conv else torch.randn(16, 20, generator=g)
    return x.to(dtype), torch.randint(0, 5, (16,), generator=g)


@pytest.mark.parametrize("conv", [False, True])
@pytest.mark.parametrize("opt_kw", [dict(momentum=0.9, nesterov=True), dict(momentum=0.9, nesterov=False),
                                    dict(momentum=0.0)])
def test_equals_the_reference_step_in_float64(conv, opt_kw):
    x, y = data(conv, torch.float64)
    a, b = run_both(lambda: (convnet if conv else mlp)(torch.float64), x, y, **opt_kw)
    assert_same(a, b, 1e-6)


@pytest.mark.parametrize("eta", [0.5, 1.0, 1.5])
def test_large_mixing_rates_and_a_zero_gradient_row(eta):
    """eta < 1 takes the one-pass form v/(1 - eta) - ...; eta >= 1 the direct one; a zero row normalises to 0."""
    x, y = data(False, torch.float64)
    a, b = run_both(lambda: mlp(torch.float64), x, y, eta=eta, dead_row=True)
    assert_same(a, b, 1e-6)


def test_float32_at_p_1_07_agrees_with_the_reference():
    """exp/log instead of pow: a few float32 ulps apart per step, never a different sparsity pattern."""
    x, y = data(True, torch.float32)
    a, b = run_both(lambda: convnet(torch.float32), x, y, ps=(1.07, 1.07))
    assert_same(a, b, 1e-5)
    for pa, pb in zip(a[0].parameters(), b[0].parameters()):
        assert torch.equal(pa == 0, pb == 0)


def test_channels_last_conv_weight():
    x, y = data(True, torch.float64)

    def make():
        return convnet(torch.float64).to(memory_format=torch.channels_last)

    assert not make()[3].weight.is_contiguous()
    a, b = run_both(make, x, y)
    assert_same(a, b, 1e-6)
    assert a[1].state[a[0][3].weight]["v"].is_contiguous()


def test_state_dict_round_trip_continues_identically():
    """A checkpointed optimizer (state keys `momentum_buffer` and `v`, as before) resumes to the same step (up to
    the rounding of the projection every new LpSGD applies to its rows)."""
    x, y = data(False, torch.float64)
    model = mlp(torch.float64)
    opt = LpSGD(groups(model, (1.07, 1.3), 0.02), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model2 = copy.deepcopy(model)
    opt2 = LpSGD(groups(model2, (1.07, 1.3), 0.02), lr=0.1)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))   # load_state_dict shares same-dtype tensors
    for m, o in ((model, opt), (model2, opt2)):
        o.zero_grad()
        F.cross_entropy(m(x), y).backward()
        o.step()
    assert all((p - q).abs().max() < 1e-12 for p, q in zip(model.parameters(), model2.parameters()))


def test_weights_below_the_smallest_normal_float_become_exact_zeros():
    """float32, p = 1.07: weights the reference leaves at 0 or subnormal (< 1.2e-38) are 0 here, those from 2e-38 up
    agree within float32 rounding, and the row stays on its sphere."""
    row = torch.tensor([1.0, 0.5, 1e-20, 1e-36, 1e-37, 2e-38, 1e-38, 3e-39, 1e-41, 1e-44, 0.0, -1e-39])
    out = []
    for step in (LpSGD.step, reference_step):
        w = torch.nn.Parameter(row.repeat(3, 1) * torch.tensor([[1.0], [-1.0], [0.3]]))
        opt = LpSGD([{"params": [w], "lp": 1.07, "lr": 0.01}], lr=0.01)
        for _ in range(3):
            w.grad = torch.zeros(3, 12)
            w.grad[:, :2] = torch.tensor([1e-3, -2e-3])   # the large entries move, the small ones decay
            step(opt)
        out.append(w.detach().clone())
    new, ref = out
    subnormal = ref.abs() < torch.finfo(torch.float32).tiny
    assert subnormal.sum() >= 6 and ((ref != 0) & subnormal).any()     # the case arises
    assert torch.equal(new[subnormal], torch.zeros_like(new[subnormal]))
    big = ref.abs() >= 2e-38
    assert torch.allclose(new[big], ref[big], rtol=1e-5, atol=0)
    assert (exact_norm_p(new, 1.07) - 1).abs().max() < 1e-5


def exact_norm_p(w: torch.Tensor, p: float) -> torch.Tensor:
    return w.double().reshape(w.shape[0], -1).abs().pow(p).sum(1).pow(1 / p)


def test_constrained_tensors_of_different_dtypes_in_one_step():
    """float32 and float64 tensors together: each gets its own dtype's limits and equals the reference."""
    out = []
    for step in (LpSGD.step, reference_step):
        torch.manual_seed(3)
        a = torch.nn.Parameter(torch.randn(4, 6))
        b = torch.nn.Parameter(torch.randn(3, 5, dtype=torch.float64))
        opt = LpSGD([{"params": [a], "lp": 1.07}, {"params": [b], "lp": 1.3}], lr=0.05)
        for i in range(4):
            a.grad = torch.sin(torch.arange(24.0) + i).view(4, 6)
            b.grad = torch.cos(torch.arange(15.0, dtype=torch.float64) + i).view(3, 5)
            step(opt)
        out.append((a.detach().clone(), b.detach().clone()))
    (a1, b1), (a2, b2) = out
    assert (a1 - a2).abs().max() < 1e-5 and (b1 - b2).abs().max() < 1e-12
