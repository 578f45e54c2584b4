"""The CPU buffer cache: large per-call buffers are reused once freed, never while in use,
and stale contents never reach a result."""
import os
import subprocess
import sys

import torch

import fused_lstm
from conftest import make_pair

# Large enough that gates (T * B * 4H floats = 4 MB) and each direction's output (1 MB) go
# through the cache (1 MB and up).
T, B, I, H = 128, 32, 16, 64


def test_live_outputs_are_never_reused():
    """Outputs kept alive over many calls with different inputs all still match nn.LSTM: a
    cached block is handed out again only after its tensor is freed."""
    ref, fused = make_pair(input_size=I, hidden_size=H, num_layers=2, bidirectional=True)
    xs = [torch.randn(T, B, I) for _ in range(6)]
    with torch.no_grad():
        kept = [fused(x)[0] for x in xs]
        for x, out in zip(xs, kept):
            torch.testing.assert_close(out, ref(x)[0], atol=1e-5, rtol=0)


def test_reused_buffers_give_bit_identical_training_steps():
    """The second step runs on recycled (dirty) gates, gradients and panels: same bits."""
    _, fused = make_pair(input_size=I, hidden_size=H, num_layers=2)
    x = torch.randn(T, B, I, requires_grad=True)

    def step():
        fused.zero_grad()
        x.grad = None
        out, (h, c) = fused(x)
        (out.square().sum() + h.sum() + c.sum()).backward()
        return [out.detach(), x.grad] + [p.grad.clone() for p in fused.parameters()]

    first = step()
    assert fused_lstm.cached_bytes() > 0  # the step's freed buffers are held for the next
    for a, b in zip(first, step()):
        assert torch.equal(a, b)


def test_empty_cache_frees_everything_cached():
    _, fused = make_pair(input_size=I, hidden_size=H)
    with torch.no_grad():
        fused(torch.randn(T, B, I))
    held = fused_lstm.cached_bytes()
    assert held >= 1 << 20
    assert fused_lstm.empty_cache() == held
    assert fused_lstm.cached_bytes() == 0


def test_cache_limit_zero_turns_caching_off():
    code = (
        "import torch, fused_lstm\n"
        f"m = fused_lstm.FusedLSTM({I}, {H})\n"
        "with torch.no_grad():\n"
        f"    m(torch.randn({T}, {B}, {I}))\n"
        "print(fused_lstm.cached_bytes())\n"
    )
    env = dict(os.environ, FUSED_LSTM_CPU_CACHE_MB="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "0"


def test_bad_cache_limit_is_an_error_naming_the_variable():
    env = dict(os.environ, FUSED_LSTM_CPU_CACHE_MB="1GB")
    out = subprocess.run([sys.executable, "-c", "import fused_lstm"], env=env,
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "FUSED_LSTM_CPU_CACHE_MB must be a non-negative integer" in out.stderr
    assert "'1GB'" in out.stderr


def test_cached_outputs_are_ordinary_resizable_tensors():
    """As nn.LSTM's: resize_ works (it reallocates through the cache) and the data survives."""
    _, fused = make_pair(input_size=I, hidden_size=H)
    with torch.no_grad():
        out, _ = fused(torch.randn(T, B, I))
    kept = out.clone()
    out.resize_(2 * T, B, H)
    torch.testing.assert_close(out[:T], kept, atol=0, rtol=0)
