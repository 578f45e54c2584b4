"""FusedLSTM on CUDA against nn.LSTM (cuDNN) with the same weights. Skipped without a GPU;
written to run unmodified where there is one.

Tolerances are stated as flash-attention does: for each output and gradient, FusedLSTM's
error against a float64 reference is at most 2x the error of nn.LSTM (cuDNN) in the same
dtype, plus one rounding of the result to the dtype."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from conftest import make_pair, run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def to_cuda(model, dtype):
    return model.to(device="cuda", dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bidirectional,proj_size,layers", [(False, 0, 1), (True, 0, 2), (True, 8, 2)])
def test_outputs_and_gradients_within_2x_of_cudnn(dtype, bidirectional, proj_size, layers):
    kwargs = dict(input_size=24, hidden_size=32, num_layers=layers, bidirectional=bidirectional,
                  proj_size=proj_size)
    ref, fused = make_pair(torch.float64, **kwargs)
    exact = to_cuda(ref, torch.float64)
    ref_same, _ = make_pair(torch.float64, **kwargs)
    ref_same.load_state_dict(exact.state_dict())
    ref_same, fused = to_cuda(ref_same, dtype), to_cuda(fused, dtype)
    fused.load_state_dict(ref_same.state_dict())
    D, P = 2 if bidirectional else 1, proj_size or 32
    x = torch.randn(30, 8, 24, device="cuda", dtype=torch.float64)
    hx = (torch.randn(layers * D, 8, P, device="cuda", dtype=torch.float64),
          torch.randn(layers * D, 8, 32, device="cuda", dtype=torch.float64))
    weights = [torch.randn(30, 8, D * P, device="cuda", dtype=torch.float64),
               torch.randn(layers * D, 8, P, device="cuda", dtype=torch.float64),
               torch.randn(layers * D, 8, 32, device="cuda", dtype=torch.float64)]
    cast = lambda ts: [t.to(dtype) for t in ts]
    want = run(exact, x, hx, weights)
    base = run(ref_same, x.to(dtype), tuple(cast(hx)), cast(weights))
    got = run(fused, x.to(dtype), tuple(cast(hx)), cast(weights))
    flat = lambda r: r[0] + r[1]
    for k, (w, b, g) in enumerate(zip(flat(want), flat(base), flat(got))):
        ulp = torch.finfo(dtype).eps * w.abs().max().item()
        err, base_err = (g.double() - w).abs().max().item(), (b.double() - w).abs().max().item()
        assert err <= 2 * base_err + ulp, f"tensor {k}: error {err:.3g}, cuDNN's {base_err:.3g}"


def test_packed_sequence_on_cuda():
    ref, fused = make_pair(input_size=6, hidden_size=16, num_layers=2, bidirectional=True)
    ref, fused = ref.cuda(), fused.cuda()
    lengths = torch.tensor([5, 9, 2, 7])
    packed = pack_padded_sequence(torch.randn(9, 4, 6, device="cuda"), lengths, enforce_sorted=False)
    out_ref, (h_ref, c_ref) = ref(packed)
    out, (h, c) = fused(packed)
    torch.testing.assert_close(out.data, out_ref.data, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c, c_ref, atol=1e-5, rtol=1e-5)


def test_autocast():
    _, fused = make_pair(input_size=8, hidden_size=16)
    fused = fused.cuda()
    x = torch.randn(10, 4, 8, device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        out, _ = fused(x)
    torch.testing.assert_close(out.float(), fused(x)[0], atol=1e-5, rtol=0)


def test_opcheck_cuda():
    args = [torch.randn(*s, device="cuda") for s in [(6, 3, 5), (3, 4), (3, 4), (16, 5), (16, 4), (16,)]]
    torch.library.opcheck(torch.ops.fused_lstm.lstm_layer.default, (*args, None, None, False, True))
