"""fused_lstm: a fused LSTM for PyTorch, a drop-in replacement for ``torch.nn.LSTM``."""
from ._ops import (backend, cached_bytes, cpu_gemm, cpu_isa, cpu_supports, empty_cache,
                   fma_peak_gflops, lstm_layer, lstm_stack, set_cpu_gemm, set_cpu_isa)
from ._checks import EmptySequenceError
from .module import FusedLSTM
from .reference import reference_lstm_layer, reference_lstm_stack

__all__ = [
    "EmptySequenceError", "FusedLSTM", "backend", "cached_bytes", "cpu_gemm", "cpu_isa",
    "cpu_supports", "empty_cache", "fma_peak_gflops", "lstm_layer", "lstm_stack",
    "reference_lstm_layer", "reference_lstm_stack", "set_cpu_gemm", "set_cpu_isa",
]
__version__ = "0.1.0"
