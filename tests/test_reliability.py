"""Hostile and unusual inputs, long sequences, memory, determinism, threads, persistence."""
import io
import pickle
import threading

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

import fused_lstm
from conftest import make_pair, run
from fused_lstm import FusedLSTM


def test_strided_and_expanded_inputs_work_and_match():
    ref, fused = make_pair(input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    x = torch.randn(3, 7, 5).transpose(0, 1)[:, :, 1:4]       # (7, 3, 3), strided
    h0 = torch.randn(4, 4, 3).transpose(1, 2)                   # (4, 3, 4), transposed
    c0 = torch.randn(1, 1, 4).expand(4, 3, 4)                   # expanded, stride 0
    assert not x.is_contiguous() and not h0.is_contiguous() and c0.stride(0) == 0
    weights = [torch.randn(7, 3, 8), torch.randn(4, 3, 4), torch.randn(4, 3, 4)]
    for a, b in zip(sum(run(fused, x, (h0, c0), weights), ()), sum(run(ref, x, (h0, c0), weights), ())):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_non_contiguous_weights_match():
    ref, fused = make_pair(input_size=5, hidden_size=6)
    with torch.no_grad():
        fused.weight_ih_l0 = nn.Parameter(ref.weight_ih_l0.detach().t().contiguous().t())
    assert not fused.weight_ih_l0.is_contiguous()
    x = torch.randn(4, 2, 5)
    torch.testing.assert_close(fused(x)[0], ref(x)[0], atol=1e-5, rtol=0)


def test_empty_batch_matches_nn_lstm():
    ref, fused = make_pair(input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 0, 3, requires_grad=True)
    out_ref, (h_ref, c_ref) = ref(x)
    out, (h, c) = fused(x)
    assert out.shape == out_ref.shape and h.shape == h_ref.shape and c.shape == c_ref.shape
    (out.sum() + h.sum() + c.sum()).backward()
    (out_ref.sum() + h_ref.sum() + c_ref.sum()).backward()
    assert x.grad.shape == x.shape
    # No rows: every weight gradient is exactly zero (the GEMMs over them have k = 0).
    for (name, p_ref), p in zip(ref.named_parameters(), fused.parameters()):
        assert torch.equal(p.grad, torch.zeros_like(p)), name
        assert torch.equal(p.grad, p_ref.grad), name


def test_zero_length_sequence_raises_like_nn_lstm():
    ref, fused = make_pair(input_size=3, hidden_size=4)
    with pytest.raises(RuntimeError, match="sequence length to be larger than 0"):
        ref(torch.randn(0, 2, 3))
    with pytest.raises(RuntimeError, match="sequence length to be larger than 0"):
        fused(torch.randn(0, 2, 3))
    with pytest.raises(ValueError):  # also a ValueError, as the other input errors
        fused(torch.randn(0, 2, 3))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    T=st.integers(1, 9), B=st.integers(0, 5), I=st.integers(1, 9), H=st.integers(1, 12),
    layers=st.integers(1, 3), bidirectional=st.booleans(), batch_first=st.booleans(),
    bias=st.booleans(), proj=st.booleans(), with_state=st.booleans(), strided=st.booleans(),
    double=st.booleans(),
)
def test_property_random_configurations_match_nn_lstm(T, B, I, H, layers, bidirectional,
                                                      batch_first, bias, proj, with_state,
                                                      strided, double):
    dtype = torch.float64 if double else torch.float32
    proj_size = H - 1 if proj and H > 1 else 0
    ref, fused = make_pair(dtype, input_size=I, hidden_size=H, num_layers=layers, bias=bias,
                           batch_first=batch_first, bidirectional=bidirectional,
                           proj_size=proj_size)
    shape = (B, T) if batch_first else (T, B)
    # A strided input: every other element of a wider tensor.
    x = torch.randn(*shape, 2 * I, dtype=dtype)[..., ::2] if strided else torch.randn(*shape, I, dtype=dtype)
    D, P = 2 if bidirectional else 1, proj_size or H
    hx = (torch.randn(layers * D, B, P, dtype=dtype), torch.randn(layers * D, B, H, dtype=dtype)) if with_state else None
    weights = [torch.randn(*shape, D * P, dtype=dtype), torch.randn(layers * D, B, P, dtype=dtype),
               torch.randn(layers * D, B, H, dtype=dtype)]
    tol = 1e-10 if double else 2e-5
    for a, b in zip(sum(run(fused, x, hx, weights), ()), sum(run(ref, x, hx, weights), ())):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)


