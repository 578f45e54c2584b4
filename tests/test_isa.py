"""Every CPU kernel path this machine can run (AVX-512, AVX2, generic) against nn.LSTM, and
the switch between them."""
import functools
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fused_lstm
from conftest import ISAS, make_pair, run
from test_parity import check_parity

pytestmark = pytest.mark.skipif(fused_lstm.backend() != "cpp", reason="compiled extension not loaded")



# Shapes that take every branch of the fused kernels: one row and a few (hoisted
# projection, threads split hidden groups), many rows (threads split rows), hidden sizes
# that are and are not a multiple of the vector width, a partial last row tile. The last
# hidden group's width w = H mod W packs its gates into 1, 2, 3 or 4 vectors; AVX-512
# (W = 16) / AVX2 (W = 8): H = 50 and 130: 1/1; 37: 2/3; 70: 2/3; 27: 3/2; 29: 4/3.
SHAPES = [  # T, B, layers, bidirectional, (I, H)
    (9, 1, 2, True, (7, 37)),
    (5, 3, 1, False, (16, 16)),
    (6, 29, 2, True, (10, 50)),
    (4, 40, 1, False, (33, 70)),
    (3, 13, 1, True, (5, 130)),
    (5, 14, 1, True, (9, 27)),
    (4, 2, 2, False, (11, 29)),
]


@pytest.mark.parametrize("T,B,layers,bidirectional,sizes", SHAPES)
@pytest.mark.parametrize("batch_first,with_state", [(False, True), (True, False)])
def test_parity_on_every_isa(isa, T, B, layers, bidirectional, sizes, batch_first, with_state):
    assert fused_lstm.cpu_isa() == isa
    check_parity(torch.float32, T, B, layers, batch_first, bidirectional, with_state, True, sizes)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_on_every_isa(isa, bidirectional):
    ref, fused = make_pair(input_size=6, hidden_size=40, num_layers=2, bidirectional=bidirectional)
    lengths = torch.tensor([3, 9, 9, 1, 5, 7, 2, 8, 6, 4, 9, 3, 5, 1])
    packed = pack_padded_sequence(torch.randn(9, len(lengths), 6), lengths, enforce_sorted=False)
    weights = [torch.randn(int(lengths.sum()), 40 * (2 if bidirectional else 1)),
               torch.randn(2 * (2 if bidirectional else 1), len(lengths), 40),
               torch.randn(2 * (2 if bidirectional else 1), len(lengths), 40)]
    for a, b in zip(sum(run(fused, packed, None, weights), ()), sum(run(ref, packed, None, weights), ())):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_nonfinite_inputs_propagate_like_nn_lstm(isa):
    ref, fused = make_pair(input_size=4, hidden_size=20)
    x = torch.randn(6, 3, 4)
    x[2, 0, 1] = float("nan")
    x[1, 1, 0] = float("inf")
    x[4, 2, 3] = -float("inf")
    with torch.no_grad():
        for a, b in zip((fused(x)[0],) + fused(x)[1], (ref(x)[0],) + ref(x)[1]):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0, equal_nan=True)


def test_long_dot_products_round_in_blocks(isa):
    """The register tile sums K = I + H = 8192 products per gate (32 rows: the per-step
    [x_t, h] pass, no hoisted projection). Summed in blocks of 128 the pre-activations are
    within 5.7e-7 of the exact sum of the same float32 inputs on both ISAs (the order per
    output is the same); one running sum over K was off by 4.1e-6 (measured with the
    previous kernel)."""
    if isa == "generic":
        pytest.skip("the generic path has no register tile (its GEMMs are torch's BLAS)")
    g = torch.Generator().manual_seed(0)
    B, I, H = 32, 8176, 16
    x = torch.randn(1, B, I, generator=g)
    w_ih = torch.randn(4 * H, I, generator=g) * (0.5 / I ** 0.5)  # |pre-activation| < 2
    zeros = torch.zeros(B, H)
    out = torch.ops.fused_lstm.lstm_layer(x, zeros, zeros, w_ih, torch.zeros(4 * H, H), None,
                                          None, None, False, True)
    exact = x[0].double() @ w_ih.double().t()
    i = out[3].reshape(B, 4 * H)[:, :H].double()  # the input gate, activated
    err = (torch.log(i / (1 - i)) - exact[:, :H]).abs().max().item()
    assert err < 1.5e-6, f"input gate pre-activation off by {err:.3g}"


