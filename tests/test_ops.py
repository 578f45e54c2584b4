"""The raw ops torch.ops.fused_lstm.*: registration (opcheck), gradients, boundary checks."""
import pytest
import torch

import fused_lstm
from fused_lstm import reference_lstm_layer

pytestmark = pytest.mark.skipif(fused_lstm.backend() != "cpp", reason="compiled extension not loaded")


def layer_args(T=6, B=3, I=5, H=4, dtype=torch.float64, bias=True, requires_grad=False):
    make = lambda *shape: torch.randn(*shape, dtype=dtype, requires_grad=requires_grad)
    return (make(T, B, I), make(B, H), make(B, H), make(4 * H, I), make(4 * H, H),
            make(4 * H) if bias else None)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_forward_matches_reference(reverse, bias):
    args = layer_args(bias=bias)
    output, h_n, c_n, gates, cell = torch.ops.fused_lstm.lstm_layer(*args, reverse, True)
    ref = reference_lstm_layer(*args, reverse=reverse)
    for got, want in zip((output, h_n, c_n), ref):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    assert gates.shape == (6, 3, 16) and cell.shape == (6, 3, 4)
    torch.testing.assert_close(cell[-1 if not reverse else 0], c_n, atol=0, rtol=0)


@pytest.mark.parametrize("reverse", [False, True])
def test_inference_mode_keeps_nothing(reverse):
    args = layer_args(T=40, B=2)
    train = torch.ops.fused_lstm.lstm_layer(*args, reverse, True)
    infer = torch.ops.fused_lstm.lstm_layer(*args, reverse, False)
    for a, b in zip(train[:3], infer[:3]):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert infer[3].numel() == 0 and infer[4].numel() == 0


def test_inference_mode_chunks_long_sequences():
    """Without train, the input projection is computed in chunks of bounded size; the
    result must not depend on where the chunks fall."""
    x, h0, c0, w_ih, w_hh, bias = layer_args(T=3000, B=2, I=3, H=64, dtype=torch.float32)
    train = torch.ops.fused_lstm.lstm_layer(x, h0, c0, w_ih, w_hh, bias, True, True)
    infer = torch.ops.fused_lstm.lstm_layer(x, h0, c0, w_ih, w_hh, bias, True, False)
    for a, b in zip(train[:3], infer[:3]):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_backward_needs_saved_state():
    args = layer_args(requires_grad=True)
    output, *_ = torch.ops.fused_lstm.lstm_layer(*args, False, False)
    with pytest.raises(RuntimeError, match="train=True"):
        output.sum().backward()


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_gradcheck_op(reverse, bias):
    args = layer_args(T=4, B=2, I=3, H=3, bias=bias, requires_grad=True)
    fn = lambda *a: torch.ops.fused_lstm.lstm_layer(*a, reverse, True)[:3]
    assert torch.autograd.gradcheck(fn, args)


def test_opcheck_forward():
    for reverse in (False, True):
        for train in (False, True):
            torch.library.opcheck(torch.ops.fused_lstm.lstm_layer.default,
                                  layer_args(dtype=torch.float32, requires_grad=train) + (reverse, train))


def test_opcheck_backward():
    args = layer_args(dtype=torch.float32)
    output, h_n, c_n, gates, cell = torch.ops.fused_lstm.lstm_layer(*args, False, True)
    x, h0, c0, w_ih, w_hh, _ = args
    grads = (torch.randn_like(output), torch.randn_like(h_n), None)
    torch.library.opcheck(torch.ops.fused_lstm.lstm_layer_backward.default,
                          grads + (x, h0, c0, w_ih, w_hh, output, gates, cell, False))


@pytest.mark.parametrize("which,bad,match", [
    (0, torch.randn(6, 3), "input must be 3-D"),
    (1, torch.randn(3, 5), r"h0 must have shape \(n.B, n.H\)"),
    (2, torch.randn(2, 4), r"c0 must have shape"),
    (3, torch.randn(16, 4), r"w_ih must have shape"),
    (4, torch.randn(15, 4), r"w_hh must be 2-D \(4H, H\)"),
    (5, torch.randn(15), r"bias must have shape"),
    (3, torch.randn(16, 5, dtype=torch.float64), r"w_ih must have dtype Float"),
    (0, torch.randint(0, 3, (6, 3, 5)), "input must be float32 or float64"),
])
def test_op_boundary_checks(which, bad, match):
    args = list(layer_args(dtype=torch.float32))
    args[which] = bad
    with pytest.raises(RuntimeError, match=match):
        torch.ops.fused_lstm.lstm_layer(*args, False, True)
