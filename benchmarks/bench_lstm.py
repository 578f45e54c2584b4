"""FusedLSTM against torch.nn.LSTM, same weights, same run: a table of times and ratios.

Each implementation is timed in its own block of back-to-back calls after warm-up; blocks
alternate (torch, fused, torch, fused, ...); each block gives a median, and each
implementation keeps its best block. Alternating single calls would slow nn.LSTM by 10-40%
on small machines and flatter FusedLSTM, so it is not done.

    python benchmarks/bench_lstm.py                    # the four standard shapes
    python benchmarks/bench_lstm.py --shape 50,32,50,50,2 --plot speedups.png
"""
import argparse
import ctypes
import ctypes.util
import resource
import statistics
import time
from typing import Any, Callable, Dict, List, Tuple

import torch
from torch import nn

import fused_lstm
from fused_lstm import FusedLSTM

# (T, B, I, H, layers) and what each stands for.
SHAPES: List[Tuple[Tuple[int, int, int, int, int], str]] = [
    ((50, 32, 50, 50, 2), "stacked stock forecaster"),
    ((200, 1, 256, 256, 1), "real-time, one stream"),
    ((100, 64, 512, 512, 1), "fastrnns default"),
    ((100, 16, 1024, 1024, 1), "large hidden"),
]


# On a GPU: the fastrnns default and small batches.
CUDA_SHAPES: List[Tuple[Tuple[int, int, int, int, int], str]] = [
    ((100, 64, 512, 512, 1), "fastrnns default"),
    ((100, 8, 512, 512, 1), "small batch"),
    ((100, 1, 512, 512, 1), "one stream"),
]


def lstm_flops(T: int, B: int, I: int, H: int, layers: int, directions: int = 1) -> float:
    """Forward FLOPs: 8*T*B*H*(I+H) per layer and direction (backward is about twice)."""
    total = 0.0
    for layer in range(layers):
        layer_input = I if layer == 0 else H * directions
        total += 8.0 * T * B * H * (layer_input + H) * directions
    return total


def timer(device: str) -> Callable[[Callable[[], None]], float]:
    """Seconds of one call: wall clock on CPU, CUDA events around the call on a GPU."""
    if device == "cpu":
        def cpu_time(fn):
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start
        return cpu_time

    def cuda_time(fn):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    return cuda_time


def page_faults() -> int:
    """Minor page faults of this process so far (all threads)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_block(fn: Callable[[], None], repeats: int, warmup: int, budget_s: float = 1.0,
               device: str = "cpu") -> Tuple[float, float]:
    """Median seconds of up to `repeats` back-to-back calls (at least 5, fewer when a call is
    slow enough that the block would exceed `budget_s`) after `warmup` calls, and the minor
    page faults per call over them."""
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    per_call = (time.perf_counter() - start) / max(warmup, 1)
    repeats = max(5, min(repeats, int(budget_s / max(per_call, 1e-9))))
    measure = timer(device)
    faults = page_faults()
    seconds = statistics.median(measure(fn) for _ in range(repeats))
    return seconds, (page_faults() - faults) / repeats


def race(fns: Dict[str, Callable[[], None]], blocks: int, repeats: int, warmup: int,
         device: str = "cpu") -> Dict[str, Tuple[float, float]]:
    """Per implementation its best block: (median seconds, page faults per call), blocks
    alternating between implementations."""
    best = {name: (float("inf"), 0.0) for name in fns}
    for block in range(blocks):
        order = list(fns) if block % 2 == 0 else list(reversed(fns))
        for name in order:
            best[name] = min(best[name], time_block(fns[name], repeats, warmup, device=device))
    return best


def steady_malloc() -> None:
    """Keeps freed memory in glibc's heap instead of returning it to the OS. By default glibc
    maps large blocks fresh and trims the heap top, so a call whose buffers go back to the OS
    faults them in again on the next call (nn.LSTM's training step at the stock shape:
    1,300-2,100 faults per call in a fresh process, up to 2.4x its time); how often that
    happens depends on what the process allocated before. FusedLSTM keeps its buffers (csrc/cpu/buffer_cache.cpp)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # glibc's mallopt parameters
    for param, value in ((m_trim_threshold, 1 << 30), (m_top_pad, 64 << 20),
                         (m_mmap_threshold, 32 << 20)):  # 32 MB: glibc's largest threshold
        if not libc.mallopt(param, value):
            raise RuntimeError(f"mallopt({param}, {value}) failed")