def test_isa_switch_and_errors():
    default = fused_lstm.cpu_isa()
    forced = os.environ.get("FUSED_LSTM_CPU_ISA")
    assert default == (forced if forced in ISAS else ISAS[-1]), "default: the best this CPU runs"
    with pytest.raises(ValueError, match="isa must be one of 'generic', 'avx2', 'avx512', got 'sse9'"):
        fused_lstm.set_cpu_isa("sse9")
    assert fused_lstm.cpu_isa() == default
    try:
        for isa in ISAS:
            fused_lstm.set_cpu_isa(isa)
            assert fused_lstm.cpu_isa() == isa
            peak = fused_lstm.fma_peak_gflops(1)
            assert peak is None if isa == "generic" else peak > 1.0
    finally:
        fused_lstm.set_cpu_isa(default)


def test_environment_variable_picks_the_isa():
    script = "import fused_lstm; print(fused_lstm.cpu_isa())"
    env = dict(os.environ, FUSED_LSTM_CPU_ISA="generic")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "generic"


def test_gemm_switch_and_errors():
    """The BLAS where it is MKL on an Intel CPU (MKL runs AVX-512 code there), else the own
    GEMM; FUSED_LSTM_CPU_GEMM overrides it."""
    with open("/proc/cpuinfo") as f:
        intel = "GenuineIntel" in f.read()
    forced = os.environ.get("FUSED_LSTM_CPU_GEMM")
    default = fused_lstm.cpu_gemm()
    want = "blas" if intel and torch.backends.mkl.is_available() else "own"
    assert default == (forced if forced in ("own", "blas") else want)
    with pytest.raises(ValueError, match="gemm must be one of 'own', 'blas', got 'mkl'"):
        fused_lstm.set_cpu_gemm("mkl")
    assert fused_lstm.cpu_gemm() == default
    try:
        for gemm in ("own", "blas"):
            fused_lstm.set_cpu_gemm(gemm)
            assert fused_lstm.cpu_gemm() == gemm
    finally:
        fused_lstm.set_cpu_gemm(default)
    for gemm in ("own", "blas"):
        script = "import fused_lstm; print(fused_lstm.cpu_gemm())"
        env = dict(os.environ, FUSED_LSTM_CPU_GEMM=gemm)
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                             text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == gemm


@pytest.mark.parametrize("T,B,layers,bidirectional,sizes",
                         [SHAPES[0], SHAPES[3], SHAPES[6], (4, 3, 1, False, (64, 256))])
def test_parity_with_either_gemm(isa, gemm, T, B, layers, bidirectional, sizes):
    """The hoisted projection (B <= 16), dx and the weight gradients on either GEMM (with
    H = 256, dW_hh is 1 MB: one GEMM, not row blocks)."""
    assert fused_lstm.cpu_gemm() == gemm
    check_parity(torch.float32, T, B, layers, False, bidirectional, True, True, sizes)


@functools.lru_cache(maxsize=1)
def disassembly():
    """The built library's functions: {name: [part, ...]}, each part a list of (address,
    instruction); a name can have several parts (the function, its PLT stub, a cold clone)."""
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump not found")
    library = fused_lstm._ops._C.__file__
    listing = subprocess.run([objdump, "-d", "--no-show-raw-insn", "-C", library],
                             capture_output=True, text=True, check=True).stdout
    functions, part = {}, None
    for line in listing.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if header:
            part = []
            functions.setdefault(header.group(1), []).append(part)
        elif part is not None:
            instruction = re.match(r"\s*([0-9a-f]+):\s+(.*)", line)
            if instruction:
                part.append((int(instruction.group(1), 16), instruction.group(2)))
    return functions


