// The CPU kernels compiled once per instruction set, and the choice among them at run time.
// Each ISA's code lives in its own translation unit (isa_*.cpp) compiled for that ISA; the
// rest of the library is built for baseline x86-64, so a build runs on any x86-64 CPU.
#pragma once

#include <cstdint>

namespace fused_lstm::cpu {

enum class Isa { kGeneric, kAvx2, kAvx512 };

// Fused per-row passes of the cell (see cell_rows.h).
template <typename T>
struct CellKernels {
  void (*forward_row)(int64_t H, T* a, const T* bias, T* c, T* cell_out, T* h_out, T* h_state);
  void (*backward_row)(int64_t H, const T* a, const T* c_prev, const T* c_t, const T* dh_a,
                       const T* dh_b, T* dc, T* da, T* h_raw);
};

// One layer's forward time loop, fused (isa/fused_forward.h); float32, no projection.
struct FusedForwardArgs {
  int64_t T, B, I, H;
  const int64_t* offsets;  // T + 1 row offsets (see LayerSizes)
  bool reverse;
  bool hoisted;            // x @ W_ih^T is already in `gates`; the kernel only adds h @ W_hh^T
  int64_t s0, s1;          // the processing steps to run
  // The bias is b_ih + b_hh, summed as the panels are packed; either may be null.
  const float *x, *w_ih, *w_hh, *b_ih, *b_hh, *h0;
  // [rows, 4H] starting at row gates_row0: the hoisted projection in, the activated gates out
  // when `cell` is given (training); null when neither.
  float* gates;
  int64_t gates_row0;
  float* y;     // [N, H] output
  float* cell;  // [N, H] cell states, only when training
  float* c;     // [B, H] running c: c0 in, c_n out
  float* partial;  // scratch, num_threads * B * 64 floats
  int num_threads;
};

// One layer's backward time loop, fused (isa/fused_backward.h); float32, no projection.
struct FusedBackwardArgs {
  int64_t T, B, I, H;
  const int64_t* offsets;
  bool reverse;
  const float *h0, *c0, *y, *gates, *cell;  // the forward's inputs and saved state
  const float* dy;                          // [N, H] or null
  float* dgates;                            // [N, 4H] out
  float *dh, *dc;                           // [B, H]: dL/dh_n, dL/dc_n in; dL/dh0, dL/dc0 out
  float* h_prev;  // [N, H] out: each row's previous h, for dW_hh; null: not gathered
  // [B, 4H], zeros in; out: each batch row's dgates summed over its steps (a sum over rows
  // that does not depend on the thread count: deterministic).
  float* dbias;
  float* partial;  // scratch, num_threads * B * 64 floats
  int num_threads;
  // With dw_scratch (weight_grad_floats of it), the loop also computes dw_ih [4H, I] and
  // dw_hh [4H, H] from x [N, I] (isa/weight_grads.h), and then dx [N, I] too when given
  // (into ih_panels, column_panel_floats(4H, I), it packs w_ih); null: the caller does.
  const float* x;
  float *dw_scratch, *dw_ih, *dw_hh;
  const float *w_hh, *w_ih;  // [4H, H], [4H, I]
  float* ih_panels;
  float* dx;
};

// C[m, n] = op(A) @ op(B) + beta C, float32, row-major as blas.h's gemm (isa/gemm.h);
// m, n, k >= 1. Each K block of k_block terms (0: the ISA's default) is summed from zero.
struct GemmArgs {
  bool trans_a, trans_b;
  int64_t m, n, k;
  const float* a;
  int64_t lda;
  const float* b;
  int64_t ldb;
  float beta;
  float* c;
  int64_t ldc;
  int64_t k_block;
  int num_threads;
  bool b_packed;  // the scratch already holds op(B), packed by an earlier call with this b
};

// Most layers one call of FusedKernels::forward runs.
constexpr int64_t kMaxWavefrontLayers = 16;

struct FusedKernels {
  int64_t (*panel_floats)(int64_t I, int64_t H, bool hoisted);
  // Stacked layers, 1 <= num_layers <= kMaxWavefrontLayers, each with its panels (of
  // panel_floats), which it first packs from the weights when `pack` (else they hold what an
  // earlier call with the same layers packed): layer l > 0 reads layer l - 1's y as its x and
  // is not hoisted; all layers share T, B, offsets, reverse, s0, s1, num_threads and the
  // partial scratch.
  void (*forward)(const FusedForwardArgs* layers, int64_t num_layers, float* const* panels,
                  bool pack);
  // Panels of 4W columns of a row-major [K, N] matrix (W_hh for the backward).
  int64_t (*column_panel_floats)(int64_t K, int64_t N);
  // Packs W_hh into `panels` (column_panel_floats(4H, H)) and runs the time loop.
  void (*backward)(const FusedBackwardArgs& args, float* panels);
  // Scratch floats for the backward to compute the weight gradients itself; 0: it cannot.
  int64_t (*weight_grad_floats)(int64_t B, int64_t I, int64_t H, int threads);
  // Measured fp32 FMA GFLOP/s of this ISA on num_threads threads.
  double (*fma_peak_gflops)(int num_threads);
  // The ISA's own GEMM and its scratch floats; null where the BLAS is as fast (AVX2).
  int64_t (*gemm_scratch_floats)(int64_t n, int64_t k, int64_t k_block, int threads);
  void (*gemm)(const GemmArgs& args, float* scratch);
};

// The ISA in use: the best this CPU supports, unless FUSED_LSTM_CPU_ISA (generic, avx2,
// avx512) or set_isa asked for another one this CPU supports.
Isa active_isa();
const char* isa_name(Isa isa);
bool cpu_supports(Isa isa);
// Returns false (and changes nothing) if the CPU lacks it.
bool set_isa(Isa isa);
bool parse_isa(const char* name, Isa* isa);

// The GEMM that float32 layer_gemm calls for products not summed in row blocks: the ISA's
// own (isa/gemm.h) or torch's BLAS. The default is the BLAS where it is MKL on an Intel CPU,
// where MKL runs its AVX-512 code (measured on a 2-core Xeon at the LSTM's shapes: 150-200
// GFLOP/s, 10-60% ahead of the own GEMM); elsewhere the own GEMM (MKL takes its AVX2 path on
// AMD CPUs: 120-200 GFLOP/s, under half the AVX-512 peak). FUSED_LSTM_CPU_GEMM (own, blas)
// or set_gemm choose another. The own GEMM only exists for AVX-512: with the other ISAs
// both names run the BLAS.
enum class Gemm { kOwn, kBlas };
Gemm active_gemm();
void set_gemm(Gemm gemm);
const char* gemm_name(Gemm gemm);
bool parse_gemm(const char* name, Gemm* gemm);

template <typename T>
CellKernels<T> cell_kernels();  // for the active ISA; float64 always runs the generic code
// For the active ISA; null members for the generic build.
FusedKernels fused_kernels();

namespace generic {
template <typename T>
CellKernels<T> cell_kernels();
}
namespace avx2 {
CellKernels<float> cell_kernels();
FusedKernels fused_kernels();
}
namespace avx512 {
CellKernels<float> cell_kernels();
FusedKernels fused_kernels();
}

}  // namespace fused_lstm::cpu
