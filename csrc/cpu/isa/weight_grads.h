// dW_ih and dW_hh inside the backward time loop, for small layers (include after tile.h).
//
// When the backward splits the batch rows over the threads (fused_backward.h), each thread
// adds its rows' contributions dgates[t]^T @ [x_t | h_prev] to its own dW^T (I + H rows of
// 4H gates) every kDwSteps steps, while those rows are still in cache. At the seed's stacked
// shape the alternative, library GEMMs over all rows after the loop (dW_ih and dW_hh,
// M = 200, N = 50, K = 1600), took 47% of the backward's samples at ~190 GFLOP/s.
// After the loop the threads' dW^T are summed and transposed into dW_ih and dW_hh. The sum
// over threads depends on how rows are split: the binding keeps the library GEMMs when
// torch.use_deterministic_algorithms is on.

// The rows of backward step s (processing order, as the forward ran it): rows [row, row + n)
// of the layer; the first n_cont of them continued from the previous step's rows starting at
// row_prev, the others started from h0/c0 (only in the reverse direction of a packed batch,
// or at the first step). Used here and by fused_backward.h.
struct StepRows {
  int64_t row, n, row_prev, n_cont;
};

inline StepRows step_rows(const FusedBackwardArgs& a, int64_t s) {
  const int64_t t = a.reverse ? a.T - 1 - s : s, t_prev = a.reverse ? t + 1 : t - 1;
  const int64_t row = a.offsets[t], n = a.offsets[t + 1] - row;
  if (s == 0) return {row, n, 0, 0};
  return {row, n, a.offsets[t_prev], imin(n, a.offsets[t_prev + 1] - a.offsets[t_prev])};
}

// Panels of 4W columns that hold N columns (pack_columns, fused_backward.h).
inline int64_t column_panels(int64_t N) { return (N + 4 * Vec::kWidth - 1) / (4 * Vec::kWidth); }

// Column panel p of a row-major K x N matrix b (row stride ldb): panel[k][0..4W) =
// b[k][p * 4W + ...], zeros past N. The layout the backward's dh/dx tiles (pack_columns) and
// the GEMM's op(B) (gemm.h) read.
inline void pack_column_panel(const float* b, int64_t ldb, int64_t K, int64_t N, int64_t p,
                              float* panel) {
  constexpr int W = Vec::kWidth;
  for (int64_t k = 0; k < K; ++k) {
    for (int v = 0; v < 4; ++v) {
      const int64_t col0 = p * 4 * W + v * W, cols = imin(W, N - col0);
      const Vec row = cols > 0 ? load_n<Vec>(b + k * ldb + col0, cols) : Vec(0.0f);
      row.store(panel + k * 4 * W + v * W);
    }
  }
}

// Whether the backward of this layer runs on split rows (no barrier; see fused_backward).
inline bool backward_splits_rows(int64_t B, int64_t H, int threads) {
  const int64_t blocks = column_panels(H);
  return blocks < threads || (blocks < 4 * threads && B >= 2 * kTileRows * threads);
}

// Floats of scratch the fused weight gradients need (one dW^T per thread), or 0 where they
// do not pay: rows not split, or a dW^T so large that its trips through L2 cost more than
// the library GEMMs' fixed costs (backward op at B = 64, T = 100: I = H = 32 and 64, 8% and
// 11% faster; I = H = 128, a 512 KB dW^T, even; I = 64, H = 200, 845 KB, 12% slower).
int64_t weight_grad_floats(int64_t B, int64_t I, int64_t H, int threads) {
  const int64_t floats = (I + H) * 4 * H;
  const bool fits = floats * int64_t{sizeof(float)} <= kL2Bytes / 8;
  // 4H >= W: the last vector of a gate panel is loaded ending at the last gate (dw_tile).
  const bool wide = 4 * H >= Vec::kWidth;
  return backward_splits_rows(B, H, threads) && fits && wide ? threads * floats : 0;
}

// Rows of one step that add src^T @ dgates to dW^T: `rows` rows of `src` (stride ld) and
// of dgates (stride 4H).
struct DwRows {
  const float* src;
  int64_t ld, rows;
  const float* dg;
};

