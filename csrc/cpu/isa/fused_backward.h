// The backward time loop of one layer, per ISA (include after tile.h). Per step, in reverse
// order of the forward:
//   1. per row: the fused cell backward (cell_rows.h) gives dgates[t] and dc; for packed
//      input the row's previous h is gathered for the dW_hh GEMM after the loop;
//   2. dh[:n] = dgates[t] @ W_hh, register-tiled over panels of 4W columns of W_hh (and, with
//      the weight gradients in the loop, dx[t] = dgates[t] @ W_ih the same way).
// One OpenMP region for the whole loop, which starts by packing the weights into column
// panels (as the forward does: each thread its own panels, or a share and one barrier). Rows
// are independent, so with enough of them each thread takes its own rows and never waits;
// otherwise each thread takes a range of column panels of dh in phase 2 and the same hidden
// units in phase 1, with one barrier per step, between the phases.

int64_t column_panel_floats(int64_t K, int64_t N) { return column_panels(N) * K * 4 * Vec::kWidth; }

// Column panels [c_lo, c_hi) of W ([K, N], row-major; pack_column_panel).
void pack_columns(const float* w, int64_t K, int64_t N, float* panels, int64_t c_lo,
                  int64_t c_hi) {
  for (int64_t c = c_lo; c < c_hi; ++c) {
    pack_column_panel(w, N, K, N, c, panels + c * K * 4 * Vec::kWidth);
  }
}

// A GEMM of a step's dgates rows with a [4H, N] weight packed by pack_columns; the output
// row of dgates row `row + r` is out + r * ld. dh = dgates @ W_hh (rows of the running
// [B, H] dh) and, in the loop, dx = dgates @ W_ih.
struct PanelGemm {
  const float* panels;
  int64_t N;
  float* out;
  int64_t ld;
};

// Rows [r0, r0 + R) of the step starting at `row`, column panel c, K block [k_lo, k_hi),
// K-blocked as the forward (tile.h).
template <int R>
void panel_tile(const FusedBackwardArgs& a, const PanelGemm& g, int64_t row, int64_t r0,
                int64_t c, int64_t k_lo, int64_t k_hi, float* partial, const Prefetch& pf) {
  constexpr int W = Vec::kWidth;
  const int64_t G = 4 * a.H;
  const float* rows[kTileRows];
  for (int r = 0; r < R; ++r) rows[r] = a.dgates + (row + r0 + r) * G;
  Vec acc[R][4];
  // All of K is the first operand; the second, never reached, is passed as the same rows
  // (a null one drew -Warray-bounds from GCC, which cannot see that its loop is empty).
  if (!tile_block<R, 4>(acc, rows, G, rows, k_lo, k_hi, G, kKBlock,
                        g.panels + c * G * 4 * W, partial, pf)) {
    return;
  }
  for (int r = 0; r < R; ++r) {
    float* out = g.out + (r0 + r) * g.ld;
    for (int q = 0; q < 4; ++q) {
      const int64_t col = c * 4 * W + q * W, n = imin(W, g.N - col);
      if (n > 0) store_n(acc[r][q], out + col, n);
    }
  }
}

// Column panels [c_lo, c_hi) in ascending or descending order (alternated per step, as the
// forward does with its groups: a step starts with the panels still in L2).
void panel_rows(const FusedBackwardArgs& a, const PanelGemm& g, int64_t row, int64_t lo,
                int64_t hi, int64_t c_lo, int64_t c_hi, bool descending, float* partial) {
  const int64_t G = 4 * a.H, k_block = hi - lo > 4 * kTileRows ? kKBlock : G;
  // Own rows ahead only: prefetching the next column panel (up to 1 MB) measured slower.
  const Prefetch pf{stream_ahead(k_block, 4, hi - lo), false, 0, 0};
  for (int64_t i = c_lo; i < c_hi; ++i) {
    const int64_t c = descending ? c_hi - 1 - (i - c_lo) : i;
    for (int64_t k_lo = 0; k_lo < G; k_lo += k_block) {
      const int64_t k_hi = imin(G, k_lo + k_block);
      for (int64_t r0 = lo; r0 < hi; r0 += kTileRows) {
        float* part = partial + (r0 - lo) * 4 * Vec::kWidth;
        with_rows(imin(kTileRows, hi - r0), [&]<int R>() {
          panel_tile<R>(a, g, row, r0, c, k_lo, k_hi, part, pf);
        });
      }
    }
  }
}

