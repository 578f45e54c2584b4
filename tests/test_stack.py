"""torch.ops.fused_lstm.lstm_stack, the inference op that runs every layer in one call (on
the CPU, unidirectional float32 layers without projections as one wavefront)."""
import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

import fused_lstm
from conftest import assert_within_2x, make_pair

pytestmark = pytest.mark.skipif(fused_lstm.backend() != "cpp", reason="compiled extension not loaded")


def stack_args(T, B, I, H, layers, bias=True, bidirectional=False, P=0, lengths=None,
               dtype=torch.float32):
    """lstm_stack's arguments: nn.LSTM-shaped weights in its order, random states."""
    _, fused = make_pair(dtype, input_size=I, hidden_size=H, num_layers=layers, bias=bias,
                         bidirectional=bidirectional, proj_size=P)
    LD, Ph = layers * (2 if bidirectional else 1), P or H
    if lengths is None:
        x, batch_sizes = torch.randn(T, B, I, dtype=dtype), None
    else:
        packed = pack_sequence([torch.randn(n, I, dtype=dtype) for n in lengths])
        x, batch_sizes, B = packed.data, packed.batch_sizes, len(lengths)
    weights = [w.detach() for w in fused.parameters()]
    return (x, torch.randn(LD, B, Ph, dtype=dtype), torch.randn(LD, B, H, dtype=dtype), weights,
            bias, layers, bidirectional, batch_sizes)


def layer_by_layer(x, h0, c0, weights, bias, layers, bidirectional, batch_sizes):
    """The same stack through one lstm_layer call per layer and direction."""
    D = 2 if bidirectional else 1
    per = len(weights) // (layers * D)
    h_n, c_n = [], []
    for layer in range(layers):
        outputs = []
        for d in range(D):
            k = layer * D + d
            w = weights[k * per:(k + 1) * per]
            b = w[2] + w[3] if bias else None
            w_hr = w[-1] if per in (3, 5) else None
            out, h, c, _, _ = torch.ops.fused_lstm.lstm_layer(x, h0[k], c0[k], w[0], w[1], b,
                                                              w_hr, batch_sizes, d == 1, False)
            outputs.append(out)
            h_n.append(h)
            c_n.append(c)
        x = torch.cat(outputs, -1)
    return x, torch.stack(h_n), torch.stack(c_n)


# Wavefronts: rows split over the threads (no barrier; 2 and 4 layers, I != H), hidden groups
# split (13 groups of 16 units: one barrier per layer and step), packed sequences of unequal
# lengths. Layer by layer: bidirectional, projections, B <= 16 (hoisted projection), few
# steps and rows (the library path), float64.
CASES = [
    dict(T=50, B=32, I=50, H=50, layers=2),
    dict(T=12, B=40, I=7, H=20, layers=4, bias=False),
    dict(T=9, B=20, I=30, H=200, layers=2),
    dict(T=0, B=24, I=6, H=37, layers=3, lengths=sorted([14, 14, 11, 9, 9, 8, 5, 3, 3, 2, 1, 1] * 2, reverse=True)),
    dict(T=10, B=24, I=6, H=10, layers=2, bidirectional=True),
    dict(T=10, B=24, I=6, H=10, layers=2, P=4),
    dict(T=20, B=5, I=6, H=40, layers=3),
    dict(T=2, B=3, I=6, H=10, layers=2),
    dict(T=10, B=24, I=6, H=10, layers=2, dtype=torch.float64),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()
                                                              if k != "lengths"))
def test_same_bits_as_layer_by_layer(case, isa):
    args = stack_args(**case)
    got = torch.ops.fused_lstm.lstm_stack(*args)
    want = layer_by_layer(*args)
    for name, g, w in zip(("output", "h_n", "c_n"), got, want):
        assert torch.equal(g, w), f"{name}: max diff {(g - w).abs().max().item():.3g}"


def test_module_inference_within_2x_of_nn_lstm():
    """FusedLSTM without gradients (lstm_stack's wavefront) against a float64 reference, at
    most twice nn.LSTM's float32 error."""
    ref, fused = make_pair(torch.float32, input_size=50, hidden_size=50, num_layers=3)
    ref64 = make_pair(torch.float64, input_size=50, hidden_size=50, num_layers=3)[0]
    ref64.load_state_dict(ref.state_dict())
    x = torch.randn(60, 32, 50)
    with torch.no_grad():
        want = ref64(x.double())
        base, got = ref(x), fused.eval()(x)
    flat = lambda r: (r[0], r[1][0], r[1][1])
    assert_within_2x(flat(want), flat(base), flat(got), torch.float32, ["output", "h_n", "c_n"])


def test_module_uses_stack_only_without_gradients(monkeypatch):
    calls = []
    monkeypatch.setattr(fused_lstm._ops, "lstm_stack",
                        lambda *a: calls.append(1) or torch.ops.fused_lstm.lstm_stack(*a))
    lstm = fused_lstm.FusedLSTM(4, 8, num_layers=2, dropout=0.5)
    x = torch.randn(10, 3, 4)
    lstm(x)[0].sum().backward()  # training: lstm_layer with autograd
    with torch.no_grad():
        lstm.train()(x)  # dropout between layers still applies: layer by layer
        assert not calls
        lstm.eval()(x)
    assert calls == [1]


@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[4], CASES[5]])
def test_opcheck(case):
    torch.library.opcheck(torch.ops.fused_lstm.lstm_stack.default, stack_args(**case))


@pytest.mark.parametrize("change,match", [
    (lambda a: a.__setitem__(5, 0), "num_layers must be at least 1, got 0"),
    (lambda a: a.__setitem__(1, a[1][:1]), r"h0 must be 3-D \(2 = layers \* directions"),
    (lambda a: a.__setitem__(2, a[2][0]), r"c0 must be 3-D \(2 = layers \* directions"),
    (lambda a: a.__setitem__(3, a[3][:-1]), "weights must hold 4 .* 8 or 10 in all, got 7"),
    (lambda a: a[3].__setitem__(4, a[3][4][:, :7]), r"w_ih must have shape \(4 \* n.H, n.I\)"),
])
def test_bad_arguments(change, match):
    args = list(stack_args(T=10, B=24, I=6, H=10, layers=2))
    change(args)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.fused_lstm.lstm_stack(*args)
