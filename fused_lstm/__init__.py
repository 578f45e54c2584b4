"""fused_lstm: a fused LSTM for PyTorch, a drop-in replacement for ``torch.nn.LSTM``."""
from ._ops import backend, lstm_layer
from .module import FusedLSTM
from .reference import reference_lstm_layer

__all__ = ["FusedLSTM", "backend", "lstm_layer", "reference_lstm_layer"]
__version__ = "0.1.0"
