"""The LSTM equations in plain PyTorch: the readable statement of what the kernels compute.

Tests check the compiled ops against this (and against ``torch.nn.LSTM``); ``FusedLSTM``
runs it when the compiled extension cannot be loaded. Autograd differentiates it.
"""
from typing import List, Optional, Tuple

import torch
from torch import Tensor


def reference_lstm_layer(
    input: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    bias: Optional[Tensor] = None,
    w_hr: Optional[Tensor] = None,
    batch_sizes: Optional[Tensor] = None,
    reverse: bool = False,
) -> Tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer in one direction.

    Args:
        input: ``(T, B, I)`` time-major, or packed ``(N, I)`` with ``batch_sizes``.
        h0: ``(B, P)`` and c0: ``(B, H)`` initial states (``P = H`` without projection).
        w_ih: ``(4H, I)`` and w_hh: ``(4H, P)``, gates stacked in the order i, f, g, o.
        bias: ``(4H,)``, the sum ``b_ih + b_hh``, or None.
        w_hr: ``(P, H)`` projection of h (LSTMP), or None.
        batch_sizes: ``(T,)`` int64 as in ``PackedSequence``: step t has rows for its
            ``batch_sizes[t]`` longest sequences, which come first in the batch.
        reverse: run from the last step to the first (the reverse direction).

    Returns:
        ``output`` (``(T, B, P)`` or packed ``(N, P)``), ``h_n (B, P)``, ``c_n (B, H)``:
        each sequence's state after its own last step.
    """
    packed = batch_sizes is not None
    if not packed:
        T, B = input.shape[:2]
        batch_sizes = torch.full((T,), B, dtype=torch.long)
        input = input.reshape(T * B, -1)
    sizes = batch_sizes.tolist()
    offsets = [0]
    for n in sizes:
        offsets.append(offsets[-1] + n)

    h, c = h0, c0
    outputs = [h0[:0]] * len(sizes)
    for t in (reversed(range(len(sizes))) if reverse else range(len(sizes))):
        n = sizes[t]  # sequences still running at step t: the first n of the batch
        x_t = input[offsets[t]:offsets[t + 1]]
        gates = x_t @ w_ih.T + h[:n] @ w_hh.T
        if bias is not None:
            gates = gates + bias
        i, f, g, o = gates.chunk(4, dim=-1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c_t = f * c[:n] + i * g
        h_t = o * torch.tanh(c_t)
        if w_hr is not None:
            h_t = h_t @ w_hr.T
        # Sequences that have ended (or not yet begun, in reverse) keep their state.
        h = torch.cat([h_t, h[n:]])
        c = torch.cat([c_t, c[n:]])
        outputs[t] = h_t
    output = torch.cat(outputs)
    if not packed:
        output = output.reshape(len(sizes), -1, output.shape[-1])
    return output, h, c


def reference_lstm_stack(
    input: Tensor,
    h0: Tensor,
    c0: Tensor,
    weights: List[Tensor],
    has_biases: bool,
    num_layers: int,
    dropout: float = 0.0,
    train: bool = False,
    bidirectional: bool = False,
    batch_sizes: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Stacked layers as ``nn.LSTM`` runs them (arguments as ``fused_lstm.lstm_stack``): each
    layer's output, both directions concatenated, is the next one's input, with dropout on
    all but the last layer's output when ``train``."""
    D = 2 if bidirectional else 1
    per = len(weights) // (num_layers * D)
    proj = per == (5 if has_biases else 3)
    x, h_n, c_n = input, [], []
    for layer in range(num_layers):
        outputs = []
        for direction in range(D):
            k = layer * D + direction
            w = weights[k * per:(k + 1) * per]
            bias = w[2] + w[3] if has_biases else None
            out, h, c = reference_lstm_layer(x, h0[k], c0[k], w[0], w[1], bias,
                                             w[-1] if proj else None, batch_sizes, direction == 1)
            outputs.append(out)
            h_n.append(h)
            c_n.append(c)
        x = torch.cat(outputs, dim=-1)
        if dropout > 0 and train and layer + 1 < num_layers:
            x = torch.nn.functional.dropout(x, p=dropout, training=True)
    return x, torch.stack(h_n), torch.stack(c_n)
