// One LSTM layer in one direction on the CPU, over raw pointers: the time loop in C++, with
// library GEMMs and the fused cell passes of isa/cell_rows.h. This is the general pass
// (float64, projections, CPUs without AVX2); float32 otherwise runs the register-tiled loops
// of isa/fused_forward.h and isa/fused_backward.h, which keep the same row layout.
//
// Rows are time-major; step t owns rows [offsets[t], offsets[t] + rows(t)), the first rows(t)
// sequences of the batch (sorted by decreasing length, as PackedSequence keeps them; every
// step has all B rows when the sequences have equal length). A sequence that has ended (or,
// in the reverse direction, not yet begun) keeps its state in the running h/c buffers, so
// each step works on a prefix of the batch and h_n/c_n are whatever those buffers hold last.
//
// forward:  gates = x @ W_ih^T                 one GEMM over all rows (bias added below)
//           per step t, on its n = rows(t) rows:
//             gates[t] += h[:n] @ W_hh^T       one GEMM for all four gates
//             fused pass: + bias, sigmoid/tanh, c[:n], h = o * tanh(c)
//             with a projection: h[:n] = h @ W_hr^T   one GEMM
// backward: per step in reverse order of the forward:
//             with a projection: dh_raw = (dy[t] + dh[:n]) @ W_hr   one GEMM
//             fused pass: dgates[t] and dc[:n] from dh and dc
//             dh[:n] = dgates[t] @ W_hh       one GEMM
//           dW_ih, dW_hh, dW_hr, dx: one GEMM each over all rows.
// Nothing is allocated inside the time loops.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../ops.h"
#include "blas.h"
#include "buffer_cache.h"
#include "isa/kernels.h"

namespace fused_lstm::cpu {

// Everything one layer and direction reads and writes. Pointers the caller owns; sizes as in
// LayerSizes (ops.h). `w_hr` is null without a projection (then P == H).
template <typename T>
struct LayerParams {
  int64_t T_, B, I, H, P;
  const std::vector<int64_t>* offsets;  // T_ + 1 row offsets
  bool reverse;
  const T *x, *w_ih, *w_hh, *w_hr, *bias;

  int64_t rows(int64_t t) const { return (*offsets)[t + 1] - (*offsets)[t]; }
  int64_t offset(int64_t t) const { return (*offsets)[t]; }
  // Time index of processing step s (s = 0 is the first step this direction runs).
  int64_t time_of(int64_t s) const { return reverse ? T_ - 1 - s : s; }
};

// Rows of a fused pass handed to one thread: enough hidden units that the OpenMP
// fork/join (a few microseconds) is paid back.
inline int64_t rows_per_task(int64_t H) {
  constexpr int64_t kUnitsPerTask = 4096;
  return std::max<int64_t>(1, kUnitsPerTask / std::max<int64_t>(H, 1));
}

// Scratch of layer_gemm kept over calls with the same op(B) and n, k (the inference
// projection, one chunk of steps at a time), so that op(B) is packed once.
struct GemmReuse {
  at::Tensor scratch;
  bool b_packed = false;
};

// The GEMMs over all rows of a layer (the input projection, dx, the weight gradients), as
// blas.h's gemm. k_block > 0: each block of that many terms of the sum is summed from zero,
// then added up (for the BLAS, one GEMM per block); 0: the kernel's own K blocks, or one
// BLAS call. In float32 the ISA's own GEMM where it has one runs when active_gemm() says
// so (kernels.h), and also for row blocks (the BLAS would take one call per block: 50 per
// weight gradient at (T, B) = (50, 32), each with the BLAS's fixed cost of a few
// microseconds) and under torch.use_deterministic_algorithms (its sums do not depend on the
// thread count; MKL's would need one thread).
template <typename T>
void layer_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a,
                int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc,
                int64_t k_block = 0, GemmReuse* reuse = nullptr) {
  if constexpr (std::is_same_v<T, float>) {
    const FusedKernels kernels = fused_kernels();
    const bool own = active_gemm() == Gemm::kOwn || (k_block > 0 && k_block < k) ||
                     at::globalContext().deterministicAlgorithms();
    if (kernels.gemm && own && m > 0 && n > 0 && k > 0) {
      const int threads = at::get_num_threads();
      GemmReuse fresh;
      GemmReuse& r = reuse ? *reuse : fresh;
      if (!r.scratch.defined()) {
        r.scratch = cached_empty({kernels.gemm_scratch_floats(n, k, k_block, threads)},
                                 at::TensorOptions().dtype(at::kFloat));
      }
      kernels.gemm({trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc, k_block, threads,
                    r.b_packed},
                   r.scratch.data_ptr<float>());
      r.b_packed = true;
      return;
    }
  }
  const int64_t block = k_block > 0 ? k_block : std::max<int64_t>(k, 1);
  for (int64_t k0 = 0; k0 == 0 || k0 < k; k0 += block) {  // op(A) columns, op(B) rows k0..
    gemm<T>(trans_a, trans_b, m, n, std::min(block, k - k0), a + (trans_a ? k0 * lda : k0), lda,
            b + (trans_b ? k0 : k0 * ldb), ldb, k0 == 0 ? beta : T(1), c, ldc);
  }
}

