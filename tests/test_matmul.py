"""torch.ops.fused_lstm.matmul: the GEMM the CPU layers run over all rows (the input
projection, dx, the weight gradients) — AVX-512's own kernel (csrc/cpu/isa/gemm.h) or the
BLAS (fused_lstm.set_cpu_gemm) — against float64 torch.mm, on every ISA this machine runs."""
import pytest
import torch

import fused_lstm

pytestmark = pytest.mark.skipif(fused_lstm.backend() != "cpp", reason="compiled extension not loaded")

matmul = torch.ops.fused_lstm.matmul


def operands(m, n, k, trans_a, trans_b, dtype=torch.float32):
    a = torch.randn(*((k, m) if trans_a else (m, k)), dtype=dtype)
    b = torch.randn(*((n, k) if trans_b else (k, n)), dtype=dtype)
    return a, b


def op(x, trans):
    return x.t() if trans else x


def assert_within_2x_of_torch(got, want64, base):
    """Error against float64 at most 2x torch.mm's in float32, plus one float32 rounding."""
    ulp = torch.finfo(torch.float32).eps * want64.abs().max().item()
    err = (got.double() - want64).abs().max().item()
    base_err = (base.double() - want64).abs().max().item()
    assert err <= 2 * base_err + ulp, f"error {err:.3g}, torch.mm's {base_err:.3g}"


# Sizes on both sides of the tile (6 rows x 64 columns with AVX-512), its K block (128), the
# row block, and the split between threads (rows, or panels for a short C).
SIZES = [(1, 1, 1), (5, 63, 7), (6, 64, 128), (7, 65, 129), (13, 200, 300), (200, 1024, 256),
         (97, 130, 1000), (3, 700, 40), (1100, 50, 64)]


@pytest.mark.parametrize("m,n,k", SIZES)
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (False, True), (True, False),
                                             (True, True)])
def test_matches_float64_within_2x_of_torch(isa, gemm, m, n, k, trans_a, trans_b):
    a, b = operands(m, n, k, trans_a, trans_b)
    got = matmul(a, b, trans_a, trans_b)
    want = op(a.double(), trans_a) @ op(b.double(), trans_b)
    assert got.shape == (m, n) and got.dtype == torch.float32
    assert_within_2x_of_torch(got, want, op(a, trans_a) @ op(b, trans_b))


# K = 2300 with A read in place: three passes over C (gemm.h: kGemmPassRows), each of
# several sums.
@pytest.mark.parametrize("beta", [0.0, 1.0, -0.5])
@pytest.mark.parametrize("k_block", [0, 32])
@pytest.mark.parametrize("trans_a,k", [(True, 300), (False, 300), (False, 2300)])
def test_beta_and_k_block(isa, gemm, beta, k_block, trans_a, k):
    a, b = operands(70, 90, k, trans_a, False)
    c = torch.randn(70, 90)
    got = matmul(a, b, trans_a, False, c, beta, k_block)
    want = op(a.double(), trans_a) @ b.double() + beta * c.double()
    torch.testing.assert_close(got.double(), want, atol=1e-4 * (k / 300) ** 0.5, rtol=1e-5)


def test_beta_zero_ignores_nan_in_c(isa, gemm):
    """As BLAS: with beta = 0, C is written, never read."""
    a, b = operands(8, 70, 20, False, False)
    got = matmul(a, b, c=torch.full((8, 70), float("nan")), beta=0.0)
    torch.testing.assert_close(got, a @ b, atol=1e-5, rtol=1e-5)


def test_k_block_bounds_the_rounding_chain():
    """Each block of k_block terms is summed from zero: over 4096 ones plus a large first term,
    sums of blocks of 32 lose less than one chain of 4096 (float32 loses the ones added to a
    large running sum). The row blocks of the weight gradients rely on it."""
    k = 4096
    a = torch.ones(k, 1)
    a[0] = 2.0 ** 24  # the running sum starts at 2^24, where float32 spacing is 2
    b = torch.ones(k, 16)
    want = (a.double().t() @ b.double())[0, 0].item()
    blocked = matmul(a, b, True, False, None, 0.0, 32)[0, 0].item()
    assert abs(blocked - want) <= 64, (blocked, want)


def test_float64_runs_the_blas():
    a, b = operands(40, 30, 20, False, True, torch.float64)
    torch.testing.assert_close(matmul(a, b, False, True), a @ b.t(), atol=1e-12, rtol=0)


@pytest.mark.skipif(not fused_lstm.cpu_supports("avx512"), reason="needs AVX-512")
@pytest.mark.parametrize("isa", ["avx512"], indirect=True)  # the one path with its own GEMM
@pytest.mark.parametrize("gemm,deterministic", [("own", False), ("blas", True)],
                         indirect=["gemm"])
@pytest.mark.parametrize("trans_a,k", [(True, 517), (False, 2100)])
def test_same_bits_for_any_thread_count(isa, gemm, deterministic, trans_a, k):
    """Each C element of the own GEMM is summed in the same order whoever computes it; under
    torch.use_deterministic_algorithms(True) the own GEMM runs whatever set_cpu_gemm says."""
    threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(deterministic)
    try:
        a, b = operands(301, 333, k, trans_a, False)
        results = []
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            results.append(matmul(a, b, trans_a, False))
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)
    assert all(torch.equal(results[0], r) for r in results[1:])


def test_opcheck():
    a, b = operands(13, 70, 9, False, True)
    torch.library.opcheck(matmul, (a, b, False, True))
    torch.library.opcheck(matmul, (a.t().contiguous(), b, True, True, torch.randn(13, 70), 0.5))


def test_bad_inputs_name_the_argument():
    a, b = torch.randn(4, 5), torch.randn(6, 3)
    with pytest.raises(RuntimeError, match=r"op\(b\) must have 5 rows .*got 6"):
        matmul(a, b)
    with pytest.raises(RuntimeError, match="a and b must be 2-D, got 1-D and 2-D"):
        matmul(torch.randn(4), b)
    with pytest.raises(RuntimeError, match="b must have dtype Float, got Double"):
        matmul(a, torch.randn(5, 3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"c must have shape \[4, 3\], got \[3, 3\]"):
        matmul(a, torch.randn(5, 3), c=torch.randn(3, 3), beta=1.0)
    with pytest.raises(RuntimeError, match="a must be float32 or float64, got Int"):
        matmul(torch.ones(4, 5, dtype=torch.int32), b)
    with pytest.raises(RuntimeError, match="k_block must be >= 0, got -1"):
        matmul(a, torch.randn(5, 3), k_block=-1)
