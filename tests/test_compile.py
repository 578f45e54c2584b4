"""torch.compile(fullgraph=True) and torch.export of models that use FusedLSTM."""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fused_lstm
from fused_lstm import FusedLSTM

pytestmark = pytest.mark.skipif(fused_lstm.backend() != "cpp", reason="compiled extension not loaded")


class Forecaster(nn.Module):
    """Two stacked FusedLSTMs and a head, every option on: the shape of real models."""

    def __init__(self):
        super().__init__()
        self.encoder = FusedLSTM(5, 8, num_layers=2, bidirectional=True, proj_size=3, batch_first=True)
        self.decoder = FusedLSTM(6, 4, bias=False, batch_first=True)
        self.head = nn.Linear(4, 1)

    def forward(self, x, hx):
        out, (h, c) = self.encoder(x, hx)
        out, _ = self.decoder(out)
        return self.head(out[:, -1]).sum() + h.sum() + c.sum()


class PackedClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = FusedLSTM(4, 6, bidirectional=True, proj_size=2)

    def forward(self, packed):
        out, (h, c) = self.lstm(packed)
        return out.data.square().sum() + h.sum() + c.sum()


def grads_of(model, loss):
    return torch.autograd.grad(loss, list(model.parameters()))


def assert_compiled_matches_eager(model, *args):
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    loss_eager, loss_compiled = model(*args), compiled(*args)
    torch.testing.assert_close(loss_compiled, loss_eager, atol=1e-5, rtol=1e-6)
    for a, b in zip(grads_of(model, loss_compiled), grads_of(model, loss_eager)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-6)


def test_compile_fullgraph_dense():
    model = Forecaster()
    x = torch.randn(3, 7, 5)
    hx = (torch.randn(4, 3, 3), torch.randn(4, 3, 8))
    assert_compiled_matches_eager(model, x, hx)


@pytest.mark.parametrize("enforce_sorted", [False, True])
def test_compile_fullgraph_packed(enforce_sorted):
    lengths = torch.tensor([7, 5, 2]) if enforce_sorted else torch.tensor([2, 7, 5])
    packed = pack_padded_sequence(torch.randn(7, 3, 4), lengths, enforce_sorted=enforce_sorted)
    assert_compiled_matches_eager(PackedClassifier(), packed)


class StackedRegressor(nn.Module):
    """The stock forecaster's shape: stacked unidirectional layers, the one-node stack whose
    forward is lstm_stack_train (on the CPU, at B > 16, one wavefront)."""

    def __init__(self):
        super().__init__()
        self.lstm = FusedLSTM(5, 16, num_layers=3)
        self.head = nn.Linear(16, 1)

    def forward(self, x):
        out, (h, c) = self.lstm(x)
        return self.head(out[-1]).square().sum() + h.sum() + c.square().sum()


@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph_stacked(dynamic):
    torch._dynamo.reset()
    model = StackedRegressor()
    compiled = torch.compile(model, fullgraph=True, dynamic=dynamic)
    for batch in (24, 20):
        x = torch.randn(9, batch, 5)
        loss_eager, loss_compiled = model(x), compiled(x)
        torch.testing.assert_close(loss_compiled, loss_eager, atol=1e-5, rtol=1e-6)
        for a, b in zip(grads_of(model, loss_compiled), grads_of(model, loss_eager)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-6)


def test_export_inference_model_with_dynamic_shapes():
    model = Forecaster().eval()
    hx = (torch.zeros(4, 3, 3), torch.zeros(4, 3, 8))
    batch = torch.export.Dim("batch")
    time = torch.export.Dim("time", min=2)
    with torch.no_grad():
        exported = torch.export.export(
            model, (torch.randn(3, 7, 5), hx),
            dynamic_shapes=({0: batch, 1: time}, ({1: batch}, {1: batch})),
        )
        x2 = torch.randn(5, 11, 5)
        hx2 = (torch.randn(4, 5, 3), torch.randn(4, 5, 8))
        torch.testing.assert_close(exported.module()(x2, hx2), model(x2, hx2), atol=1e-5, rtol=0)
    assert "fused_lstm.lstm_stack" in str(exported.graph)  # inference: all layers, one op
