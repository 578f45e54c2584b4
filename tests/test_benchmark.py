"""The benchmark script runs end to end on a tiny shape (a smoke run: no assertion on time),
and its page-fault count sees what it claims to."""
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import bench_lstm  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..")


@pytest.mark.parametrize("malloc", [[], ["--steady-malloc"]])
def test_benchmark_prints_a_row_per_shape(malloc):
    cmd = [sys.executable, "benchmarks/bench_lstm.py", "--shape", "4,2,3,5,1", "--shape",
           "3,1,2,4,2", "--blocks", "2", "--repeats", "5", "--warmup", "1", "--no-memory"]
    out = subprocess.run(cmd + malloc, cwd=ROOT, capture_output=True, text=True, check=True,
                         timeout=300).stdout
    rows = [line for line in out.splitlines() if line.startswith("| 4,2,3,5,1") or
            line.startswith("| 3,1,2,4,2")]
    assert len(rows) == 2, out
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[4].endswith("x") and cells[8].endswith("x"), row  # the two speedups
        faults = [float(v) for side in cells[9].split("/") for v in side.split(",")]
        assert len(faults) == 4 and min(faults) >= 0, row  # fwd, f+b of torch, then fused
    assert ("steady (--steady-malloc)" in out) == bool(malloc), out


def test_page_faults_counts_pages_touched_first_time():
    """A fresh anonymous mapping of 2,048 small pages, written once: one fault per page."""
    import mmap

    pages = 2048
    buf = mmap.mmap(-1, pages * mmap.PAGESIZE)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        buf.madvise(mmap.MADV_NOHUGEPAGE)  # else a huge page could fault in 512 at once
    before = bench_lstm.page_faults()
    for page in range(pages):
        buf[page * mmap.PAGESIZE] = 1
    assert bench_lstm.page_faults() - before >= pages
    buf.close()


def nn_lstm_faults_per_call(steady: bool) -> float:
    """Page faults per training step of nn.LSTM at the stock shape, in a fresh process."""
    script = (
        "import sys, torch; sys.path.insert(0, 'benchmarks'); import bench_lstm\n"
        f"if {steady}: bench_lstm.steady_malloc()\n"
        "lstm, x = torch.nn.LSTM(50, 50, num_layers=2), torch.randn(50, 32, 50)\n"
        "def step():\n"
        "    out, _ = lstm(x); out.sum().backward()\n"
        "for _ in range(3): step()\n"
        "before = bench_lstm.page_faults()\n"
        "for _ in range(10): step()\n"
        "print((bench_lstm.page_faults() - before) / 10)\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=300).stdout
    return float(out.split()[-1])


def test_steady_malloc_stops_nn_lstm_faulting_its_buffers_in():
    """With glibc's defaults a fresh process's nn.LSTM training step faults its buffers in
    again on every call (~1,500 faults at the stock shape here); steady_malloc, as the
    benchmark calls it, removes nearly all of them."""
    default = nn_lstm_faults_per_call(False)
    if default < 200:
        pytest.skip(f"this malloc does not return nn.LSTM's buffers to the OS ({default:.0f} "
                    "faults per call): nothing to remove")
    steady = nn_lstm_faults_per_call(True)
    assert steady < default / 5, (default, steady)