// Phase 1 for rows [lo, hi) and hidden units [j_lo, j_hi) of step s; each row's gate
// gradients are also added into its row of a.dbias.
void cell_rows_backward(const FusedBackwardArgs& a, int64_t s, int64_t lo, int64_t hi,
                        int64_t j_lo, int64_t j_hi) {
  const int64_t H = a.H, G = 4 * H;
  const auto [row, n, row_prev, n_cont] = step_rows(a, s);
  for (int64_t b = lo; b < imin(hi, n); ++b) {
    const bool cont = b < n_cont;
    const float* c_prev = cont ? a.cell + (row_prev + b) * H : a.c0 + b * H;
    const float* h_prev = cont ? a.y + (row_prev + b) * H : a.h0 + b * H;
    for (int64_t j = j_lo; a.h_prev && j < j_hi; j += Vec::kWidth) {
      const int64_t m = imin(Vec::kWidth, j_hi - j);
      store_n(load_n<Vec>(h_prev + j, m), a.h_prev + (row + b) * H + j, m);
    }
    float* da = a.dgates + (row + b) * G;
    backward_units<Vec, float>(H, j_lo, j_hi, a.gates + (row + b) * G, c_prev,
                               a.cell + (row + b) * H, a.dy ? a.dy + (row + b) * H : nullptr,
                               a.dh + b * H, a.dc + b * H, da, nullptr);
    // dbias += da (still in L1) over the units' four gate ranges: one range for all units.
    float* dbias = a.dbias + b * G;
    const bool all_units = j_lo == 0 && j_hi == H;
    for (int64_t g = 0; g < (all_units ? 1 : 4); ++g) {
      const int64_t end = all_units ? G : g * H + j_hi;
      for (int64_t j = g * H + j_lo; j < end; j += Vec::kWidth) {
        const int64_t m = imin(Vec::kWidth, end - j);
        store_n(load_n<Vec>(dbias + j, m) + load_n<Vec>(da + j, m), dbias + j, m);
      }
    }
  }
}

void fused_backward(const FusedBackwardArgs& a, float* panels) {
  const int64_t blocks = column_panels(a.H), dx_blocks = column_panels(a.I);
  const PanelGemm dh{panels, a.H, a.dh, a.H};
  const int nt = a.num_threads;
  const bool split_rows = backward_splits_rows(a.B, a.H, nt);
  const bool fuse_dw = split_rows && a.dw_scratch;  // see weight_grads.h
  const bool loop_dx = fuse_dw && a.dx;
  SpinBarrier barrier;
#pragma omp parallel num_threads(nt)
  {
    const int64_t tid = omp_get_thread_num(), threads = omp_get_num_threads();
#pragma omp single
    barrier.start(static_cast<int>(threads));
    float* partial = a.partial + tid * a.B * 4 * Vec::kWidth;
    const ThreadShare rows(a.B, tid, threads), own(blocks, tid, threads);
    const int64_t lo = rows.lo, hi = rows.hi, c_lo = own.lo, c_hi = own.hi;
    // Split panels: each thread reads only its own; split rows: all of them, and W_ih's.
    pack_columns(a.w_hh, 4 * a.H, a.H, panels, c_lo, c_hi);
    if (loop_dx) {
      const ThreadShare ih(dx_blocks, tid, threads);
      pack_columns(a.w_ih, 4 * a.H, a.I, a.ih_panels, ih.lo, ih.hi);
    }
    if (split_rows) barrier.wait();
    const int64_t dw_floats = (a.I + a.H) * 4 * a.H;
    float* dwt = fuse_dw ? a.dw_scratch + tid * dw_floats : nullptr;
    for (int64_t i = 0; fuse_dw && i < dw_floats; ++i) dwt[i] = 0.0f;
    DwChunk chunk;
    // Split panels: the thread's hidden units are its panels' dh columns, so phase 1 reads
    // only the dh this thread wrote, and one barrier per step (dgates complete) suffices.
    const int64_t j_lo = imin(a.H, c_lo * 4 * Vec::kWidth);
    const int64_t j_hi = imin(a.H, c_hi * 4 * Vec::kWidth);
    for (int64_t s = a.T - 1; s >= 0; --s) {
      const StepRows step = step_rows(a, s);
      if (split_rows) {
        cell_rows_backward(a, s, lo, hi, 0, a.H);
        if (fuse_dw) accumulate_weight_grads(a, s, lo, hi, chunk, dwt);
        panel_rows(a, dh, step.row, lo, imin(hi, step.n), 0, blocks, s & 1, partial);
        if (loop_dx) {  // the step's dgates rows are still in L1
          const PanelGemm dx{a.ih_panels, a.I, a.dx + step.row * a.I, a.I};
          panel_rows(a, dx, step.row, lo, imin(hi, step.n), 0, dx_blocks, false, partial);
        }
      } else {
        cell_rows_backward(a, s, 0, a.B, j_lo, j_hi);
        barrier.wait();
        panel_rows(a, dh, step.row, 0, step.n, c_lo, c_hi, s & 1, partial);
      }
    }
    if (fuse_dw) {
      barrier.wait();
      const int64_t per_g = (4 * a.H + threads - 1) / threads;
      const int64_t g_lo = imin(4 * a.H, tid * per_g);
      reduce_weight_grads(a, static_cast<int>(threads), g_lo, imin(4 * a.H, g_lo + per_g));
    }
  }
}
