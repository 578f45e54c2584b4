"""Shared helpers: an nn.LSTM and a FusedLSTM holding the same weights."""
from typing import Tuple

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

import fused_lstm
from fused_lstm import FusedLSTM

# The CPU kernel paths this machine can run.
ISAS = [isa for isa in ("generic", "avx2", "avx512") if fused_lstm.cpu_supports(isa)]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=ISAS)
def isa(request):
    """Runs the test once per CPU kernel path (fused_lstm.set_cpu_isa), then restores it."""
    default = fused_lstm.cpu_isa()
    fused_lstm.set_cpu_isa(request.param)
    yield request.param
    fused_lstm.set_cpu_isa(default)


@pytest.fixture(params=["own", "blas"])
def gemm(request):
    """Runs the test once per GEMM of the layers' large products (fused_lstm.set_cpu_gemm),
    then restores the default. Take it after `isa`: only AVX-512 has its own GEMM, and with
    the other ISAs both names run the BLAS, so "own" is skipped there."""
    if request.param == "own" and fused_lstm.cpu_isa() != "avx512":
        pytest.skip(f"the {fused_lstm.cpu_isa()} kernels have no GEMM of their own")
    default = fused_lstm.cpu_gemm()
    fused_lstm.set_cpu_gemm(request.param)
    yield request.param
    fused_lstm.set_cpu_gemm(default)


def make_pair(dtype: torch.dtype = torch.float32, **kwargs) -> Tuple[nn.LSTM, FusedLSTM]:
    """nn.LSTM and FusedLSTM with identical weights (copied through state_dict)."""
    ref = nn.LSTM(**kwargs).to(dtype)
    fused = FusedLSTM(**kwargs).to(dtype)
    fused.load_state_dict(ref.state_dict())
    return ref, fused


def run(model: nn.Module, x: torch.Tensor, hx, weights):
    """Forward, then gradients of a loss that weights every output differently, so that a
    gradient landing on the wrong element cannot cancel out. Returns the outputs and the
    gradients of the input, of h0/c0 (if given) and of every parameter."""
    if isinstance(x, PackedSequence):  # the gradient flows to the packed data
        x = x._replace(data=x.data.detach().clone().requires_grad_())
        leaf = x.data
    else:
        x = leaf = x.detach().clone().requires_grad_()
    hx = None if hx is None else tuple(s.detach().clone().requires_grad_() for s in hx)
    out, (h_n, c_n) = model(x, hx)
    if isinstance(out, PackedSequence):
        out = out.data
    loss = (out * weights[0]).sum() + (h_n * weights[1]).sum() + (c_n * weights[2]).sum()
    leaves = [leaf] + ([] if hx is None else list(hx)) + list(model.parameters())
    grads = torch.autograd.grad(loss, leaves)
    return (out, h_n, c_n), grads


def assert_within_2x(want, base, got, dtype: torch.dtype, names=None, what: str = "nn.LSTM"):
    """The error bound stated as flash-attention does: each tensor of `got` is at most 2x as
    far (max abs) from the float64 reference `want` as `base` (nn.LSTM in the same dtype) is,
    plus one rounding of the result to `dtype`."""
    for k, (w, b, g) in enumerate(zip(want, base, got)):
        w = w.double().cpu()
        ulp = torch.finfo(dtype).eps * w.abs().max().item()
        err = (g.double().cpu() - w).abs().max().item()
        base_err = (b.double().cpu() - w).abs().max().item()
        name = names[k] if names else f"tensor {k}"
        assert err <= 2 * base_err + ulp, f"{name}: error {err:.3g}, {what}'s {base_err:.3g}"
