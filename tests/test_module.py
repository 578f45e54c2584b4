"""FusedLSTM as an nn.LSTM drop-in: construction, state_dict, dropout, errors, gradcheck."""
import pytest
import torch
from torch import nn

import fused_lstm
from fused_lstm import FusedLSTM
from conftest import make_pair


def test_backend_is_compiled():
    # The test suite runs against the built extension; the fallback has its own tests.
    assert fused_lstm.backend() == "cpp"


def test_same_seed_same_initial_weights_as_nn_lstm():
    kwargs = dict(input_size=6, hidden_size=5, num_layers=2, bidirectional=True)
    torch.manual_seed(3)
    ref = nn.LSTM(**kwargs)
    torch.manual_seed(3)
    fused = FusedLSTM(**kwargs)
    assert list(ref.state_dict()) == list(fused.state_dict())
    for (name, a), b in zip(ref.named_parameters(), fused.parameters()):
        assert a.shape == b.shape and torch.equal(a, b), name


@pytest.mark.parametrize("bias", [False, True])
def test_state_dict_round_trip_both_ways(bias):
    kwargs = dict(input_size=4, hidden_size=6, num_layers=2, bias=bias, bidirectional=True)
    ref = nn.LSTM(**kwargs)
    fused = FusedLSTM(**kwargs)
    fused.load_state_dict(ref.state_dict())
    back = nn.LSTM(**kwargs)
    back.load_state_dict(fused.state_dict())
    x = torch.randn(5, 2, 4)
    out_ref, (h_ref, c_ref) = ref(x)
    out_back, (h_back, c_back) = back(x)
    assert torch.equal(out_ref, out_back) and torch.equal(h_ref, h_back) and torch.equal(c_ref, c_back)
    torch.testing.assert_close(fused(x)[0], out_ref, atol=1e-5, rtol=0)


def test_all_weights_and_repr_match_nn_lstm():
    kwargs = dict(input_size=3, hidden_size=4, num_layers=2, bias=False, batch_first=True,
                  dropout=0.5, bidirectional=True)
    ref, fused = nn.LSTM(**kwargs), FusedLSTM(**kwargs)
    assert fused.extra_repr() == ref.extra_repr()
    assert [[w.shape for w in ws] for ws in fused.all_weights] == [[w.shape for w in ws] for ws in ref.all_weights]


def test_unbatched_input_matches_nn_lstm():
    ref, fused = make_pair(input_size=3, hidden_size=5, num_layers=2, bidirectional=True)
    x, h0, c0 = torch.randn(7, 3), torch.randn(4, 5), torch.randn(4, 5)
    out_ref, (h_ref, c_ref) = ref(x, (h0, c0))
    out, (h, c) = fused(x, (h0, c0))
    assert out.shape == out_ref.shape and h.shape == h_ref.shape
    for a, b in ((out, out_ref), (h, h_ref), (c, c_ref)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_no_grad_matches_grad_mode():
    fused = FusedLSTM(4, 6, num_layers=2, bidirectional=True)
    x = torch.randn(9, 3, 4)
    with torch.no_grad():
        out_infer, (h_infer, c_infer) = fused(x)
    out, (h, c) = fused(x)
    assert torch.equal(out_infer, out) and torch.equal(h_infer, h) and torch.equal(c_infer, c)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_gradcheck_module(bidirectional):
    fused = FusedLSTM(3, 4, num_layers=2, bidirectional=bidirectional, dtype=torch.float64)
    D = 2 if bidirectional else 1
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2 * D, 2, 4, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2 * D, 2, 4, dtype=torch.float64, requires_grad=True)
    params = list(fused.parameters())

    def fn(x, h0, c0, *weights):
        state = dict(zip([n for n, _ in fused.named_parameters()], weights))
        out, (h_n, c_n) = torch.func.functional_call(fused, state, (x, (h0, c0)))
        return out, h_n, c_n

    assert torch.autograd.gradcheck(fn, (x, h0, c0, *[p.detach().requires_grad_() for p in params]))


@pytest.mark.parametrize("batch", [1, 3])
def test_streaming_one_step_per_call_matches_whole_sequence(batch):
    """One step per call with the state carried over (the per-step library path: fewer than
    8 steps) gives the whole sequence's outputs (the fused kernels at T = 12) and nn.LSTM's."""
    ref, fused = make_pair(input_size=16, hidden_size=64, num_layers=2)
    x = torch.randn(12, batch, 16)
    with torch.no_grad():
        whole, (h_whole, c_whole) = fused(x)
        want, _ = ref(x)
        state, steps = None, []
        for t in range(12):
            y, state = fused(x[t:t + 1], state)
            steps.append(y)
    torch.testing.assert_close(torch.cat(steps), whole, atol=1e-6, rtol=0)
    torch.testing.assert_close(whole, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(state[0], h_whole, atol=1e-6, rtol=0)
    torch.testing.assert_close(state[1], c_whole, atol=1e-6, rtol=0)


def test_dropout_eval_matches_and_training_is_random():
    ref, fused = make_pair(input_size=4, hidden_size=8, num_layers=3, dropout=0.5)
    x = torch.randn(6, 5, 4)
    ref.eval(), fused.eval()
    torch.testing.assert_close(fused(x)[0], ref(x)[0], atol=1e-5, rtol=0)

    fused.train()
    out1, out2 = fused(x)[0], fused(x)[0]
    assert not torch.allclose(out1, out2)
    out1.sum().backward()
    for name, p in fused.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_dropout_training_matches_nn_lstm_under_same_rng():
    """Dropout sits between layers exactly where nn.LSTM puts it: same RNG, same masks."""
    ref, fused = make_pair(input_size=4, hidden_size=8, num_layers=3, dropout=0.3)
    x = torch.randn(6, 5, 4)
    torch.manual_seed(11)
    out_ref = ref(x)[0]
    torch.manual_seed(11)
    out = fused(x)[0]
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=0)


