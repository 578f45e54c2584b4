"""torch.ops.fused_lstm.lstm_stack, FusedLSTM's one op for all its layers, and
lstm_stack_train, its forward with gradients. On the CPU, unidirectional float32 layers
without projections run as one wavefront (with gradients too, keeping each layer's gates and
cells); the other stacks, with gradients, are a chain of lstm_layer calls."""
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
            bias, layers, 0.0, False, bidirectional, batch_sizes)


def layer_by_layer(x, h0, c0, weights, bias, layers, dropout, train, bidirectional, batch_sizes):
    """The same stack through one lstm_layer call per layer and direction, with F.dropout on
    every layer's output but the last when training, as nn.LSTM."""
    D = 2 if bidirectional else 1
    per = len(weights) // (layers * D)
    keep = torch.is_grad_enabled() and any(t.requires_grad for t in [x, h0, c0, *weights])
    h_n, c_n = [], []
    for layer in range(layers):
        outputs = []
        for d in range(D):
            k = layer * D + d
            w = weights[k * per:(k + 1) * per]
            b = w[2] + w[3] if bias else None
            w_hr = w[-1] if per in (3, 5) else None
            out, h, c, _, _ = torch.ops.fused_lstm.lstm_layer(x, h0[k], c0[k], w[0], w[1], b,
                                                              w_hr, batch_sizes, d == 1, keep)
            outputs.append(out)
            h_n.append(h)
            c_n.append(c)
        x = torch.cat(outputs, -1)
        if layer + 1 < layers:
            x = torch.nn.functional.dropout(x, dropout, train)
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


@pytest.mark.parametrize("grad", [False, True])
def test_dropout_same_as_layer_by_layer(grad):
    """Dropout between layers in training mode draws the same masks as F.dropout would, with
    and without gradients; with them, the gradients match too."""
    args = list(stack_args(T=10, B=24, I=6, H=10, layers=3))
    args[6:8] = [0.4, True]
    leaves = [args[0]] + args[3] if grad else []
    for leaf in leaves:
        leaf.requires_grad_()
    torch.manual_seed(1)
    got = torch.ops.fused_lstm.lstm_stack(*args)
    torch.manual_seed(1)
    want = layer_by_layer(*args)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=0, rtol=0)
    if grad:
        loss = lambda out: sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in out)
        for g, w in zip(torch.autograd.grad(loss(got), leaves), torch.autograd.grad(loss(want), leaves)):
            torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("case", [dict(), dict(bias=False), dict(bidirectional=True), dict(P=2),
                                  dict(lengths=[5, 3, 3, 1])])
def test_gradcheck(case):
    args = list(stack_args(T=4, B=3, I=3, H=3, layers=2, dtype=torch.float64, **case))
    args[3] = [w.requires_grad_() for w in args[3]]
    x, h0, c0 = (t.requires_grad_() for t in args[:3])
    fn = lambda x, h0, c0, *w: torch.ops.fused_lstm.lstm_stack(x, h0, c0, list(w), *args[4:])
    assert torch.autograd.gradcheck(fn, [x, h0, c0] + args[3])


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[4], CASES[5]])
def test_opcheck(case, grad):
    args = stack_args(**case)
    for t in [args[0], *args[3]] if grad else []:
        t.requires_grad_()
    torch.library.opcheck(torch.ops.fused_lstm.lstm_stack.default, args)


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


@pytest.mark.parametrize("case", [dict(bidirectional=True, P=2), dict(lengths=[6, 4, 4, 1]),
                                  dict(bias=False)])
def test_matches_reference(case):
    """The op against fused_lstm.reference_lstm_stack, the plain-PyTorch statement of it."""
    args = stack_args(T=6, B=4, I=5, H=4, layers=3, dtype=torch.float64, **case)
    for got, want in zip(torch.ops.fused_lstm.lstm_stack(*args), fused_lstm.reference_lstm_stack(*args)):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


TRAIN_CASES = [c for c in CASES if not c.get("bidirectional") and not c.get("P")]