// dx = dgates @ W_ih, one GEMM over all N rows.
template <typename T>
void input_gradient(const LayerSizes& n, const T* dgates, const T* w_ih, T* dx) {
  layer_gemm<T>(false, false, n.N, n.I, 4 * n.H, dgates, 4 * n.H, w_ih, n.I, T(0), dx, n.I);
}

// dW [m, n] = A^T @ B (+ beta dW) over k rows of A [k, m] and B [k, n], summed in blocks of
// grad_row_block rows (ops.h) for its rounding error.
template <typename T>
void weight_grad_gemm(int64_t m, int64_t n, int64_t k, const T* a, const T* b, T beta, T* dw) {
  const int64_t block = grad_row_block(k, m * n * static_cast<int64_t>(sizeof(T)));
  layer_gemm<T>(true, false, m, n, k, a, m, b, n, beta, dw, n, block < k ? block : 0);
}

// After the time loop: dW_hh = dgates^T @ h_prev, dW_ih = dgates^T @ x (over all N rows,
// see weight_grad_gemm), dx = dgates @ W_ih. `h_prev` holds each row's previous h; without it
// (every sequence full length) the previous h of a row is the output one step earlier, or h0
// on the first step, and dW_hh sums the shifted output plus h0 (the shifted rows need no copy).
template <typename T>
void weight_gradients(const LayerSizes& n, const T* dgates, const T* h_prev, const T* x,
                      const T* w_ih, T* dx, T* dw_ih, T* dw_hh, const T* y, const T* h0,
                      bool reverse) {
  const int64_t G = 4 * n.H, B = n.B, rest = n.N - B;
  if (h_prev) {
    weight_grad_gemm<T>(G, n.P, n.N, dgates, h_prev, T(0), dw_hh);
  } else {  // forward: rows [B, N) follow y rows [0, N - B); reverse: rows [0, N - B), y [B, N)
    weight_grad_gemm<T>(G, n.P, rest, dgates + (reverse ? 0 : B * G), y + (reverse ? B * n.P : 0),
                        T(0), dw_hh);
    weight_grad_gemm<T>(G, n.P, B, dgates + (reverse ? rest * G : 0), h0, T(1), dw_hh);
  }
  weight_grad_gemm<T>(G, n.I, n.N, dgates, x, T(0), dw_ih);
  if (dx) input_gradient(n, dgates, w_ih, dx);
}

