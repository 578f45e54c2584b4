"""FusedLSTM on CUDA against nn.LSTM (cuDNN) with the same weights. Skipped without a GPU.

Tolerances are stated as flash-attention does: for each output and gradient, FusedLSTM's
error against a float64 CPU reference is at most 2x the error of nn.LSTM (cuDNN) in the same
dtype, plus one rounding of the result to the dtype. TF32 is off for both (cuDNN's RNNs use
it by default on Ampere and newer, which would make the float32 comparison a TF32 one)."""
import copy

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import conftest
from conftest import make_pair, run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@pytest.fixture(autouse=True)
def _no_tf32():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def assert_within_2x(want, base, got, dtype):
    """conftest's bound against cuDNN. In float64 both are within a few ulps of the
    reference, where such ratios are noise: there `got` must match `want` to 1e-10."""
    if dtype != torch.float64:
        return conftest.assert_within_2x(want, base, got, dtype, what="nn.LSTM (cuDNN)")
    for k, (w, g) in enumerate(zip(want, got)):
        torch.testing.assert_close(g.cpu(), w.double().cpu(), rtol=1e-10, atol=1e-10,
                                   msg=f"tensor {k}")


def three_ways(dtype, x, hx, weights, **kwargs):
    """(float64 CPU nn.LSTM, cuDNN nn.LSTM in dtype, FusedLSTM on CUDA in dtype): each run's
    outputs then gradients, flattened; the same weights in all three."""
    exact, fused = make_pair(torch.float64, **kwargs)
    ref = copy.deepcopy(exact)
    ref, fused = ref.to("cuda", dtype), fused.to("cuda", dtype)
    to = lambda ts, **kw: None if ts is None else type(ts)(t.to(**kw) for t in ts)
    cuda = dict(device="cuda", dtype=dtype)
    flat = lambda r: list(r[0]) + list(r[1])
    x_cuda = x.to(**cuda)  # a PackedSequence moves its indices too
    return (flat(run(exact, x, hx, weights)),
            flat(run(ref, x_cuda, to(hx, **cuda), to(weights, **cuda))),
            flat(run(fused, x_cuda, to(hx, **cuda), to(weights, **cuda))))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bidirectional,proj_size,layers", [(False, 0, 1), (True, 0, 2), (True, 8, 2)])
def test_outputs_and_gradients_within_2x_of_cudnn(dtype, bidirectional, proj_size, layers):
    D, P = 2 if bidirectional else 1, proj_size or 32
    x = torch.randn(30, 8, 24, dtype=torch.float64)
    hx = (torch.randn(layers * D, 8, P, dtype=torch.float64),
          torch.randn(layers * D, 8, 32, dtype=torch.float64))
    weights = [torch.randn(30, 8, D * P, dtype=torch.float64),
               torch.randn(layers * D, 8, P, dtype=torch.float64),
               torch.randn(layers * D, 8, 32, dtype=torch.float64)]
    want, base, got = three_ways(dtype, x, hx, weights, input_size=24, hidden_size=32,
                                 num_layers=layers, bidirectional=bidirectional,
                                 proj_size=proj_size)
    assert_within_2x(want, base, got, dtype)


@pytest.mark.parametrize("proj_size", [0, 5])
def test_packed_sequence_within_2x_of_cudnn(proj_size):
    lengths = torch.tensor([5, 9, 2, 7, 9, 1])
    x = pack_padded_sequence(torch.randn(9, 6, 6, dtype=torch.float64), lengths,
                             enforce_sorted=False)
    P = proj_size or 16
    weights = [torch.randn(x.data.shape[0], 2 * P, dtype=torch.float64),
               torch.randn(4, 6, P, dtype=torch.float64), torch.randn(4, 6, 16, dtype=torch.float64)]
    want, base, got = three_ways(torch.float32, x, None, weights, input_size=6, hidden_size=16,
                                 num_layers=2, bidirectional=True, proj_size=proj_size)
    assert_within_2x(want, base, got, torch.float32)


def test_gradcheck_on_cuda():
    fused = make_pair(torch.float64, input_size=3, hidden_size=4, num_layers=2,
                      bidirectional=True, proj_size=2)[1].cuda()
    lengths = torch.tensor([4, 2, 3])
    template = pack_padded_sequence(torch.zeros(4, 3, 3), lengths, enforce_sorted=False)
    template = template._replace(sorted_indices=template.sorted_indices.cuda(),
                                 unsorted_indices=template.unsorted_indices.cuda())
    x = torch.randn(template.data.shape[0], 3, dtype=torch.float64, device="cuda",
                    requires_grad=True)
    h0 = torch.randn(4, 3, 2, dtype=torch.float64, device="cuda", requires_grad=True)
    c0 = torch.randn(4, 3, 4, dtype=torch.float64, device="cuda", requires_grad=True)
    names = [n for n, _ in fused.named_parameters()]

    def fn(x, h0, c0, *weights):
        out, (h_n, c_n) = torch.func.functional_call(
            fused, dict(zip(names, weights)), (template._replace(data=x), (h0, c0)))
        return out.data, h_n, c_n

    weights = [p.detach().requires_grad_() for p in fused.parameters()]
    assert torch.autograd.gradcheck(fn, (x, h0, c0, *weights))


def test_autocast_computes_in_float32():
    """Under autocast the ops run their float32 kernels (the half-precision path accumulates
    in float32 anyway): the same outputs and gradients as without autocast."""
    _, fused = make_pair(input_size=8, hidden_size=16, proj_size=4)
    fused = fused.cuda()
    x = torch.randn(10, 4, 8, device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        out, (h, c) = fused(x)
        (grad,) = torch.autograd.grad(out.sum() + h.sum() + c.sum(), fused.weight_hh_l0)
    want, (h_want, c_want) = fused(x)
    (grad_want,) = torch.autograd.grad(want.sum() + h_want.sum() + c_want.sum(),
                                       fused.weight_hh_l0)
    assert out.dtype == torch.float32
    for a, b in [(out, want), (h, h_want), (c, c_want), (grad, grad_want)]:
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("P,packed", [(0, False), (3, True)])
def test_opcheck_cuda(P, packed):
    from test_ops import layer_args
    args = tuple(a.cuda() if isinstance(a, torch.Tensor) and a.dtype != torch.int64 else a
                 for a in layer_args(dtype=torch.float32, P=P, packed=packed))
    torch.library.opcheck(torch.ops.fused_lstm.lstm_layer.default, args + (True, True))
    output, h_n, c_n, gates, cell = torch.ops.fused_lstm.lstm_layer(*args, True, True)
    x, h0, c0, w_ih, w_hh, _, w_hr, batch_sizes = args
    grads = (torch.randn_like(output), torch.randn_like(h_n), torch.randn_like(c_n))
    torch.library.opcheck(torch.ops.fused_lstm.lstm_layer_backward.default,
                          grads + (x, h0, c0, w_ih, w_hh, w_hr, batch_sizes, output, gates, cell,
                                   True, True))
