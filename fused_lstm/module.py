"""FusedLSTM: a drop-in replacement for ``torch.nn.LSTM`` running the fused kernels."""
import math
import warnings
from typing import Iterator, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

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
        proj_size: if > 0, h is projected to this size by ``weight_hr_l{k}`` (LSTMP).
        device, dtype: where and how to create the parameters.

    Call: ``output, (h_n, c_n) = lstm(input, (h_0, c_0))`` with ``(h_0, c_0)`` optional
    (zeros). ``input`` is ``(T, B, input_size)`` (``(B, T, input_size)`` if batch_first),
    unbatched ``(T, input_size)`` with 2-D states, or a ``PackedSequence`` (then ``output``
    is one too, and ``h_n``/``c_n`` hold each sequence's own last step).

    Errors, each naming the argument, the expected and the actual value:
        TypeError: input/h0/c0 not a Tensor, hx not a pair, an unsupported dtype (integer,
            bool, ...), or state/weight dtypes that differ from the input's.
        ValueError: wrong rank, feature size, state shape or layer count, a device mismatch,
            a weight replaced by one of the wrong shape, bad constructor arguments.
        EmptySequenceError (a ValueError and a RuntimeError): a sequence of length 0.
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
        if isinstance(proj_size, bool) or not isinstance(proj_size, int) or proj_size < 0:
            raise ValueError(f"proj_size must be a non-negative int (0 disables projections), got {proj_size!r}")
        if proj_size >= hidden_size:
            raise ValueError(f"proj_size must be smaller than hidden_size ({hidden_size}), got {proj_size}")
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
        self._flat_shapes = list(self._param_shapes())
        self._flat_weights_names = [name for name, _ in self._flat_shapes]
        for name, shape in self._flat_shapes:
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
        return self._group_weights(self._flat_weights())

    def _flat_weights(self) -> List[Tensor]:
        """The parameters in nn.LSTM's order, read anew on every call: they may have been
        replaced since construction, or be computed (``torch.nn.utils.parametrize`` and
        ``weight_norm`` take them out of ``_parameters``). ``_parameters`` directly where it
        holds them: ``getattr`` through ``nn.Module.__getattr__`` cost 4-7 us of a 50 us call."""
        params = self._parameters
        return [params[name] if name in params else getattr(self, name)
                for name in self._flat_weights_names]

    def _group_weights(self, flat: List[Tensor]) -> List[List[Tensor]]:
        per = (4 if self.bias else 2) + (1 if self.proj_size else 0)
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
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        return s

    def _param_shapes(self) -> Iterator[Tuple[str, Tuple[int, ...]]]:
        """``(name, shape)`` of every parameter, in nn.LSTM's order."""
        H, P, D = self.hidden_size, self._output_size, self.num_directions
        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else P * D
            for direction in range(D):
                suffix = f"_l{layer}{'_reverse' if direction == 1 else ''}"
                yield "weight_ih" + suffix, (4 * H, layer_input)
                yield "weight_hh" + suffix, (4 * H, P)
                if self.bias:
                    yield "bias_ih" + suffix, (4 * H,)
                    yield "bias_hh" + suffix, (4 * H,)
                if self.proj_size:
                    yield "weight_hr" + suffix, (P, H)

    @property
    def _output_size(self) -> int:
        """Features of h: proj_size with a projection, else hidden_size."""
        return self.proj_size or self.hidden_size

    def forward(
        self, input: Union[Tensor, PackedSequence], hx: Optional[Tuple[Tensor, Tensor]] = None
    ) -> Tuple[Union[Tensor, PackedSequence], Tuple[Tensor, Tensor]]:
        packed = isinstance(input, PackedSequence)
        if packed:
            x, batch_sizes, sorted_indices, unsorted_indices = input
            _checks.check_input(x, self.input_size, packed=True)
            # Read the batch size off a shape where there is one (no data-dependent read).
            batch = sorted_indices.shape[0] if sorted_indices is not None else int(batch_sizes[0])
        else:
            x = _checks.check_input(input, self.input_size)
            batch_sizes = sorted_indices = unsorted_indices = None
            if x.dim() == 2:
                x = x.unsqueeze(1)
            elif self.batch_first:
                x = x.transpose(0, 1)
            if x.shape[0] == 0:
                raise _checks.EmptySequenceError(
                    "Expected sequence length to be larger than 0 in RNN: input must have at "
                    "least one time step, got sequence length 0")
            batch = x.shape[1]
        unbatched = not packed and input.dim() == 2
        # Read the parameters once per call: they may have been replaced since construction.
        flat = self._flat_weights()
        _checks.check_parameters(self._flat_shapes, flat, x)
        h0, c0 = self._initial_state(hx, x, batch, unbatched)
        if sorted_indices is not None:  # the user's batch order -> PackedSequence's order
            h0, c0 = h0.index_select(1, sorted_indices), c0.index_select(1, sorted_indices)

        output, h_n, c_n = self._run_layers(x, h0, c0, batch_sizes, flat)

        if unsorted_indices is not None:
            h_n, c_n = h_n.index_select(1, unsorted_indices), c_n.index_select(1, unsorted_indices)
        if packed:
            return PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices), (h_n, c_n)
        if unbatched:
            return output.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        if self.batch_first:
            output = output.transpose(0, 1)
        return output, (h_n, c_n)

    def _initial_state(self, hx, x: Tensor, batch: int, unbatched: bool) -> Tuple[Tensor, Tensor]:
        """(h0, c0) as 3-D ``(layers * directions, B, P)`` / ``(..., H)``; zeros if not given."""
        LD, H, P = self.num_layers * self.num_directions, self.hidden_size, self._output_size
        hx = _checks.check_hx(hx)
        if hx is None:
            return x.new_zeros(LD, batch, P), x.new_zeros(LD, batch, H)
        shape = lambda features: (LD, features) if unbatched else (LD, batch, features)
        h0 = _checks.check_state("h0", hx[0], shape(P), x, unbatched)
        c0 = _checks.check_state("c0", hx[1], shape(H), x, unbatched)
        return (h0.unsqueeze(1), c0.unsqueeze(1)) if unbatched else (h0, c0)

    def _run_layers(
        self, x: Tensor, h0: Tensor, c0: Tensor, batch_sizes: Optional[Tensor], flat: List[Tensor]
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """All layers and directions on time-major ``(T, B, I)`` or packed ``(N, I)`` rows."""
        # Half precision runs the float32 kernels: float32 accumulation and cell state.
        dtype = x.dtype
        upcast = dtype in _checks.UPCAST_DTYPES
        cast = (lambda t: t.float()) if upcast else (lambda t: t)
        x, h0, c0 = cast(x).contiguous(), cast(h0), cast(c0)
        weights = [cast(w) for w in flat]
        # Every layer in one op call. With a gradient its autograd kernel (C++) makes the stack
        # one node (unidirectional, no projections or dropout) or one node per layer; on the
        # CPU, such float32 stacks run as one wavefront where they can, either way.
        x, h_n, c_n = _ops.lstm_stack(x, h0, c0, weights, self.bias, self.num_layers,
                                      self.dropout, self.training, self.bidirectional,
                                      batch_sizes)
        if upcast:
            return x.to(dtype), h_n.to(dtype), c_n.to(dtype)
        return x, h_n, c_n
