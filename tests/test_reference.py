"""The pure-PyTorch reference: correct against nn.LSTM, and used when the extension is off."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from fused_lstm import reference_lstm_layer


@pytest.mark.parametrize("reverse", [False, True])
def test_reference_matches_nn_lstm(reverse):
    lstm = nn.LSTM(5, 4, bidirectional=True, dtype=torch.float64)
    x, h0, c0 = torch.randn(7, 3, 5, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64)
    out, (h_n, c_n) = lstm(x, (h0, c0))
    d = int(reverse)
    sfx = "_reverse" if reverse else ""
    p = dict(lstm.named_parameters())
    got = reference_lstm_layer(x, h0[d], c0[d], p["weight_ih_l0" + sfx], p["weight_hh_l0" + sfx],
                               p["bias_ih_l0" + sfx] + p["bias_hh_l0" + sfx], reverse=reverse)
    for a, b in zip(got, (out[..., d * 4:(d + 1) * 4], h_n[d], c_n[d])):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_fallback_backend_runs_reference():
    script = textwrap.dedent("""
        import torch, fused_lstm
        from torch import nn
        assert fused_lstm.backend() == "reference", fused_lstm.backend()
        torch.manual_seed(0)
        ref = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
        fused = fused_lstm.FusedLSTM(3, 4, num_layers=2, bidirectional=True)
        fused.load_state_dict(ref.state_dict())
        x = torch.randn(6, 2, 3)
        torch.testing.assert_close(fused(x)[0], ref(x)[0], atol=1e-5, rtol=0)
        print("ok")
    """)
    env = dict(os.environ, FUSED_LSTM_BACKEND="reference")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_missing_extension_warns_once_and_falls_back():
    """If fused_lstm._C cannot be imported (not built, or built against another torch),
    `import fused_lstm` still works, warns once with the reason and the fix, and FusedLSTM
    runs the reference."""
    script = textwrap.dedent("""
        import sys, warnings
        class Block:  # make the compiled extension fail to import, as a broken build would
            def find_spec(self, name, path=None, target=None):
                if name == "fused_lstm._C":
                    raise ImportError("undefined symbol: _ZN3c10 (simulated)")
        sys.meta_path.insert(0, Block())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import fused_lstm
            import fused_lstm.module, fused_lstm._ops  # a second import must not warn again
        messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(messages) == 1, messages
        assert "undefined symbol" in messages[0] and "pip install --no-build-isolation" in messages[0]
        assert fused_lstm.backend() == "reference"
        import torch
        torch.manual_seed(0)
        ref = torch.nn.LSTM(3, 4, num_layers=2)
        fused = fused_lstm.FusedLSTM(3, 4, num_layers=2)
        fused.load_state_dict(ref.state_dict())
        x = torch.randn(5, 2, 3)
        torch.testing.assert_close(fused(x)[0], ref(x)[0], atol=1e-5, rtol=0)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
