// A float32 GEMM for the large products around the time loops: the hoisted input projection,
// dx and the weight gradients. Written over Vec with the time loops' register tile (include
// after tile.h, cell_rows.h and weight_grads.h). MKL takes its AVX2 path on AMD CPUs: 120-200 GFLOP/s on two
// Zen 5 cores at the LSTM's shapes, against a ~450 GFLOP/s FMA peak.
//
// C[m, n] = op(A)[m, k] @ op(B)[k, n] + beta C, row-major as blas.h's gemm.
// - op(B) is packed once per call into panels of 4W columns, [k][4W] each (zero past n),
//   shared by the threads. op(A) = A is read in place, a tile's R rows of it at a time; op(A)
//   = A^T is packed per block of rows and K into strips of kTileRows rows, [k][kTileRows]
//   each (A's columns are its rows).
// - Each thread owns a range of C's rows (or, for a short C, of its panels). Loops, per
//   thread: row blocks, passes over K, panels, tiles. With A^T packed, a pass is one K block
//   of kGemmKBlock (a panel's block, 64 KB with AVX-512, read from L1 and L2 by the row
//   block's tiles) and the row block's C rows stay in L2 across the passes. With A read in
//   place, a pass takes up to kGemmPassRows (see there) and the tile keeps its running sum
//   in L1 between K blocks, so C is written once per pass. (The panel loop outermost, each
//   panel's C block kept in L1 over K chunks of 1024, measured 4-20% slower; K blocks
//   of 64 or 32, 5-30% slower; of 128, which fit L1, 1-6% slower than 256 at the LSTM's
//   shapes, as each K block passes through the C tile once; of 512 within noise of 256 or
//   slower.)
// - Each K block's sum starts from zero in registers and is then added to the running sum:
//   a chain of k_block + k / k_block terms, and the same sums whatever the thread count.

// Rows of C per block with A^T packed: up to kGemmCBytes of C rows, touched once per K block,
// and each K block of a panel is reused over that many rows (A read in place: always
// kGemmMaxRowBlock, gemm_rows). Measured at the LSTM's shapes (M, K, N up
// to 6400, 2048, 4096): 256 KB to 1.5 MB and 96 to 192 rows within noise of each other,
// 192 KB with 96 rows 3-25% slower.
constexpr int64_t kGemmCBytes = int64_t{1} << 20;
constexpr int64_t kGemmMaxRowBlock = 32 * kTileRows;

inline int64_t gemm_row_block(int64_t n) {
  const int64_t panels_cols = column_panels(n) * 4 * Vec::kWidth;
  const int64_t rows = kGemmCBytes / (panels_cols * int64_t{sizeof(float)});
  return imin(kGemmMaxRowBlock, rows < kTileRows ? kTileRows : rows / kTileRows * kTileRows);
}

constexpr int64_t kGemmKBlock = 2 * kKBlock;

inline int64_t gemm_k_block(int64_t k_block) { return k_block > 0 ? k_block : kGemmKBlock; }

// Rows of op(B) per pass over C with op(A) read in place: whole sums of sum_block terms, up to
// kGemmPassRows (a 256 KB block of a panel with AVX-512, which the row block's tiles read
// from L2). Measured on two Zen 5 cores at (M, N, K) = (1600, 4096, 1024), the large hidden
// layer's projection, medians of 8 alternating blocks: 349 GFLOP/s with a pass per sum (C,
// 60 rows of it, through L2 for every sum), 363 with passes of 1024 rows, 377 with those and
// 192-row blocks; (1600, 1024, 4096) and (6400, 512, 2048) even (365 / 366, 379 / 375).
constexpr int64_t kGemmPassRows = 1024;
inline int64_t gemm_pass_k(int64_t k, int64_t sum_block) {
  const int64_t sums = imin(k, kGemmPassRows) / sum_block;
  return sums < 1 ? sum_block : sums * sum_block;
}

// One thread's strips of op(A) = A^T: a row block by a K block.
inline int64_t gemm_strip_floats(int64_t n, int64_t k, int64_t k_block) {
  return gemm_row_block(n) * imin(gemm_k_block(k_block), k);
}

// The packed op(B) and each thread's strips.
int64_t gemm_scratch_floats(int64_t n, int64_t k, int64_t k_block, int threads) {
  return column_panels(n) * k * 4 * Vec::kWidth + threads * gemm_strip_floats(n, k, k_block);
}

