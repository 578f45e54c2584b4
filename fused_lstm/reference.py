"""The LSTM equations in plain PyTorch: the readable statement of what the kernels compute.

Tests check the compiled ops against this (and against ``torch.nn.LSTM``); ``FusedLSTM``
runs it when the compiled extension cannot be loaded. Autograd differentiates it.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor


def reference_lstm_layer(
    input: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    bias: Optional[Tensor] = None,
    reverse: bool = False,
) -> Tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer in one direction.

    Args:
        input: ``(T, B, I)``, time-major.
        h0, c0: ``(B, H)`` initial hidden and cell state.
        w_ih: ``(4H, I)`` and ``w_hh``: ``(4H, H)``, gates stacked in the order i, f, g, o.
        bias: ``(4H,)``, the sum ``b_ih + b_hh``, or None.
        reverse: run from the last step to the first (the reverse direction).

    Returns:
        ``output (T, B, H)``, ``h_n (B, H)``, ``c_n (B, H)``.
    """
    T = input.shape[0]
    h, c = h0, c0
    outputs = [h0] * T
    for t in (reversed(range(T)) if reverse else range(T)):
        gates = input[t] @ w_ih.T + h @ w_hh.T
        if bias is not None:
            gates = gates + bias
        i, f, g, o = gates.chunk(4, dim=-1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        outputs[t] = h
    return torch.stack(outputs), h, c