def saved_bytes(fn):
    """Bytes of all tensors autograd saves for backward while running fn()."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return total[0], out


def test_long_sequence_memory_is_linear_in_time():
    """T = 10,000 runs forward and backward (the time loop is C++: no recursion, no stack
    growth), and what autograd keeps grows linearly: 10x the steps, 10x the bytes (within
    a constant for the weights)."""
    fused = FusedLSTM(4, 8, num_layers=2)
    per_T = {}
    for T in (1_000, 10_000):
        x = torch.randn(T, 2, 4, requires_grad=True)
        per_T[T], (out, _) = saved_bytes(lambda: fused(x))
        out.sum().backward()
        assert torch.isfinite(x.grad).all()
    weights = sum(p.numel() * 4 for p in fused.parameters())
    assert per_T[10_000] - weights <= 10 * (per_T[1_000] - weights) * 1.01


def peak_rss_growth(fn):
    """Peak resident memory (VmHWM) reached while running fn(), above the memory before."""
    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident size
    except OSError as exc:
        pytest.skip(f"cannot reset the peak resident size on this system: {exc}")
    base = status("VmRSS:")
    fn()
    return status("VmHWM:") - base


@pytest.mark.parametrize("batch", [1, 64])  # hoisted projection (chunked) and per-step tiles
def test_inference_keeps_no_per_step_state(batch):
    """T = 100,000 under no_grad: the peak is the output plus a bounded workspace (the
    hoisted projection runs in chunks of 4 MB, or of the layer's weights' size where that is
    larger) and allocator slack, nothing per step: what training keeps (gates and cell
    states) would be 5x the output."""
    T, I, H = 100_000 // batch, 4, 16
    fused = FusedLSTM(I, H)
    x = torch.randn(T, batch, I)
    with torch.no_grad():
        fused(x[:10])
        growth = peak_rss_growth(lambda: fused(x))
    output = T * batch * H * 4
    saved_if_training = T * batch * 6 * H * 4  # gates and cell states: not kept
    assert growth < output + 16 * 2**20, (growth, output)
    assert growth < saved_if_training


def test_no_leak_over_2000_training_steps():
    """RSS after 2,000 forward+backward steps stays within 10 MB of RSS after 200 warm-up
    steps. A leak of any per-call buffer would be far larger: the smallest one (h_n, 4 KB)
    leaked 1,800 times is 7 MB, the gates buffer (200 KB) 360 MB."""
    fused = FusedLSTM(16, 64, num_layers=2)
    x = torch.randn(50, 4, 16)

    def steps(n):
        for _ in range(n):
            out, (h, c) = fused(x)
            (out.sum() + h.sum()).backward()

    def rss():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))

    steps(200)
    before = rss()
    steps(1800)
    assert rss() - before < 10 * 2**20


def grads_and_outputs(model, x):
    x = x.detach().clone().requires_grad_()
    model.zero_grad()
    out, (h, c) = model(x)
    (out.square().sum() + h.sum() + c.sum()).backward()
    return [out.detach(), h.detach(), c.detach(), x.grad] + [p.grad.clone() for p in model.parameters()]


def test_repeated_calls_are_bit_identical():
    fused = FusedLSTM(12, 40, num_layers=2, bidirectional=True)
    x = torch.randn(20, 30, 12)
    first, second = grads_and_outputs(fused, x), grads_and_outputs(fused, x)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("shape", [(20, 30, 12, 40), (15, 64, 64, 128), (30, 1, 8, 100)])
@pytest.mark.parametrize("count", [2, 3])
def test_deterministic_mode_is_identical_for_any_thread_count(shape, count):
    """The fused kernels give the same bits for any thread count. MKL's GEMMs (the weight
    gradients, the hoisted projection) do not; under torch.use_deterministic_algorithms(True)
    they run single-threaded, and everything matches. Three threads split work unevenly and,
    on a 2-core machine, are more threads than cores (the per-step barrier must yield)."""
    T, B, I, H = shape
    fused = FusedLSTM(I, H, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, I)
    threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    try:
        torch.set_num_threads(1)
        one = grads_and_outputs(fused, x)
        torch.set_num_threads(count)
        many = grads_and_outputs(fused, x)
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, many))


def test_outputs_do_not_depend_on_thread_count():
    fused = FusedLSTM(12, 40, num_layers=2, bidirectional=True)
    x = torch.randn(20, 30, 12)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.no_grad():
            one = fused(x)[0]
        torch.set_num_threads(2)
        with torch.no_grad():
            two = fused(x)[0]
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_concurrent_forward_from_python_threads():
    models = [FusedLSTM(6, 20 + 4 * k, num_layers=2) for k in range(4)]
    inputs = [torch.randn(30, 3 + k, 6) for k in range(4)]
    with torch.no_grad():
        expected = [m(x)[0] for m, x in zip(models, inputs)]
    results, errors = [None] * 4, []

    def work(k):
        try:
            with torch.no_grad():
                for _ in range(20):
                    results[k] = models[k](inputs[k])[0]
        except Exception as exc:  # surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got, want in zip(results, expected):
        assert torch.equal(got, want)


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = FusedLSTM(5, 7, num_layers=2, bidirectional=True)
        self.head = nn.Linear(14, 3)

    def forward(self, x):
        return self.head(self.lstm(x)[0])


def test_torch_save_load_and_pickle():
    model = Tagger()
    x = torch.randn(4, 2, 5)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(loaded(x), model(x))
    clone = pickle.loads(pickle.dumps(model))
    assert torch.equal(clone(x), model(x))


def test_nn_lstm_checkpoint_loads_into_fused():
    ref = nn.LSTM(5, 7, num_layers=2, bidirectional=True)
    buffer = io.BytesIO()
    torch.save(ref.state_dict(), buffer)
    buffer.seek(0)
    fused = FusedLSTM(5, 7, num_layers=2, bidirectional=True)
    fused.load_state_dict(torch.load(buffer))
    x = torch.randn(6, 3, 5)
    torch.testing.assert_close(fused(x)[0], ref(x)[0], atol=1e-5, rtol=0)