template <typename T>
class ForwardPass {
 public:
  // h [B, P] and c [B, H] hold h0/c0 on entry and h_n/c_n on exit. `gates` has room for
  // `chunk` steps of rows ([chunk * B, 4H] at most) unless `train`, when it holds all rows
  // and keeps the activated gates; `cell` [N, H] is written only when `train`. `h_raw`
  // [B, H] is scratch for the projection (unused without one).
  ForwardPass(const LayerParams<T>& p, bool train, int64_t chunk, T* gates, T* y, T* cell,
              T* h, T* c, T* h_raw)
      : p_(p), train_(train), chunk_(chunk), gates_(gates), y_(y), cells_(cell), h_(h),
        c_(c),
        h_raw_(h_raw) {}

  void Run() {
    const int64_t G = 4 * p_.H;
    // The input projection runs one chunk of steps at a time; a chunk's rows are contiguous
    // in either direction.
    GemmReuse w_ih_packed;
    for (int64_t s0 = 0; s0 < p_.T_; s0 += chunk_) {
      const int64_t s1 = std::min(s0 + chunk_, p_.T_);
      const int64_t t_lo = std::min(p_.time_of(s0), p_.time_of(s1 - 1));
      const int64_t t_hi = std::max(p_.time_of(s0), p_.time_of(s1 - 1));
      const int64_t row_lo = p_.offset(t_lo), row_hi = p_.offset(t_hi + 1);
      T* ws = train_ ? gates_ + row_lo * G : gates_;
      layer_gemm<T>(false, true, row_hi - row_lo, G, p_.I, p_.x + row_lo * p_.I, p_.I, p_.w_ih,
                    p_.I, T(0), ws, G, 0, &w_ih_packed);
      for (int64_t s = s0; s < s1; ++s) {
        const int64_t t = p_.time_of(s);
        Iterate(t, ws + (p_.offset(t) - row_lo) * G);
      }
    }
  }

 private:
  void Iterate(int64_t t, T* gates_t) {
    const int64_t n = p_.rows(t), row = p_.offset(t), H = p_.H, P = p_.P, G = 4 * H;
    gemm<T>(false, true, n, G, P, h_, P, p_.w_hh, P, T(1), gates_t, G);
    T* cell_t = train_ ? cells_ + row * H : nullptr;
    // Without a projection h goes straight to the output and the running state.
    T* h_out = p_.w_hr ? h_raw_ : y_ + row * P;
    at::parallel_for(0, n, rows_per_task(H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        cell_kernels_.forward_row(H, gates_t + b * G, p_.bias, c_ + b * H,
                          cell_t ? cell_t + b * H : nullptr, h_out + b * H,
                          p_.w_hr ? nullptr : h_ + b * H);
      }
    });
    if (p_.w_hr) {
      gemm<T>(false, true, n, P, H, h_raw_, H, p_.w_hr, H, T(0), y_ + row * P, P);
      std::copy(y_ + row * P, y_ + (row + n) * P, h_);
    }
  }

  const LayerParams<T>& p_;
  const CellKernels<T> cell_kernels_ = cell_kernels<T>();
  const bool train_;
  const int64_t chunk_;
  T *gates_, *y_, *cells_, *h_, *c_, *h_raw_;
};

template <typename T>
class BackwardPass {
 public:
  // Saved by the forward: y [N, P], gates [N, 4H] (activated), cell [N, H]; h0 [B, P],
  // c0 [B, H]. `dy` [N, P] may be null. dh [B, P] and dc [B, H] hold dL/dh_n, dL/dc_n on
  // entry and dL/dh0, dL/dc0 on exit. Scratch: h_prev [N, P] (each row's previous h, for
  // dW_hh); with a projection dh_all [N, P], h_raw [N, H] and dh_raw [B, H].
  struct Buffers {
    T *dgates, *dh, *dc, *h_prev, *dh_all, *h_raw, *dh_raw;
  };

