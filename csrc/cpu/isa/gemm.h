// Plain GEMMs on the same register tiles as the fused steps (include after
// fused_backward.h), for the backward's products over all rows: no library call, the same
// speed on every x86 vendor.

// Rows of dx computed per pass (bounds the K-blocking scratch).
constexpr int64_t kWeightGradRows = 96;

// C[lo..hi) = A[lo..hi) @ B for A row-major [*, K] (stride lda) and B given as column
// panels (pack_columns, fused_backward.h) of a [K, N] matrix; K-blocked like the steps.
// `partial` holds (hi - lo) x 4W floats.
template <int R>
void panel_tile(const float* A, int64_t lda, int64_t K, const float* panels, int64_t N,
                float* C, int64_t ldc, int64_t r0, int64_t c, int64_t k_lo, int64_t k_hi,
                float* partial) {
  constexpr int W = Vec::kWidth;
  const float* rows[kTileRows];
  for (int r = 0; r < R; ++r) rows[r] = A + (r0 + r) * lda;
  Vec acc[R][4];
  load_partial<R>(acc, partial, k_lo == 0);
  tile_accumulate<R>(rows, K, nullptr, k_lo, k_hi, panels + c * K * 4 * W, acc);
  if (k_hi < K) {
    store_partial<R>(acc, partial);
    return;
  }
  for (int r = 0; r < R; ++r) {
    for (int g = 0; g < 4; ++g) {
      const int64_t col = c * 4 * W + g * W, n = imin(W, N - col);
      if (n > 0) store_n(acc[r][g], C + (r0 + r) * ldc + col, n);
    }
  }
}

void gemm_panels(const float* A, int64_t lda, int64_t K, const float* panels, int64_t N,
                 float* C, int64_t ldc, int64_t lo, int64_t hi, int64_t c_lo, int64_t c_hi,
                 float* partial) {
  for (int64_t c = c_lo; c < c_hi; ++c) {
    for (int64_t k_lo = 0; k_lo < K; k_lo += kKBlock) {
      const int64_t k_hi = imin(K, k_lo + kKBlock);
      for (int64_t r0 = lo; r0 < hi; r0 += kTileRows) {
        float* part = partial + (r0 - lo) * 4 * Vec::kWidth;
        switch (imin(kTileRows, hi - r0)) {
          case 6: panel_tile<6>(A, lda, K, panels, N, C, ldc, r0, c, k_lo, k_hi, part); break;
          case 5: panel_tile<5>(A, lda, K, panels, N, C, ldc, r0, c, k_lo, k_hi, part); break;
          case 4: panel_tile<4>(A, lda, K, panels, N, C, ldc, r0, c, k_lo, k_hi, part); break;
          case 3: panel_tile<3>(A, lda, K, panels, N, C, ldc, r0, c, k_lo, k_hi, part); break;
          case 2: panel_tile<2>(A, lda, K, panels, N, C, ldc, r0, c, k_lo, k_hi, part); break;
          default: panel_tile<1>(A, lda, K, panels, N, C, ldc, r0, c, k_lo, k_hi, part); break;
        }
      }
    }
  }
}

// C[m0..m0+R, c-th 4W columns] (+)= sum over n in [n_lo, n_hi) of A[n][m0 + r] * X[n][cols]:
// the transposed-A product of a weight gradient (A = dgates [N, M], X = inputs [N, cols]).
template <int R>
void atb_tile(const float* A, int64_t lda, int64_t m0, const float* X, int64_t ldx,
              int64_t cols, int64_t n_lo, int64_t n_hi, int64_t c, float* C, int64_t ldc,
              bool accumulate) {
  constexpr int W = Vec::kWidth;
  int64_t m[4];  // valid columns of each of the 4 vectors
  for (int g = 0; g < 4; ++g) {
    const int64_t left = cols - (c * 4 * W + g * W);
    m[g] = left < 0 ? 0 : imin(W, left);
  }
  // The chunk's sum starts from zero and is added to C at the end: a running sum carried
  // through every chunk would round like one chain over all of N.
  Vec acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < 4; ++g) acc[r][g] = Vec(0.0f);
  const bool full = m[3] == W;
  for (int64_t n = n_lo; n < n_hi; ++n) {
    const float* x = X + n * ldx + c * 4 * W;
    Vec w[4];
    for (int g = 0; g < 4; ++g) {
      w[g] = full ? Vec::load(x + g * W) : (m[g] > 0 ? load_n<Vec>(x + g * W, m[g]) : Vec(0.0f));
    }
    const float* a = A + n * lda + m0;
    for (int r = 0; r < R; ++r) {
      const Vec s(a[r]);
      for (int g = 0; g < 4; ++g) acc[r][g] = fmadd(s, w[g], acc[r][g]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int g = 0; g < 4; ++g) {
      if (m[g] == 0) continue;
      float* out = C + (m0 + r) * ldc + c * 4 * W + g * W;
      store_n(accumulate ? acc[r][g] + load_n<Vec>(out, m[g]) : acc[r][g], out, m[g]);
    }
  }
}

