"""nn.LSTM call patterns beyond the plain batch: projections, packed sequences, unbatched
input, half precision. Each against nn.LSTM with the same weights, outputs and gradients."""
import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from conftest import assert_within_2x, make_pair, run
from fused_lstm import FusedLSTM

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


def compare(ref, fused, x, hx, dtype):
    """Outputs and every gradient of nn.LSTM and FusedLSTM on the same input agree."""
    out_ref = ref(x, hx)
    data = out_ref[0].data if hasattr(out_ref[0], "batch_sizes") else out_ref[0]
    weights = [torch.randn_like(data), torch.randn_like(out_ref[1][0]), torch.randn_like(out_ref[1][1])]
    outs_ref, grads_ref = run(ref, x, hx, weights)
    outs, grads = run(fused, x, hx, weights)
    tol = TOLERANCE[dtype]
    for name, a, b in zip(("output", "h_n", "c_n"), outs, outs_ref):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b, atol=tol, rtol=0, msg=lambda m: f"{name}: {m}")
    names = ["input"] + (["h0", "c0"] if hx else []) + [n for n, _ in ref.named_parameters()]
    for name, a, b in zip(names, grads, grads_ref):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol, msg=lambda m: f"grad {name}: {m}")


def states(ref, B, dtype):
    LD = ref.num_layers * (2 if ref.bidirectional else 1)
    P = ref.proj_size or ref.hidden_size
    return torch.randn(LD, B, P, dtype=dtype), torch.randn(LD, B, ref.hidden_size, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layers,bidirectional,batch_first,with_state,bias", list(
    itertools.product([1, 2], [False, True], [False, True], [False, True], [False, True])))
def test_projection_matches_nn_lstm(dtype, layers, bidirectional, batch_first, with_state, bias):
    ref, fused = make_pair(dtype, input_size=5, hidden_size=7, proj_size=3, num_layers=layers,
                           bidirectional=bidirectional, batch_first=batch_first, bias=bias)
    assert [n for n, _ in fused.named_parameters()] == [n for n, _ in ref.named_parameters()]
    B, T = 3, 6
    x = torch.randn((B, T, 5) if batch_first else (T, B, 5), dtype=dtype)
    compare(ref, fused, x, states(ref, B, dtype) if with_state else None, dtype)


