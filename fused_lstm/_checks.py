"""Validation of FusedLSTM's inputs, done once per call before any kernel runs.

Every error names the argument, the expected and the actual value.
"""
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

class EmptySequenceError(ValueError, RuntimeError):
    """A sequence of length 0. A ValueError, and a RuntimeError like nn.LSTM's, so code
    written against either keeps catching it."""


SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
# Computed by the float32 kernels (float32 accumulation and cell state), rounded on output.
UPCAST_DTYPES = (torch.bfloat16, torch.float16)


def check_input(input: object, input_size: int, packed: bool = False) -> Tensor:
    if not isinstance(input, Tensor):
        raise TypeError(f"input must be a Tensor or PackedSequence, got {type(input).__name__}")
    ranks = (2,) if packed else (2, 3)
    if input.dim() not in ranks:
        what = "PackedSequence data must be 2-D" if packed else "input must be 3-D (batched) or 2-D (unbatched)"
        raise ValueError(f"{what}, got {input.dim()}-D with shape {tuple(input.shape)}")
    if input.dtype not in SUPPORTED_DTYPES:
        names = ", ".join(str(d).replace("torch.", "") for d in SUPPORTED_DTYPES)
        raise TypeError(f"input must have dtype {names}, got {input.dtype}")
    if input.shape[-1] != input_size:
        raise ValueError(
            f"input.size(-1) must be equal to input_size: expected {input_size}, got "
            f"{input.shape[-1]}"
        )
    return input


def check_state(
    name: str, state: object, expected: Sequence[int], like: Tensor, unbatched: bool
) -> Tensor:
    """One of h0/c0: shape ``expected`` (already without the batch dim when unbatched)."""
    if not isinstance(state, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(state).__name__}")
    if state.dim() != len(expected):
        kind = "2-D for unbatched input" if unbatched else "3-D for batched input"
        raise ValueError(f"{name} must be {kind}, got {state.dim()}-D with shape {tuple(state.shape)}")
    if tuple(state.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {tuple(state.shape)}")
    if state.dtype != like.dtype:
        raise TypeError(f"{name} must have the input's dtype {like.dtype}, got {state.dtype}")
    if state.device != like.device:
        raise ValueError(f"{name} must be on the input's device {like.device}, got {state.device}")
    return state


def check_hx(hx: object) -> Optional[Tuple[object, object]]:
    if hx is None:
        return None
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise TypeError(f"hx must be a tuple (h0, c0) of two Tensors, got {type(hx).__name__}")
    return hx[0], hx[1]


def check_parameters(
    expected: Sequence[Tuple[str, Tuple[int, ...]]], params: Sequence[Tensor], like: Tensor
) -> None:
    """Weights may have been replaced after construction: check shape, dtype and device."""
    for (name, shape), param in zip(expected, params):
        if param.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(param.shape)}")
        if param.dtype != like.dtype:
            raise TypeError(
                f"{name} has dtype {param.dtype} but input has dtype {like.dtype}; convert the "
                f"module (.to({like.dtype})) or the input"
            )
        if param.device != like.device:
            raise ValueError(f"{name} is on {param.device} but input is on {like.device}")