// op(B) column panel p into panels + p * k * 4W.
void gemm_pack_b(const GemmArgs& g, int64_t p, float* panels) {
  constexpr int W = Vec::kWidth;
  float* panel = panels + p * g.k * 4 * W;
  if (!g.trans_b) return pack_column_panel(g.b, g.ldb, g.k, g.n, p, panel);
  for (int v = 0; v < 4; ++v) {  // op(B) = B^T: rows col0.. of B, transposed
    const int64_t col0 = p * 4 * W + v * W;
    pack_transposed(g.b + col0 * g.ldb, g.ldb, g.n - col0, g.k, panel + v * W, 4 * W, W);
  }
}

// Rows of A that gemm_pack_a prefetches ahead: its runs of a few hundred floats lie a whole
// row of A apart (16 KB at 4H = 4096), across pages, where the hardware prefetchers do not
// follow. Measured on the weight-gradient GEMMs: 368-385 -> 404-417 GFLOP/s (M, K, N =
// 4096, 1600, 1024) and 311 -> 358 (4096, 6400, 512); 4 to 32 rows ahead within 2%.
constexpr int64_t kPackAheadRows = 8;

// op(A) = A^T rows [m0, m0 + rows), K [k0, k0 + kb) into strips of kTileRows rows,
// [kb][kTileRows] each, one contiguous run of each row of A at a time (a strip's few floats
// per row would walk A at a stride of whole rows, 4 KB and more: one L1 set for all of them);
// rows past the end are zero.
void gemm_pack_a(const GemmArgs& g, int64_t m0, int64_t rows, int64_t k0, int64_t kb,
                 float* strips) {
  for (int64_t kk = 0; kk < kb; ++kk) {
    const float* src = g.a + (k0 + kk) * g.lda + m0;
    if (k0 + kk + kPackAheadRows < g.k) {
      const float* ahead = src + kPackAheadRows * g.lda;
      for (int64_t i = 0; i < rows; i += 64 / sizeof(float)) {
        asm volatile("prefetcht0 (%0)" : : "r"(ahead + i));  // no memory clobber: see tile.h
      }
    }
    for (int64_t i0 = 0; i0 < rows; i0 += kTileRows) {
      const int64_t n = imin(kTileRows, rows - i0);  // kTileRows < W: one masked vector
      Vec::load(src + i0, n).store(strips + (i0 * kb + kk * kTileRows), kTileRows);
    }
  }
}

// C rows [0, R) by the panel's `cols` columns (c points at the tile's first element) +=
// op(A) rows @ panel over kb, in sums of sum_block terms; `first`: the first K block, where
// C = beta C + the sum instead. op(A)'s row r at k is a[r + k * kTileRows] in a packed strip
// (kPacked), else a[r * lda + k] (rows of A read in place: no packing needed). Between the
// sums the running total is parked in `partial` (R x 4W floats, in L1), not in C: C is
// read at most once per call and written once, whatever kb / sum_block, and the additions
// are the same as adding each sum into C. (tile.h's tile_block parks sums the same way, but
// indexes its rows as a_rows[r][k] and knows no C or beta: a packed strip's rows interleave.)
template <int R, bool kPacked>
LSTM_TILE_INLINE void gemm_tile(const float* a, int64_t lda, const float* panel, int64_t kb,
                                int64_t sum_block, float* c, int64_t ldc, int64_t cols,
                                bool first, float beta, float* partial) {
  constexpr int W = Vec::kWidth;
  constexpr int64_t step = kPacked ? kTileRows : 1;
  const float* rows[R];
  for (int r = 0; r < R; ++r) rows[r] = kPacked ? a + r : a + r * lda;
  const float* w = panel;
  for (int64_t s0 = 0; s0 < kb; s0 += sum_block) {
    const int64_t s1 = imin(kb, s0 + sum_block);
    Vec acc[R][4];
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < 4; ++v) acc[r][v] = Vec(0.0f);
    for (int64_t kk = s0; kk < s1; ++kk, w += 4 * W) {
      Vec wv[4];
      for (int v = 0; v < 4; ++v) wv[v] = Vec::load(w + v * W);
      for (int r = 0; r < R; ++r) {
        const Vec xr(rows[r][kk * step]);
        for (int v = 0; v < 4; ++v) acc[r][v] = fmadd(xr, wv[v], acc[r][v]);
      }
    }
    const bool last = s1 == kb;
    for (int r = 0; r < R; ++r) {
      for (int v = 0; v < 4; ++v) {
        const int64_t n = imin(W, cols - v * W);
        if (n <= 0) break;
        float* p = c + r * ldc + v * W;
        float* part = partial + (r * 4 + v) * W;
        Vec out = acc[r][v];
        if (s0 > 0) {
          out = out + Vec::load(part);
        } else if (!first) {
          out = out + load_n<Vec>(p, n);
        } else if (beta != 0.0f) {  // beta = 0 never reads C (it may hold NaN)
          out = fmadd(Vec(beta), load_n<Vec>(p, n), out);
        }
        if (last) {
          store_n(out, p, n);
        } else {
          out.store(part);
        }
      }
    }
  }
}