LENGTHS = [[6, 6, 4, 1], [2, 7, 7, 1, 4], [1], [5, 5, 5]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("layers,bidirectional,proj_size,with_state", list(
    itertools.product([1, 2], [False, True], [0, 3], [False, True])))
def test_packed_sequence_matches_nn_lstm(dtype, lengths, layers, bidirectional, proj_size, with_state):
    ref, fused = make_pair(dtype, input_size=4, hidden_size=5, num_layers=layers,
                           bidirectional=bidirectional, proj_size=proj_size)
    B, T = len(lengths), max(lengths)
    padded = torch.randn(T, B, 4, dtype=dtype)
    sorted_input = lengths == sorted(lengths, reverse=True)
    packed = pack_padded_sequence(padded, torch.tensor(lengths), enforce_sorted=sorted_input)
    out, _ = fused(packed, states(ref, B, dtype) if with_state else None)
    assert torch.equal(out.batch_sizes, packed.batch_sizes)
    if not sorted_input:
        assert torch.equal(out.sorted_indices, packed.sorted_indices)
    compare(ref, fused, packed, states(ref, B, dtype) if with_state else None, dtype)


def test_packed_batch_first_and_padded_round_trip():
    from torch.nn.utils.rnn import pad_packed_sequence

    ref, fused = make_pair(input_size=4, hidden_size=5, batch_first=True, bidirectional=True)
    lengths = torch.tensor([3, 8, 5])
    packed = pack_padded_sequence(torch.randn(3, 8, 4), lengths, batch_first=True, enforce_sorted=False)
    out_ref, _ = pad_packed_sequence(ref(packed)[0], batch_first=True)
    out, lens = pad_packed_sequence(fused(packed)[0], batch_first=True)
    assert torch.equal(lens, lengths)
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("proj_size", [0, 2])
def test_unbatched_with_projection(proj_size):
    ref, fused = make_pair(input_size=3, hidden_size=5, num_layers=2, proj_size=proj_size)
    x = torch.randn(7, 3)
    P = proj_size or 5
    hx = (torch.randn(2, P), torch.randn(2, 5))
    for a, b in zip((fused(x, hx)[0],) + fused(x, hx)[1], (ref(x, hx)[0],) + ref(x, hx)[1]):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_error_bound(dtype):
    """Half precision runs the float32 kernels (float32 accumulation and cell state), so its
    error against a float64 reference is at most 2x that of nn.LSTM in the same dtype
    (plus one rounding of the result to the dtype)."""
    ref, fused = make_pair(dtype, input_size=16, hidden_size=32, num_layers=2, bidirectional=True)
    exact, _ = make_pair(torch.float64, input_size=16, hidden_size=32, num_layers=2, bidirectional=True)
    exact.load_state_dict(ref.state_dict())
    x = torch.randn(20, 4, 16, dtype=dtype)
    weights = [torch.randn(20, 4, 64, dtype=dtype), torch.randn(4, 4, 32, dtype=dtype),
               torch.randn(4, 4, 32, dtype=dtype)]
    want = run(exact, x.double(), None, [w.double() for w in weights])
    base = run(ref, x, None, weights)
    got = run(fused, x, None, weights)
    assert got[0][0].dtype == dtype and all(g.dtype == dtype for g in got[1])
    flat = lambda r: r[0] + r[1]
    assert_within_2x(flat(want), flat(base), flat(got), dtype)


@pytest.mark.parametrize("seed", range(4))
def test_projection_float32_error_bound(seed):
    """With a projection nn.LSTM takes ATen's per-step path, whose weight gradients are sums
    of short per-step GEMMs. FusedLSTM's error is at most 2x nn.LSTM's here too (plus one
    ulp): one GEMM over all 240 rows gave 2-4x on W_hh and W_hr, hence the row blocks of
    ops.h's grad_row_block."""
    torch.manual_seed(seed)
    kwargs = dict(input_size=24, hidden_size=32, num_layers=2, bidirectional=True, proj_size=8)
    ref, fused = make_pair(torch.float32, **kwargs)
    exact, _ = make_pair(torch.float64, **kwargs)
    exact.load_state_dict(ref.state_dict())
    x = torch.randn(30, 8, 24)
    hx = (torch.randn(4, 8, 8), torch.randn(4, 8, 32))
    weights = [torch.randn(30, 8, 16), torch.randn(4, 8, 8), torch.randn(4, 8, 32)]
    want = run(exact, x.double(), tuple(s.double() for s in hx), [w.double() for w in weights])
    base, got = run(ref, x, hx, weights), run(fused, x, hx, weights)
    names = ["output", "h_n", "c_n", "grad input", "grad h0", "grad c0"] + [
        f"grad {n}" for n, _ in ref.named_parameters()]
    flat = lambda r: r[0] + r[1]
    assert_within_2x(flat(want), flat(base), flat(got), torch.float32, names)


@pytest.mark.parametrize("packed", [False, True])
def test_gradcheck_module_projection(packed):
    fused = FusedLSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, dtype=torch.float64)
    lengths = torch.tensor([4, 2, 3])
    x = torch.randn(4, 3, 3, dtype=torch.float64)
    if packed:
        x = pack_padded_sequence(x, lengths, enforce_sorted=False).data
    x.requires_grad_()
    h0 = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, 3, 4, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in fused.named_parameters()]
    template = pack_padded_sequence(torch.zeros(4, 3, 3), lengths, enforce_sorted=False)

    def fn(x, h0, c0, *weights):
        inp = template._replace(data=x) if packed else x
        out, (h_n, c_n) = torch.func.functional_call(fused, dict(zip(names, weights)), (inp, (h0, c0)))
        return (out.data if packed else out), h_n, c_n

    weights = [p.detach().requires_grad_() for p in fused.parameters()]
    assert torch.autograd.gradcheck(fn, (x, h0, c0, *weights))
