"""The raw ops torch.ops.fused_lstm.*: registration (opcheck), gradients, boundary checks."""
import itertools

import pytest
import torch

import fused_lstm
from fused_lstm import reference_lstm_layer

pytestmark = pytest.mark.skipif(fused_lstm.backend() != "cpp", reason="compiled extension not loaded")

LENGTHS = [6, 6, 4, 1]  # a packed batch: sorted by decreasing length, some equal


def layer_args(T=8, B=4, I=5, H=4, P=0, packed=False, bias=True, dtype=torch.float64,
               requires_grad=False):
    """Positional args of lstm_layer up to (not including) reverse/train. T = 8: in float32
    the ops take the fused kernels from 8 steps (lstm_cpu.cpp's use_fused)."""
    make = lambda *shape: torch.randn(*shape, dtype=dtype, requires_grad=requires_grad)
    Ph = P or H
    if packed:
        batch_sizes = torch.tensor([sum(l > t for l in LENGTHS) for t in range(max(LENGTHS))])
        x, B = make(int(batch_sizes.sum()), I), len(LENGTHS)
    else:
        batch_sizes, x = None, make(T, B, I)
    return (x, make(B, Ph), make(B, H), make(4 * H, I), make(4 * H, Ph),
            make(4 * H) if bias else None, make(Ph, H) if P else None, batch_sizes)


VARIANTS = list(itertools.product([False, True], [False, True], [0, 3], [False, True]))


@pytest.mark.parametrize("reverse,bias,P,packed", VARIANTS)
def test_forward_matches_reference(reverse, bias, P, packed):
    args = layer_args(bias=bias, P=P, packed=packed)
    output, h_n, c_n, gates, cell = torch.ops.fused_lstm.lstm_layer(*args, reverse, True)
    ref = reference_lstm_layer(*args, reverse=reverse)
    for got, want in zip((output, h_n, c_n), ref):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    assert gates.shape == output.shape[:-1] + (16,) and cell.shape == output.shape[:-1] + (4,)


@pytest.mark.parametrize("reverse,bias,P,packed", VARIANTS)
def test_gradcheck_op(reverse, bias, P, packed):
    args = layer_args(T=4, B=2, I=3, H=3, P=P and 2, bias=bias, packed=packed, requires_grad=True)
    batch_sizes = args[-1]
    fn = lambda *a: torch.ops.fused_lstm.lstm_layer(*a, batch_sizes, reverse, True)[:3]
    assert torch.autograd.gradcheck(fn, [a for a in args[:-1]])


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("packed", [False, True])
def test_inference_mode_keeps_nothing(reverse, packed):
    args = layer_args(T=40, P=2, packed=packed)
    train = torch.ops.fused_lstm.lstm_layer(*args, reverse, True)
    infer = torch.ops.fused_lstm.lstm_layer(*args, reverse, False)
    for a, b in zip(train[:3], infer[:3]):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert infer[3].numel() == 0 and infer[4].numel() == 0


@pytest.mark.parametrize("reverse", [False, True])
def test_inference_mode_chunks_long_sequences(reverse):
    """Without train, the input projection is computed in chunks of bounded size; the
    result must not depend on where the chunks fall."""
    args = layer_args(T=3000, B=2, I=3, H=64, dtype=torch.float32)
    train = torch.ops.fused_lstm.lstm_layer(*args, reverse, True)
    infer = torch.ops.fused_lstm.lstm_layer(*args, reverse, False)
    for a, b in zip(train[:3], infer[:3]):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_backward_needs_saved_state():
    args = layer_args(requires_grad=True)
    output, *_ = torch.ops.fused_lstm.lstm_layer(*args, False, False)
    with pytest.raises(RuntimeError, match="train=True"):
        output.sum().backward()


@pytest.mark.parametrize("reverse,bias,P,packed", VARIANTS[::3])
def test_opcheck_forward(reverse, bias, P, packed):
    for train in (False, True):
        args = layer_args(dtype=torch.float32, requires_grad=train, bias=bias, P=P, packed=packed)
        torch.library.opcheck(torch.ops.fused_lstm.lstm_layer.default, args + (reverse, train))


@pytest.mark.parametrize("input_grad", [True, False])
@pytest.mark.parametrize("P,packed", [(0, False), (3, True)])
def test_opcheck_backward(P, packed, input_grad):
    args = layer_args(dtype=torch.float32, P=P, packed=packed)
    output, h_n, c_n, gates, cell = torch.ops.fused_lstm.lstm_layer(*args, True, True)
    x, h0, c0, w_ih, w_hh, _, w_hr, batch_sizes = args
    grads = (torch.randn_like(output), torch.randn_like(h_n), None)
    torch.library.opcheck(torch.ops.fused_lstm.lstm_layer_backward.default,
                          grads + (x, h0, c0, w_ih, w_hh, w_hr, batch_sizes, output, gates, cell,
                                   True, input_grad))


@pytest.mark.parametrize("which,bad,match", [
    (0, torch.randn(6, 4), "input must be 3-D"),
    (1, torch.randn(3, 4), r"h0 must have shape|input must have batch size 3"),
    (2, torch.randn(4, 5), r"c0 must have shape"),
    (3, torch.randn(15, 5), r"w_ih must be 2-D \(4H, I\)"),
    (4, torch.randn(16, 5), r"w_hh must have shape"),
    (5, torch.randn(15), r"bias must have shape"),
    (6, torch.randn(3, 4), r"w_hr must have shape"),
    (7, torch.tensor([4, 4, 4, 4, 4, 4]), r"input must be 2-D \(N, I\) with batch_sizes"),
    (3, torch.randn(16, 5, dtype=torch.float64), r"w_ih must have dtype Float"),
    (0, torch.randint(0, 3, (6, 4, 5)), "input must be float32 or float64"),
])
def test_op_boundary_checks(which, bad, match):
    args = list(layer_args(dtype=torch.float32))
    args[which] = bad
    with pytest.raises(RuntimeError, match=match):
        torch.ops.fused_lstm.lstm_layer(*args, False, True)


@pytest.mark.parametrize("batch_sizes,match", [
    ([4, 3, 3, 2, 2], "sum\\(batch_sizes\\)"),
    ([4, 5, 3, 2, 1, 1], "non-increasing"),
    ([3, 3, 3, 3, 2, 2], r"batch_sizes\[0\] must equal the batch size of h0 \(4\), got 3"),
    ([4, 3, 3, 2, 0, 4], "positive"),
])
def test_op_rejects_bad_batch_sizes(batch_sizes, match):
    args = list(layer_args(dtype=torch.float32, packed=True))
    args[7] = torch.tensor(batch_sizes)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.fused_lstm.lstm_layer(*args, False, True)