// Panels [p_lo, p_hi) of C rows [m_lo, m_hi); strips: this thread's scratch for op(A) = A^T.
void gemm_rows(const GemmArgs& g, const float* panels, int64_t m_lo, int64_t m_hi,
               int64_t p_lo, int64_t p_hi, float* strips) {
  constexpr int W = Vec::kWidth;
  const int64_t sum_block = gemm_k_block(g.k_block);
  // A read in place: C is written once per pass of up to kGemmPassRows rows of op(B), so its
  // rows need not stay in L2 and a row block can take kGemmMaxRowBlock rows (more tiles per
  // panel block brought into L2). Packed strips of A^T: one pass per sum.
  const int64_t row_block = g.trans_a ? gemm_row_block(g.n) : kGemmMaxRowBlock;
  const int64_t pass_k = g.trans_a ? sum_block : gemm_pass_k(g.k, sum_block);
  alignas(64) float partial[kTileRows * 4 * W];
  for (int64_t m0 = m_lo; m0 < m_hi; m0 += row_block) {
    const int64_t rows = imin(row_block, m_hi - m0);
    for (int64_t k0 = 0; k0 < g.k; k0 += pass_k) {
      const int64_t kb = imin(pass_k, g.k - k0);
      if (g.trans_a) gemm_pack_a(g, m0, rows, k0, kb, strips);
      for (int64_t p = p_lo; p < p_hi; ++p) {
        const float* panel = panels + (p * g.k + k0) * 4 * W;
        const int64_t cols = imin(4 * W, g.n - p * 4 * W);
        for (int64_t r0 = 0; r0 < rows; r0 += kTileRows) {
          float* c = g.c + (m0 + r0) * g.ldc + p * 4 * W;
          with_rows(imin(kTileRows, rows - r0), [&]<int R>() {
            if (g.trans_a) {
              gemm_tile<R, true>(strips + r0 * kb, 0, panel, kb, sum_block, c, g.ldc, cols,
                                 k0 == 0, g.beta, partial);
            } else {
              gemm_tile<R, false>(g.a + (m0 + r0) * g.lda + k0, g.lda, panel, kb, sum_block, c,
                                  g.ldc, cols, k0 == 0, g.beta, partial);
            }
          });
        }
      }
    }
  }
}

// m, n, k >= 1 (blas.h's gemm handles the empty cases).
void gemm(const GemmArgs& g, float* scratch) {
  const int64_t panels_n = column_panels(g.n), tiles = (g.m + kTileRows - 1) / kTileRows;
  const int64_t strip_floats = gemm_strip_floats(g.n, g.k, g.k_block);
  float* panels = scratch;
#pragma omp parallel num_threads(g.num_threads)
  {
    const int64_t tid = omp_get_thread_num(), threads = omp_get_num_threads();
#pragma omp for schedule(static)
    for (int64_t p = 0; p < (g.b_packed ? 0 : panels_n); ++p) gemm_pack_b(g, p, panels);
    float* strips = scratch + panels_n * g.k * 4 * Vec::kWidth + tid * strip_floats;
    // Rows split in whole tiles where each thread gets two or more; else the panels.
    if (tiles >= 2 * threads || panels_n < threads) {
      const int64_t per = (tiles + threads - 1) / threads * kTileRows;
      const int64_t m_lo = imin(g.m, tid * per);
      gemm_rows(g, panels, m_lo, imin(g.m, m_lo + per), 0, panels_n, strips);
    } else {
      const int64_t per = (panels_n + threads - 1) / threads;
      const int64_t p_lo = imin(panels_n, tid * per);
      gemm_rows(g, panels, 0, g.m, p_lo, imin(panels_n, p_lo + per), strips);
    }
  }
}