def bench_shape(shape, blocks: int, repeats: int, warmup: int,
                device: str = "cpu") -> Dict[str, Any]:
    """Best block times (s), forward GFLOP/s, and page faults per call (fwd, f+b) of each."""
    T, B, I, H, layers = shape
    torch.manual_seed(0)
    ref = nn.LSTM(I, H, num_layers=layers).to(device)
    fused = FusedLSTM(I, H, num_layers=layers).to(device)
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, I, device=device)

    def forward(model):
        def fn():
            with torch.no_grad():
                model(x)
        return fn

    def forward_backward(model):
        def fn():
            out, _ = model(x)
            out.sum().backward()
        return fn

    fwd = race({"torch": forward(ref), "fused": forward(fused)}, blocks, repeats, warmup, device)
    train = race({"torch": forward_backward(ref), "fused": forward_backward(fused)}, blocks,
                 repeats, warmup, device)
    flops = lstm_flops(T, B, I, H, layers)
    return {
        "fwd_torch": fwd["torch"][0], "fwd_fused": fwd["fused"][0],
        "train_torch": train["torch"][0], "train_fused": train["fused"][0],
        "faults_torch": (fwd["torch"][1], train["torch"][1]),
        "faults_fused": (fwd["fused"][1], train["fused"][1]),
        "gflops_fwd_fused": flops / fwd["fused"][0] / 1e9,
        "gflops_fwd_torch": flops / fwd["torch"][0] / 1e9,
    }


_MEMORY_SCRIPT = """
import sys, torch
from torch import nn
from fused_lstm import FusedLSTM
T, B, I, H, L = map(int, sys.argv[1:6])
model = (FusedLSTM if sys.argv[6] == "fused" else nn.LSTM)(I, H, num_layers=L)
x = torch.randn(T, B, I)
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current resident size
base = status("VmRSS:")
out, _ = model(x)
out.sum().backward()
print(status("VmHWM:") - base)
"""


