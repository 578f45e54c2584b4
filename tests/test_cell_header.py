"""csrc/lstm_cell.h, the cell math both the CPU and the CUDA kernels compile, built as plain
host code and checked against torch's sigmoid/tanh and autograd, in float32 and float64."""
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

SOURCE = Path(__file__).parent / "native" / "cell_math.cpp"


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    out = tmp_path_factory.mktemp("cell") / "cell_math"
    subprocess.run([compiler, "-O2", "-std=c++17", str(SOURCE), "-o", str(out)], check=True)
    return out


def reference(inputs: torch.Tensor) -> torch.Tensor:
    """The same quantities from torch in float64: the equations and autograd."""
    a_i, a_f, a_g, a_o, c_prev, dh, dc_next = (inputs[:, k].clone().requires_grad_(k < 5) for k in range(7))
    i, f, g, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
    c = f * c_prev + i * g
    h = o * torch.tanh(c)
    # The step's loss: dh on h_t plus dc_next on c_t (the gradient arriving from step t+1).
    grads = torch.autograd.grad((h * dh + c * dc_next).sum(), [a_i, a_f, a_g, a_o, c_prev])
    return torch.stack([i, f, g, o, c, h, *grads], dim=1).detach()


@pytest.mark.parametrize("dtype,tol", [("float", 2e-6), ("double", 1e-13)])
def test_cell_math_matches_torch(binary, dtype, tol):
    torch.manual_seed(0)
    inputs = torch.randn(2000, 7, dtype=torch.float64) * torch.tensor([4, 4, 4, 4, 2, 1, 1])
    inputs[:8, :4] = torch.tensor([[30.0], [-30.0], [90.0], [-90.0], [0.0], [1e-7], [-1e-7], [8.0]])
    if dtype == "float":  # the inputs as float32 sees them
        inputs = inputs.float().double()
    text = "\n".join(" ".join(f"{v:.17g}" for v in row) for row in inputs.tolist())
    out = subprocess.run([str(binary), dtype[0]], input=text, capture_output=True, text=True, check=True)
    got = torch.tensor([[float(v) for v in line.split()] for line in out.stdout.splitlines()], dtype=torch.float64)
    want = reference(inputs)
    assert got.shape == want.shape
    names = ["i", "f", "g", "o", "c_t", "h_t", "d a_i", "d a_f", "d a_g", "d a_o", "dc_prev"]
    for k, name in enumerate(names):
        torch.testing.assert_close(got[:, k], want[:, k], atol=tol, rtol=tol, msg=lambda m: f"{name}: {m}")
