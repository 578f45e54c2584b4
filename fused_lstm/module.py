"""FusedLSTM: a drop-in replacement for ``torch.nn.LSTM`` running the fused kernels."""
import math
import warnings
from typing import Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _checks, _ops


class FusedLSTM(nn.Module):
    r"""Multi-layer LSTM with the same constructor, parameters and call as ``torch.nn.LSTM``.

    Per step and layer it computes, with one GEMM for all four gates and the cell update
    fused behind it::

        i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)    f = sigmoid(W_if x + ... )
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)       o = sigmoid(W_io x + ... )
        c' = f * c + i * g                            h' = o * tanh(c')

    Parameters are named and shaped as in ``nn.LSTM`` (``weight_ih_l{k}``,
    ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``, with ``_reverse`` for the
    second direction), so ``state_dict`` moves between the two both ways.

    Args:
        input_size: features of the input ``x``.
        hidden_size: features of the hidden state ``h``.
        num_layers: stacked layers; layer ``k > 0`` takes layer ``k-1``'s output.
        bias: if False, the layers have no ``b_ih`` / ``b_hh``.
        batch_first: input and output are ``(B, T, *)`` instead of ``(T, B, *)``
            (the states ``h``/``c`` are ``(layers * directions, B, H)`` either way).
        dropout: dropout on each layer's output except the last, in training mode.
        bidirectional: run a second, time-reversed direction per layer and concatenate.
        proj_size: must be 0 (LSTM with projections is not supported yet).
        device, dtype: where and how to create the parameters.

    Call: ``output, (h_n, c_n) = lstm(input, (h_0, c_0))`` with ``(h_0, c_0)`` optional
    (zeros). ``input`` is ``(T, B, input_size)`` (``(B, T, input_size)`` if batch_first) or
    unbatched ``(T, input_size)`` with 2-D states.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        if proj_size != 0:
            raise NotImplementedError(f"proj_size must be 0 (projections are not supported yet), got {proj_size!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero "
                f"dropout expects num_layers greater than 1, but got dropout={dropout} and "
                f"num_layers={num_layers}"
            )
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self.num_directions = 2 if bidirectional else 1

        factory = {"device": device, "dtype": dtype}
        # Registration order matches nn.LSTM, so parameters() and the state_dict line up and
        # the same seed gives the same initial weights.
        self._flat_weights_names = [name for name, _ in self._param_shapes()]
        for name, shape in self._param_shapes():
            self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.LSTM``'s init: every parameter uniform in ``(-1/sqrt(H), 1/sqrt(H))``."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    @property
    def all_weights(self) -> List[List[nn.Parameter]]:
        """Parameters per layer and direction, as ``nn.LSTM.all_weights``."""
        per = 4 if self.bias else 2
        flat = [getattr(self, name) for name in self._flat_weights_names]
        return [flat[k:k + per] for k in range(0, len(flat), per)]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s

    def _param_shapes(self) -> Iterator[Tuple[str, Tuple[int, ...]]]:
        """``(name, shape)`` of every parameter, in nn.LSTM's order."""
        H, D = self.hidden_size, self.num_directions
        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else H * D
            for direction in range(D):
                suffix = f"_l{layer}{'_reverse' if direction == 1 else ''}"
                yield "weight_ih" + suffix, (4 * H, layer_input)
                yield "weight_hh" + suffix, (4 * H, H)
                if self.bias:
                    yield "bias_ih" + suffix, (4 * H,)
                    yield "bias_hh" + suffix, (4 * H,)

    def forward(
        self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None
    ) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        input = _checks.check_input(input, self.input_size)
        unbatched = input.dim() == 2
        if unbatched:
            input = input.unsqueeze(1)
        x = input.transpose(0, 1) if self.batch_first and not unbatched else input
        if x.shape[0] == 0:
            raise ValueError("input must have at least one time step, got sequence length 0")
        batch = x.shape[1]
        _checks.check_parameters(
            ((name, getattr(self, name), shape) for name, shape in self._param_shapes()), x
        )

        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        state_shape = (L * D, H) if unbatched else (L * D, batch, H)
        hx = _checks.check_hx(hx)
        if hx is None:
            h0 = c0 = x.new_zeros(L * D, batch, H)
        else:
            h0 = _checks.check_state("h0", hx[0], state_shape, x, unbatched)
            c0 = _checks.check_state("c0", hx[1], state_shape, x, unbatched)
            if unbatched:
                h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)

        # Keep per-step state for backward only when a gradient can be taken.
        train = torch.is_grad_enabled() and (
            x.requires_grad or h0.requires_grad or c0.requires_grad
            or any(p.requires_grad for p in self.parameters())
        )
        x = x.contiguous()
        h_n, c_n = [], []
        for layer in range(L):
            outputs = []
            for direction in range(D):
                w_ih, w_hh, *biases = self.all_weights[layer * D + direction]
                bias = biases[0] + biases[1] if biases else None
                k = layer * D + direction
                out, h, c = _ops.lstm_layer(x, h0[k], c0[k], w_ih, w_hh, bias, direction == 1, train)
                outputs.append(out)
                h_n.append(h)
                c_n.append(c)
            x = torch.cat(outputs, dim=2) if D == 2 else outputs[0]
            if self.dropout > 0 and self.training and layer < L - 1:
                x = F.dropout(x, p=self.dropout, training=True)

        output = x
        h_n, c_n = torch.stack(h_n), torch.stack(c_n)
        if unbatched:
            return output.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        if self.batch_first:
            output = output.transpose(0, 1)
        return output, (h_n, c_n)