  BackwardPass(const LayerParams<T>& p, const T* h0, const T* c0, const T* y, const T* gates,
               const T* cell, const T* dy, const Buffers& buf)
      : p_(p), h0_(h0), c0_(c0), y_(y), gates_(gates), cell_(cell), dy_(dy), buf_(buf) {}

  // Fills dx [N, I] (unless null), dw_ih [4H, I], dw_hh [4H, P], dw_hr [P, H] (with a
  // projection).
  void Run(T* dx, T* dw_ih, T* dw_hh, T* dw_hr) {
    const int64_t N = p_.offset(p_.T_);
    for (int64_t s = p_.T_ - 1; s >= 0; --s) {
      Iterate(s);
    }
    weight_gradients<T>({p_.T_, p_.B, N, p_.I, p_.H, p_.P, {}}, buf_.dgates, buf_.h_prev, p_.x,
                        p_.w_ih, dx, dw_ih, dw_hh, y_, h0_, p_.reverse);
    if (p_.w_hr) {
      weight_grad_gemm<T>(p_.P, p_.H, N, buf_.dh_all, buf_.h_raw, T(0), dw_hr);
    }
  }

 private:
  void Iterate(int64_t s) {
    const int64_t t = p_.time_of(s), n = p_.rows(t), row = p_.offset(t);
    const int64_t H = p_.H, P = p_.P, G = 4 * H;
    // Rows [0, n_cont) continue from the previous step's rows; rows [n_cont, n) start here
    // from h0/c0 (only in the reverse direction of a packed batch, or at the first step).
    const int64_t t_prev = s > 0 ? p_.time_of(s - 1) : -1;
    const int64_t n_cont = s > 0 ? std::min(n, p_.rows(t_prev)) : 0;
    const int64_t row_prev = s > 0 ? p_.offset(t_prev) : 0;
    T* h_prev = buf_.h_prev + row * P;
    std::copy(y_ + row_prev * P, y_ + (row_prev + n_cont) * P, h_prev);
    std::copy(h0_ + n_cont * P, h0_ + n * P, h_prev + n_cont * P);

    // The cell's dL/dh is dh_a + dh_b, rows of dh_stride elements (either may be null).
    const T* dh_a = dy_ ? dy_ + row * P : nullptr;
    const T* dh_b = buf_.dh;
    int64_t dh_stride = P;
    if (p_.w_hr) {  // through the projection: dL/dh_raw = (dy + dh) @ W_hr
      T* dh_t = buf_.dh_all + row * P;
      for (int64_t k = 0; k < n * P; ++k) dh_t[k] = (dh_a ? dh_a[k] : T(0)) + dh_b[k];
      gemm<T>(false, false, n, H, P, dh_t, P, p_.w_hr, H, T(0), buf_.dh_raw, H);
      dh_a = buf_.dh_raw;
      dh_b = nullptr;
      dh_stride = H;
    }
    T* h_raw = p_.w_hr ? buf_.h_raw + row * H : nullptr;
    at::parallel_for(0, n, rows_per_task(H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const T* c_prev = b < n_cont ? cell_ + (row_prev + b) * H : c0_ + b * H;
        cell_kernels_.backward_row(H, gates_ + (row + b) * G, c_prev, cell_ + (row + b) * H,
                                   dh_a ? dh_a + b * dh_stride : nullptr,
                                   dh_b ? dh_b + b * dh_stride : nullptr, buf_.dc + b * H,
                                   buf_.dgates + (row + b) * G, h_raw ? h_raw + b * H : nullptr);
      }
    });
    gemm<T>(false, false, n, P, G, buf_.dgates + row * G, G, p_.w_hh, P, T(0), buf_.dh, P);
  }

  const LayerParams<T>& p_;
  const CellKernels<T> cell_kernels_ = cell_kernels<T>();
  const T *h0_, *c0_, *y_, *gates_, *cell_, *dy_;
  const Buffers buf_;
};

}  // namespace fused_lstm::cpu