// The steps a thread adds to dW^T in one pass: enough rows per tile to pay for loading and
// storing its accumulators, few enough that a panel's dgates rows (64 rows x 256 B at the
// seed's shape) stay in L1 while every tile of dW^T rows reads them. At the seed's shape (16
// rows per thread and step) one step per pass made the backward op slower than with MKL
// (786-826 vs 746-776 us), 8 steps faster (713-763 vs 775-837 us; alternating runs, Zen 5).
// On the Intel Xeon, in-process A/B of the backward op, best / median block of 16: 4 steps
// 1.304 / 1.460 ms, 2 steps 1.368 / 1.489, 6 steps 1.348 / 1.530, 8 steps 1.417 / 1.552.
constexpr int kDwSteps = 4;

// A thread's pending rows: x rows, and h_prev rows (the previous output for the rows that
// continue, h0 for the others: up to two ranges per step).
struct DwChunk {
  DwRows x[kDwSteps], h[2 * kDwSteps];
  int nx = 0, nh = 0;
};

// dW^T rows [c0, c0 + R) (row stride G) by gate vectors [g0, g0 + NV W) += sum over the
// chunk's rows of src[c0 + r] * dg[g0 + v W], the register tile of the forward with the
// rows as its K. When the gates end inside the last vector, that vector is taken `shift`
// floats early, so that it ends with them, and `keep` (1 in lanes >= shift, else 0) zeroes
// the lanes its neighbour already added. No masked load or store: with one GCC keeps the
// accumulators in memory (as with _mm_prefetch, tile.h).
// Each chunk's sum starts from zero and is then added to dW^T: rounding grows like
// rows per chunk + chunks, not their product (one chain over all rows gave 4x nn.LSTM's
// error at T = 30, B = 64).
template <int R, int NV>
LSTM_TILE_INLINE void dw_tile(const DwRows* segs, int count, int64_t c0, int64_t g0, int64_t G,
                              int64_t shift, Vec keep, float* dwt) {
  constexpr int W = Vec::kWidth;
  Vec acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = Vec(0.0f);
  for (int i = 0; i < count; ++i) {
    const float* src = segs[i].src + c0;
    const float* dg = segs[i].dg + g0;
    for (int64_t b = 0; b < segs[i].rows; ++b, src += segs[i].ld, dg += G) {
      Vec wv[NV];
      for (int v = 0; v < NV; ++v) wv[v] = Vec::load(dg + v * W - (v == NV - 1 ? shift : 0));
      for (int r = 0; r < R; ++r) {
        const Vec x(src[r]);
        for (int v = 0; v < NV; ++v) acc[r][v] = fmadd(x, wv[v], acc[r][v]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NV; ++v) {
      float* p = dwt + (c0 + r) * G + g0 + v * W - (v == NV - 1 ? shift : 0);
      (fmadd(acc[r][v], v == NV - 1 ? keep : Vec(1.0f), Vec::load(p))).store(p);
    }
  }
}

// dW^T rows [0, cols), gate vectors [g0, g0 + NV W) += the rows' src^T @ dgates. Out of
// line, so that the tests can find its loops in the library (test_isa.py).
template <int NV>
__attribute__((noinline)) void dw_columns(const DwRows* segs, int count, int64_t cols,
                                          int64_t g0, int64_t G, int64_t shift, Vec keep,
                                          float* dwt) {
  for (int64_t c0 = 0; c0 < cols; c0 += kTileRows) {
    with_rows(imin(kTileRows, cols - c0), [&]<int R>() {
      dw_tile<R, NV>(segs, count, c0, g0, G, shift, keep, dwt);
    });
  }
}

// One panel of NV gate vectors from g0: dgates^T @ x into dW^T rows [0, I), dgates^T @ h_prev
// into rows [I, I + H).
template <int NV>
void dw_panel(const FusedBackwardArgs& a, const DwChunk& chunk, int64_t g0, int64_t shift,
              Vec keep, float* dwt) {
  const int64_t G = 4 * a.H;
  dw_columns<NV>(chunk.x, chunk.nx, a.I, g0, G, shift, keep, dwt);
  dw_columns<NV>(chunk.h, chunk.nh, a.H, g0, G, shift, keep, dwt + a.I * G);
}

// The thread's dW^T += its pending rows; then the chunk is empty.
void flush_weight_grads(const FusedBackwardArgs& a, DwChunk& chunk, float* dwt) {
  constexpr int64_t W = Vec::kWidth;
  const int64_t G = 4 * a.H;
  for (int64_t g0 = 0; g0 < G; g0 += 4 * W) {
    const int nv = static_cast<int>((imin(4 * W, G - g0) + W - 1) / W);
    const int64_t shift = g0 + nv * W - imin(G, g0 + 4 * W);
    float keep[W];
    for (int64_t u = 0; u < W; ++u) keep[u] = u >= shift ? 1.0f : 0.0f;
    const Vec k = Vec::load(keep);
    switch (nv) {
      case 1: dw_panel<1>(a, chunk, g0, shift, k, dwt); break;
      case 2: dw_panel<2>(a, chunk, g0, shift, k, dwt); break;
      case 3: dw_panel<3>(a, chunk, g0, shift, k, dwt); break;
      default: dw_panel<4>(a, chunk, g0, shift, k, dwt); break;
    }
  }
  chunk.nx = chunk.nh = 0;
}

// Adds a thread's rows [lo, hi) of step s to its chunk, flushing it into dW^T when it holds
// kDwSteps steps or this is the last step.
void accumulate_weight_grads(const FusedBackwardArgs& a, int64_t s, int64_t lo, int64_t hi,
                             DwChunk& chunk, float* dwt) {
  const int64_t H = a.H, I = a.I, G = 4 * H;
  const StepRows step = step_rows(a, s);
  hi = imin(hi, step.n);
  const int64_t mid = imin(hi, step.n_cont > lo ? step.n_cont : lo);  // rows [lo, mid) continue
  const float* dg = a.dgates + step.row * G;
  if (hi > lo) chunk.x[chunk.nx++] = {a.x + (step.row + lo) * I, I, hi - lo, dg + lo * G};
  if (mid > lo) {
    chunk.h[chunk.nh++] = {a.y + (step.row_prev + lo) * H, H, mid - lo, dg + lo * G};
  }
  if (hi > mid) chunk.h[chunk.nh++] = {a.h0 + mid * H, H, hi - mid, dg + mid * G};
  if (chunk.nx == kDwSteps || s == 0) flush_weight_grads(a, chunk, dwt);
}

// Columns [c_lo, c_hi) of dW^T, gate rows [g_lo, g_hi), summed over the threads in thread
// order, into out[g][c - c_lo] (row stride ld): W x W blocks, summed along the gates as
// vectors and transposed in registers (one float at a time, the strided reads of dW^T took
// 2% of the backward's samples at the seed's stock shape).
void reduce_columns(const FusedBackwardArgs& a, int threads, int64_t g_lo, int64_t g_hi,
                    int64_t c_lo, int64_t c_hi, float* out, int64_t ld) {
  constexpr int W = Vec::kWidth;
  const int64_t G = 4 * a.H, stride = (a.I + a.H) * G;
  for (int64_t g0 = g_lo; g0 < g_hi; g0 += W) {
    const int64_t ng = imin(W, g_hi - g0);
    for (int64_t c0 = c_lo; c0 < c_hi; c0 += W) {
      const int64_t nc = imin(W, c_hi - c0);
      Vec block[W];  // block[u] lane v: dW^T[c0 + u][g0 + v]
      for (int u = 0; u < W; ++u) {
        block[u] = Vec(0.0f);
        for (int tid = 0; u < nc && tid < threads; ++tid) {
          block[u] = block[u] + load_n<Vec>(a.dw_scratch + tid * stride + (c0 + u) * G + g0, ng);
        }
      }
      transpose(block);  // block[v] lane u: dW[g0 + v][c0 + u]
      for (int64_t v = 0; v < ng; ++v) store_n(block[v], out + (g0 + v) * ld + c0 - c_lo, nc);
    }
  }
}

// dw_ih and dw_hh from the threads' dW^T (its rows [0, I) and [I, I + H)), gate rows
// [g_lo, g_hi) (each thread takes its share after the loop).
void reduce_weight_grads(const FusedBackwardArgs& a, int threads, int64_t g_lo, int64_t g_hi) {
  reduce_columns(a, threads, g_lo, g_hi, 0, a.I, a.dw_ih, a.I);
  reduce_columns(a, threads, g_lo, g_hi, a.I, a.I + a.H, a.dw_hh, a.H);
}
