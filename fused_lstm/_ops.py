"""Loads the compiled ops and registers their fake (meta) implementations.

The schemas, kernels and the autograd formula live in C++ (``csrc/``); this module adds
what PyTorch needs in Python so that the ops can be traced by ``torch.compile``. If the
extension cannot be loaded, ``lstm_layer`` falls back to the pure-PyTorch reference.
"""
import os
import warnings
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .reference import reference_lstm_layer, reference_lstm_stack

_BACKEND_ENV = "FUSED_LSTM_BACKEND"


def _load_extension() -> Tuple[bool, str]:
    if os.environ.get(_BACKEND_ENV, "") == "reference":
        return False, f"{_BACKEND_ENV}=reference is set"
    global _C
    try:
        from . import _C  # loading the library registers torch.ops.fused_lstm
    except ImportError as exc:
        warnings.warn(
            f"fused_lstm: the compiled extension could not be loaded ({exc}); FusedLSTM runs "
            "the pure-PyTorch reference (same results, much slower). To build the extension: "
            "pip install --no-build-isolation -e .",
            RuntimeWarning,
            stacklevel=3,
        )
        return False, str(exc)
    return True, "compiled extension loaded"


def _check_cache_env() -> None:
    # The C++ cache reads FUSED_LSTM_CPU_CACHE_MB once; a typo there would silently turn it off.
    value = os.environ.get("FUSED_LSTM_CPU_CACHE_MB", "")
    if value and not value.strip().isdigit():
        raise ValueError("FUSED_LSTM_CPU_CACHE_MB must be a non-negative integer (megabytes), "
                         f"got {value!r}")


_check_cache_env()
_C = None
HAS_EXTENSION, LOAD_REASON = _load_extension()


def backend() -> str:
    """``"cpp"`` when the compiled kernels are in use, ``"reference"`` for the fallback."""
    return "cpp" if HAS_EXTENSION else "reference"


def cpu_isa() -> str:
    """The instruction set the CPU kernels run: ``"avx512"``, ``"avx2"`` or ``"generic"``
    (float64 always runs the generic kernels); ``"reference"`` without the extension."""
    return _C.cpu_isa() if HAS_EXTENSION else "reference"


def set_cpu_isa(isa: str) -> None:
    """Run the CPU kernels built for ``isa`` (``"generic"``, ``"avx2"``, ``"avx512"``).
    The default is the best this CPU supports; the environment variable
    ``FUSED_LSTM_CPU_ISA`` sets it at import. Raises ValueError for an unknown name and
    RuntimeError for one this CPU cannot run."""
    if not HAS_EXTENSION:
        raise RuntimeError("the compiled extension is not loaded: " + LOAD_REASON)
    _C.set_cpu_isa(isa)


def cpu_supports(isa: str) -> bool:
    """Whether this CPU can run the kernels built for ``isa``."""
    return HAS_EXTENSION and _C.cpu_supports(isa)


def cpu_gemm() -> str:
    """The GEMM the CPU layers run for their large products (the hoisted input projection,
    dx, the weight gradients) in float32: ``"blas"`` (torch's BLAS, MKL) or ``"own"``
    (fused_lstm's AVX-512 GEMM; with the other ISAs the BLAS runs either way);
    ``"reference"`` without the extension. Row-blocked weight gradients and, under
    ``torch.use_deterministic_algorithms(True)``, every product run the own GEMM."""
    return _C.cpu_gemm() if HAS_EXTENSION else "reference"


def set_cpu_gemm(gemm: str) -> None:
    """Run the large products on ``gemm`` (``"own"`` or ``"blas"``). The default is
    ``"blas"`` where the BLAS is MKL and the CPU is Intel's (MKL runs AVX-512 code there),
    else ``"own"``; the environment variable ``FUSED_LSTM_CPU_GEMM`` sets it at import.
    Raises ValueError for an unknown name."""
    if not HAS_EXTENSION:
        raise RuntimeError("the compiled extension is not loaded: " + LOAD_REASON)
    _C.set_cpu_gemm(gemm)


def fma_peak_gflops(threads: int) -> Optional[float]:
    """Measured fp32 FMA GFLOP/s of the active ISA on ``threads`` threads (None if the
    extension is missing or the generic kernels are active)."""
    return _C.fma_peak_gflops(threads) if HAS_EXTENSION else None


def empty_cache() -> int:
    """Frees the CPU buffers FusedLSTM keeps for reuse (like ``torch.cuda.empty_cache``)
    and returns the bytes freed. The ops cache their large per-call buffers (256 KB and up:
    gates, cell states, outputs, gradients) once freed, because fresh pages cost a page fault
    per 4 KB; ``FUSED_LSTM_CPU_CACHE_MB`` caps the cache (default 1024, 0 turns it off)."""
    return _C.empty_cache() if HAS_EXTENSION else 0