def training_peak_memory(shape, impl: str) -> float:
    """Peak resident memory of one forward+backward above the memory held before it, in MB,
    measured in a fresh process (so neither implementation's caches count for the other)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, *map(str, shape), impl],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 2**20


def print_table(rows, peak: float) -> None:
    header = ("shape (T,B,I,H,L)", "what", "fwd torch ms", "fwd fused ms", "fwd speedup",
              "fwd GF/s fused (% peak)", "f+b torch ms", "f+b fused ms", "f+b speedup",
              "page faults/call (fwd, f+b) torch / fused", "train peak MB torch / fused")
    lines = [header]
    for shape, what, r in rows:
        memory = (f"{r['mem_torch']:.1f} / {r['mem_fused']:.1f}" if "mem_torch" in r else "-")
        lines.append((
            ",".join(map(str, shape)), what,
            f"{r['fwd_torch'] * 1e3:.3f}", f"{r['fwd_fused'] * 1e3:.3f}",
            f"{r['fwd_torch'] / r['fwd_fused']:.2f}x",
            f"{r['gflops_fwd_fused']:.0f} ({100 * r['gflops_fwd_fused'] / peak:.0f}%)" if peak else
            f"{r['gflops_fwd_fused']:.0f}",
            f"{r['train_torch'] * 1e3:.3f}", f"{r['train_fused'] * 1e3:.3f}",
            f"{r['train_torch'] / r['train_fused']:.2f}x",
            "{:.0f}, {:.0f} / {:.0f}, {:.0f}".format(*r["faults_torch"], *r["faults_fused"]),
            memory,
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    fmt = lambda line: "| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths)) + " |"
    print(fmt(lines[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lines[1:]:
        print(fmt(line))


def save_plot(rows, path: str, malloc: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [",".join(map(str, shape)) for shape, _, _ in rows]
    fwd = [r["fwd_torch"] / r["fwd_fused"] for _, _, r in rows]
    train = [r["train_torch"] / r["train_fused"] for _, _, r in rows]
    xs = range(len(rows))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar([x - 0.2 for x in xs], fwd, width=0.4, label="forward")
    ax.bar([x + 0.2 for x in xs], train, width=0.4, label="forward + backward")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(list(xs), labels)
    ax.set_xlabel("shape (T, B, I, H, layers)")
    ax.set_ylabel("speedup over nn.LSTM (x)")
    ax.set_title(f"FusedLSTM vs nn.LSTM, CPU, {torch.get_num_threads()} threads, float32, "
                 f"malloc: {malloc}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"saved {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", action="append", default=None,
                        help="T,B,I,H,layers (repeatable); default: the four standard shapes")
    parser.add_argument("--blocks", type=int, default=4, help="alternating blocks per implementation")
    parser.add_argument("--repeats", type=int, default=50,
                        help="timed calls per block (fewer for slow shapes: ~1 s per block)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls before each block")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="cuda: against cuDNN nn.LSTM, timed with CUDA events")
    parser.add_argument("--plot", default=None, help="save a bar chart of the speedups to this PNG")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip measuring peak training memory (a fresh process per shape)")
    parser.add_argument("--steady-malloc", action="store_true",
                        help="keep freed memory in glibc's heap (see steady_malloc): no page "
                             "faults per call for either implementation")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.steady_malloc:
        steady_malloc()
    shapes = ([(tuple(int(v) for v in s.split(",")), "custom") for s in args.shape]
              if args.shape else (CUDA_SHAPES if args.device == "cuda" else SHAPES))
    threads = torch.get_num_threads()
    # The FMA peak is read before the first shape and after each one: the machine may be
    # shared and its speed can change within a run, and one reading can land on a busy
    # moment. "% of peak" is against the highest reading of the run (conservative: a low
    # reading would inflate every percentage).
    read_peak = lambda n: [fused_lstm.fma_peak_gflops(threads) or 0.0 for _ in range(n)]
    readings = read_peak(5) if args.device == "cpu" else []
    print(f"torch {torch.__version__}, fused_lstm backend {fused_lstm.backend()}, CPU ISA "
          f"{fused_lstm.cpu_isa()}, {threads} threads, float32")
    if args.device == "cpu":
        own = fused_lstm.cpu_isa() == "avx512" and fused_lstm.cpu_gemm() == "own"
        big = ("fused_lstm's own AVX-512 GEMM (csrc/cpu/isa/gemm.h)" if own
               else "torch's BLAS (MKL)")
        print("GEMMs: fused register-tiled kernels for the recurrent steps (forward and backward) "
              f"and for small layers' weight gradients and dx; {big} for the hoisted input "
              f"projection and larger layers' dx and weight gradients (cpu_gemm "
              f"{fused_lstm.cpu_gemm()})")
    else:
        print(f"GPU {torch.cuda.get_device_name()}: cuBLAS (through ATen) per step + fused cell "
              "kernels, against cuDNN nn.LSTM")
    malloc = "steady (--steady-malloc)" if args.steady_malloc else "glibc defaults"
    print(f"{args.blocks} blocks x up to {args.repeats} repeats per implementation, alternating; "
          f"median per block, best block; malloc: {malloc}")
    rows = []
    for shape, what in shapes:
        print(f"  timing {shape} ...", flush=True)
        result = bench_shape(shape, args.blocks, args.repeats, args.warmup, args.device)
        if not args.no_memory and args.device == "cpu":
            result["mem_torch"] = training_peak_memory(shape, "torch")
            result["mem_fused"] = training_peak_memory(shape, "fused")
        rows.append((shape, what, result))
        readings += read_peak(3) if readings else []
    peak = max(readings) if readings and max(readings) > 0 else None
    print(f"measured fp32 FMA peak: {peak:.0f} GFLOP/s, the highest of {len(readings)} readings "
          f"during the run (lowest {min(readings):.0f})" if peak else
          "FMA peak: not measured (generic build or GPU)")
    print_table(rows, peak)
    if args.plot:
        save_plot(rows, args.plot, malloc)


if __name__ == "__main__":
    main()