// C[M, cols] (+)= A[n_lo..n_hi)^T @ X[n_lo..n_hi), output rows [m_lo, m_hi). The sum over n
// runs in chunks of kKBlock: each chunk's products stay in registers and the chunks are
// added in memory, so float32 rounding grows with the chunk length, not with N.
void gemm_at_b(const float* A, int64_t lda, const float* X, int64_t ldx, int64_t cols,
               int64_t n_lo, int64_t n_hi, float* C, int64_t ldc, bool accumulate, int64_t m_lo,
               int64_t m_hi) {
  const int64_t blocks = (cols + 4 * Vec::kWidth - 1) / (4 * Vec::kWidth);
  for (int64_t c = 0; c < blocks; ++c) {
    for (int64_t k = n_lo;; k += kKBlock) {  // at least once: an empty sum still writes C
      const int64_t k_hi = imin(n_hi, k + kKBlock);
      const bool acc = accumulate || k > n_lo;
      for (int64_t m0 = m_lo; m0 < m_hi; m0 += kTileRows) {
        switch (imin(kTileRows, m_hi - m0)) {
          case 6: atb_tile<6>(A, lda, m0, X, ldx, cols, k, k_hi, c, C, ldc, acc); break;
          case 5: atb_tile<5>(A, lda, m0, X, ldx, cols, k, k_hi, c, C, ldc, acc); break;
          case 4: atb_tile<4>(A, lda, m0, X, ldx, cols, k, k_hi, c, C, ldc, acc); break;
          case 3: atb_tile<3>(A, lda, m0, X, ldx, cols, k, k_hi, c, C, ldc, acc); break;
          case 2: atb_tile<2>(A, lda, m0, X, ldx, cols, k, k_hi, c, C, ldc, acc); break;
          default: atb_tile<1>(A, lda, m0, X, ldx, cols, k, k_hi, c, C, ldc, acc); break;
        }
      }
      if (k_hi >= n_hi) break;
    }
  }
}

// The three products after the backward time loop, threads over disjoint outputs:
//   dx = dgates @ W_ih (rows of dx), dW_ih = dgates^T x and dW_hh = dgates^T h_prev (rows of
//   the weight gradients). `wih_panels`: pack_columns of W_ih ([4H, I]).
void weight_gradients(const WeightGradArgs& a, const float* wih_panels) {
  const int64_t G = 4 * a.H;
#pragma omp parallel num_threads(a.num_threads)
  {
    const int64_t tid = omp_get_thread_num(), threads = omp_get_num_threads();
    const int64_t per_row = (a.N + threads - 1) / threads;
    const int64_t lo = imin(a.N, tid * per_row), hi = imin(a.N, lo + per_row);
    float* partial = a.partial + tid * kWeightGradRows * 4 * Vec::kWidth;
    const int64_t blocks = (a.I + 4 * Vec::kWidth - 1) / (4 * Vec::kWidth);
    for (int64_t r = lo; r < hi; r += kWeightGradRows) {
      gemm_panels(a.dgates, G, G, wih_panels, a.I, a.dx, a.I, r, imin(hi, r + kWeightGradRows),
                  0, blocks, partial);
    }
    // Gate rows of the weight gradients, in whole tiles per thread.
    const int64_t tiles = (G + kTileRows - 1) / kTileRows, per_tile = (tiles + threads - 1) / threads;
    const int64_t m_lo = imin(G, tid * per_tile * kTileRows);
    const int64_t m_hi = imin(G, m_lo + per_tile * kTileRows);
    gemm_at_b(a.dgates, G, a.x, a.I, a.I, 0, a.N, a.dw_ih, a.I, false, m_lo, m_hi);
    for (int s = 0; s < 2; ++s) {  // the second segment adds onto the first
      const WeightGradArgs::Segment& seg = a.h_segments[s];
      gemm_at_b(a.dgates + seg.dgates_row * G, G, seg.h, a.H, a.H, 0, seg.rows, a.dw_hh, a.H,
                s == 1, m_lo, m_hi);
    }
  }
}