def train_args(args):
    """lstm_stack_train's arguments from lstm_stack's."""
    x, h0, c0, weights, bias, layers, _, _, _, batch_sizes = args
    return x, h0, c0, weights, bias, layers, batch_sizes


@pytest.mark.parametrize("case", TRAIN_CASES, ids=lambda c: ",".join(
    f"{k}={v}" for k, v in c.items() if k != "lengths"))
def test_train_same_bits_as_layer_by_layer(case, isa):
    """lstm_stack_train (the wavefront where the CPU runs one) keeps exactly what lstm_layer
    with train=True keeps, layer by layer: outputs, gates, cells, and the same h_n, c_n."""
    x, h0, c0, weights, bias, layers, batch_sizes = train_args(stack_args(**case))
    outputs, h_n, c_n, gates, cells = torch.ops.fused_lstm.lstm_stack_train(
        x, h0, c0, weights, bias, layers, batch_sizes)
    per = 4 if bias else 2
    for layer in range(layers):
        w = weights[layer * per:(layer + 1) * per]
        want = torch.ops.fused_lstm.lstm_layer(x, h0[layer], c0[layer], w[0], w[1],
                                               w[2] + w[3] if bias else None, None, batch_sizes,
                                               False, True)
        got = (outputs[layer], h_n[layer], c_n[layer], gates[layer], cells[layer])
        for name, g, w_ in zip(("output", "h_n", "c_n", "gates", "cell"), got, want):
            assert torch.equal(g, w_), f"layer {layer} {name}: max diff {(g - w_).abs().max():.3g}"
        x = want[0]


@pytest.mark.parametrize("case", [TRAIN_CASES[0], TRAIN_CASES[3], TRAIN_CASES[-1]])
def test_grads_same_bits_as_layer_chain(case):
    """Gradients through the one-node stack equal those through a chain of lstm_layer nodes,
    for a loss on the output, h_n and c_n."""
    args = list(stack_args(**case))
    leaves = [args[0], args[1], args[2]] + args[3]
    for leaf in leaves:
        leaf.requires_grad_()
    loss = lambda out: sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum()
                           for o in out)
    got = torch.autograd.grad(loss(torch.ops.fused_lstm.lstm_stack(*args)), leaves)
    want = torch.autograd.grad(loss(layer_by_layer(*args)), leaves)
    for i, (g, w) in enumerate(zip(got, want)):
        assert torch.equal(g, w), f"leaf {i}: max diff {(g - w).abs().max():.3g}"


def test_bias_grads_are_separate_tensors():
    """b_ih and b_hh get the same gradient from one tensor; each .grad must still be its
    own, so that accumulating into one leaves the other alone."""
    _, fused = make_pair(torch.float32, input_size=6, hidden_size=10, num_layers=2)
    x = torch.randn(10, 24, 6)
    for _ in range(2):
        fused(x)[0].sum().backward()
    b_ih, b_hh = fused.bias_ih_l0.grad, fused.bias_hh_l0.grad
    assert b_ih.data_ptr() != b_hh.data_ptr()
    torch.testing.assert_close(b_ih, b_hh, atol=0, rtol=0)
    b_ih.zero_()
    assert b_hh.abs().sum() > 0


@pytest.mark.parametrize("case", [TRAIN_CASES[0], TRAIN_CASES[3], TRAIN_CASES[-1]])
def test_opcheck_train(case):
    torch.library.opcheck(torch.ops.fused_lstm.lstm_stack_train.default,
                          train_args(stack_args(**case)))


def test_train_rejects_projections():
    x, h0, c0, weights, bias, layers, batch_sizes = train_args(
        stack_args(T=5, B=4, I=6, H=10, layers=2, P=4))
    with pytest.raises(RuntimeError, match="lstm_stack_train takes no projections: weights "
                                           "must hold 4 tensors per layer, got 5"):
        torch.ops.fused_lstm.lstm_stack_train(x, h0, c0, weights, bias, layers, batch_sizes)