def cached_bytes() -> int:
    """Bytes of freed CPU buffers held for reuse (see :func:`empty_cache`)."""
    return _C.cached_bytes() if HAS_EXTENSION else 0


if HAS_EXTENSION:

    @torch.library.register_fake("fused_lstm::lstm_layer")
    def _lstm_layer_fake(input, h0, c0, w_ih, w_hh, bias, w_hr, batch_sizes, reverse, train):
        rows = tuple(input.shape[:-1])
        saved = rows if train else (0,) + rows[1:]
        H = c0.shape[1]
        return (
            input.new_empty(rows + (h0.shape[1],)),
            torch.empty_like(h0),
            torch.empty_like(c0),
            input.new_empty(saved + (4 * H,)),
            input.new_empty(saved + (H,)),
        )

    @torch.library.register_fake("fused_lstm::lstm_layer_backward")
    def _lstm_layer_backward_fake(grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh,
                                  w_hr, batch_sizes, output, gates, cell, reverse, input_grad):
        return (
            torch.empty_like(input) if input_grad else input.new_empty(0),
            torch.empty_like(h0),
            torch.empty_like(c0),
            torch.empty_like(w_ih),
            torch.empty_like(w_hh),
            torch.empty_like(w_hr) if w_hr is not None else c0.new_empty(0, c0.shape[1]),
            w_ih.new_empty(w_ih.shape[0]),
        )

    @torch.library.register_fake("fused_lstm::lstm_stack")
    def _lstm_stack_fake(input, h0, c0, weights, has_biases, num_layers, dropout, train,
                         bidirectional, batch_sizes):
        directions = 2 if bidirectional else 1
        return (
            input.new_empty(tuple(input.shape[:-1]) + (directions * h0.shape[2],)),
            torch.empty_like(h0),
            torch.empty_like(c0),
        )

    @torch.library.register_fake("fused_lstm::lstm_stack_train")
    def _lstm_stack_train_fake(input, h0, c0, weights, has_biases, num_layers, batch_sizes):
        rows, H = tuple(input.shape[:-1]), c0.shape[2]
        per_layer = lambda features: [input.new_empty(rows + (features,)) for _ in range(num_layers)]
        return per_layer(H), torch.empty_like(h0), torch.empty_like(c0), per_layer(4 * H), per_layer(H)

    @torch.library.register_fake("fused_lstm::matmul")
    def _matmul_fake(a, b, trans_a=False, trans_b=False, c=None, beta=0.0, k_block=0):
        m = a.shape[1] if trans_a else a.shape[0]
        n = b.shape[0] if trans_b else b.shape[1]
        return a.new_empty(m, n)

    # The autograd formula of lstm_layer is registered in C++ (csrc/autograd.cpp).


def lstm_layer(
    input: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    bias: Optional[Tensor] = None,
    w_hr: Optional[Tensor] = None,
    batch_sizes: Optional[Tensor] = None,
    reverse: bool = False,
    train: bool = True,
) -> Tuple[Tensor, Tensor, Tensor]:
    """One layer, one direction: ``(output, h_n, c_n)``; arguments as in
    :func:`~fused_lstm.reference_lstm_layer`.

    ``train`` asks the kernel to keep what backward needs; pass False when no gradient will
    be taken (inference), and memory stays flat in the sequence length.
    """
    if not HAS_EXTENSION:
        return reference_lstm_layer(input, h0, c0, w_ih, w_hh, bias, w_hr, batch_sizes, reverse)
    output, h_n, c_n, _gates, _cell = torch.ops.fused_lstm.lstm_layer(
        input, h0, c0, w_ih, w_hh, bias, w_hr, batch_sizes, reverse, train
    )
    return output, h_n, c_n


def lstm_stack(
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
    """All layers of an LSTM: ``(output, h_n, c_n)`` as ``nn.LSTM`` returns them, for
    time-major ``input`` ``(T, B, I)`` or packed rows ``(N, I)`` with ``batch_sizes``.
    ``weights`` are ``nn.LSTM``'s flat weights in its order; ``h0`` is
    ``(num_layers * directions, B, P)``, ``c0`` ``(..., B, H)``; ``dropout`` applies to every
    layer's output but the last when ``train``. Differentiable."""
    if not HAS_EXTENSION:
        return reference_lstm_stack(input, h0, c0, weights, has_biases, num_layers, dropout,
                                    train, bidirectional, batch_sizes)
    return torch.ops.fused_lstm.lstm_stack(input, h0, c0, weights, has_biases, num_layers,
                                           dropout, train, bidirectional, batch_sizes)