def call_with(fused, x=None, hx=None):
    return fused(torch.randn(5, 2, 3) if x is None else x, hx)


@pytest.mark.parametrize("make_args,error,match", [
    (lambda: dict(x=torch.randn(5, 2, 3, 1)), ValueError, r"input must be 3-D \(batched\) or 2-D \(unbatched\), got 4-D"),
    (lambda: dict(x=torch.randn(5, 2, 7)), ValueError, r"input.size\(-1\) must be equal to input_size: expected 3, got 7"),
    (lambda: dict(x=torch.randint(0, 5, (5, 2, 3))), TypeError, r"input must have dtype float32, float64, bfloat16, float16, got torch.int64"),
    (lambda: dict(x=torch.ones(5, 2, 3, dtype=torch.bool)), TypeError, r"got torch.bool"),
    (lambda: dict(x=[[1.0, 2.0, 3.0]]), TypeError, r"input must be a Tensor or PackedSequence, got list"),
    (lambda: dict(x=torch.randn(0, 2, 3)), ValueError, r"at least one time step"),
    (lambda: dict(hx=(torch.randn(3, 2, 4), torch.randn(2, 2, 4))), ValueError, r"h0 must have shape \(2, 2, 4\), got \(3, 2, 4\)"),
    (lambda: dict(hx=(torch.randn(2, 2, 4), torch.randn(2, 3, 4))), ValueError, r"c0 must have shape \(2, 2, 4\), got \(2, 3, 4\)"),
    (lambda: dict(hx=(torch.randn(2, 2, 5), torch.randn(2, 2, 4))), ValueError, r"h0 must have shape \(2, 2, 4\), got \(2, 2, 5\)"),
    (lambda: dict(hx=(torch.randn(2, 4), torch.randn(2, 2, 4))), ValueError, r"h0 must be 3-D for batched input, got 2-D"),
    (lambda: dict(hx=(torch.randn(2, 2, 4, dtype=torch.float64), torch.randn(2, 2, 4))), TypeError, r"h0 must have the input's dtype torch.float32, got torch.float64"),
    (lambda: dict(hx=(torch.randn(2, 2, 4), torch.empty(2, 2, 4, device="meta"))), ValueError, r"c0 must be on the input's device cpu, got meta"),
    (lambda: dict(hx=torch.randn(2, 2, 4)), TypeError, r"hx must be a tuple \(h0, c0\)"),
    (lambda: dict(x=torch.randn(5, 3), hx=(torch.randn(2, 2, 4), torch.randn(2, 2, 4))), ValueError, r"h0 must be 2-D for unbatched input, got 3-D"),
    (lambda: dict(x=torch.randn(5, 2, 3, dtype=torch.float64)), TypeError, r"weight_ih_l0 has dtype torch.float32 but input has dtype torch.float64"),
])
def test_bad_inputs_raise_named_errors(make_args, error, match):
    fused = FusedLSTM(3, 4, num_layers=2)
    with pytest.raises(error, match=match):
        call_with(fused, **make_args())


def test_replaced_weight_of_wrong_shape_raises():
    fused = FusedLSTM(3, 4)
    fused.weight_hh_l0 = nn.Parameter(torch.randn(16, 5))
    with pytest.raises(ValueError, match=r"weight_hh_l0 must have shape \(16, 4\), got \(16, 5\)"):
        fused(torch.randn(5, 2, 3))


def test_parametrized_weight_is_read_through_its_parametrization():
    """A weight under torch.nn.utils.parametrize leaves _parameters: FusedLSTM must read the
    computed weight and pass the gradient on to the original."""
    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    fused = FusedLSTM(3, 4, num_layers=2)
    ref = nn.LSTM(3, 4, num_layers=2)
    ref.load_state_dict(fused.state_dict())
    with torch.no_grad():
        ref.weight_hh_l1.mul_(2)
    nn.utils.parametrize.register_parametrization(fused, "weight_hh_l1", Double())
    x = torch.randn(10, 20, 3)  # B = 20, T = 10: the fused kernels' stacked path
    out, (h, c) = fused(x)
    out_ref, (h_ref, c_ref) = ref(x)
    for a, b in ((out, out_ref), (h, h_ref), (c, c_ref)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    out.sum().backward()
    out_ref.sum().backward()
    original = fused.parametrizations.weight_hh_l1.original
    torch.testing.assert_close(original.grad, 2 * ref.weight_hh_l1.grad, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(input_size=0, hidden_size=4), "input_size must be a positive int, got 0"),
    (dict(input_size=3, hidden_size=-1), "hidden_size must be a positive int, got -1"),
    (dict(input_size=3, hidden_size=4, num_layers=0), "num_layers must be a positive int, got 0"),
    (dict(input_size=3, hidden_size=4, dropout=1.5), r"dropout must be a number in \[0, 1\], got 1.5"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FusedLSTM(**kwargs)