def test_baseline_code_has_no_avx_instructions():
    """The build is portable: every function outside the per-ISA kernels is baseline x86-64
    (no ymm/zmm register anywhere else), so the library loads and runs on any x86-64 CPU and
    picks its kernels at run time."""
    offenders = {name for name, parts in disassembly().items()
                 if not re.search(r"::(avx2|avx512)::", name)
                 and any("%ymm" in text or "%zmm" in text for part in parts for _, text in part)}
    assert not offenders, sorted(offenders)[:10]


def test_register_tiles_keep_their_accumulators_in_registers():
    """The inner k loop of every register tile the library holds (R rows x NV vectors; up to
    6x4 on AVX-512's 32 registers, 3x4 on AVX2's 16) must not touch the stack: when an
    accumulator spills, every k step stores it (seen while tuning: a prefetch intrinsic, a
    masked load and an out-of-line tile each made the loop 2x slower, and 6-row tiles on AVX2
    1.4x slower).
    A codegen check, not a timing: it reads the compiled library."""
    checked = set()
    for name, parts in disassembly().items():
        tile = re.search(r"fused_lstm::cpu::((?:avx2|avx512)::"
                         r"(?:fused_tile<\d+, \d+>|panel_tile<\d+>))\(", name)
        # The GEMM's R x 4 tiles (gemm.h), in gemm_rows or in lambdas of it per R; R comes
        # from the loop's FMA count.
        gemm = re.search(r"fused_lstm::cpu::(avx512)::gemm_rows\(", name)
        # The weight-gradient tiles of NV vectors: dw_columns<NV> holds its R-row loops,
        # inlined or in lambdas of their own; R comes from the loop's FMA count.
        dw = re.search(r"fused_lstm::cpu::(avx2|avx512)::dw_columns<(\d+)>\(", name)
        tile_key = tile.group(1) if tile else None
        if not tile_key and not dw and not gemm:
            continue
        if tile_key:
            sizes = [int(v) for v in re.findall(r"\d+", tile_key.split("::")[1])]
            want = sizes[0] * (sizes[1] if len(sizes) > 1 else 4)
        for body in parts:
            for address, text in body:
                jump = re.match(r"j\w+\s+([0-9a-f]+)", text)
                if not jump or int(jump.group(1), 16) >= address:
                    continue  # a backward branch closes a loop
                loop = [t for a, t in body if int(jump.group(1), 16) <= a < address]
                straight = not any(re.match(r"j\w+\s", t) for t in loop)  # an innermost loop
                fmas = sum("vfmadd" in t for t in loop)
                if tile_key and fmas == want:
                    key = tile_key
                elif dw and fmas and fmas % int(dw.group(2)) == 0:
                    key = f"{dw.group(1)}::dw_tile<{fmas // int(dw.group(2))}, {dw.group(2)}>"
                elif gemm and fmas and fmas % 4 == 0:
                    key = f"{gemm.group(1)}::gemm_tile<{fmas // 4}>"
                else:
                    continue
                if straight:
                    spills = [t for t in loop
                              if re.search(r"[yz]mm", t) and re.search(r"\(%r[sb]p", t)]
                    assert not spills, f"{key}: accumulators spill: {spills[:3]}"
                    checked.add(key)
    for full in ("avx512::fused_tile<6, 4>", "avx512::panel_tile<6>", "avx512::dw_tile<6, 4>",
                 "avx512::gemm_tile<6>",
                 "avx2::fused_tile<3, 4>", "avx2::panel_tile<3>", "avx2::dw_tile<3, 4>"):
        assert full in checked, f"no k loop found in {full}"
