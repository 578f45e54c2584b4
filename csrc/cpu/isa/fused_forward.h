// The forward time loop with the four gate GEMMs and the cell fused into one register-tiled
// kernel per step, written once over Vec and compiled per ISA (include inside the ISA unit's
// namespace, after cell_rows.h).
//
// Weights are packed once per call into panels, one per group of W = Vec::kWidth hidden
// units: panel q is [K][i|f|g|o][W] for K = (hoisted ? 0 : I) + H, so one step of the k loop
// loads the 4 gate vectors of the group from one contiguous 4W floats. A tile of R <= 6 rows
// keeps its R x 4 accumulators in registers over all of K; the epilogue adds the bias (and
// the hoisted input projection), applies sigmoid/tanh, updates c and writes h_t straight
// into the output, which is the next step's input. Nothing is allocated.
//
// Threads: with enough rows per thread, the batch is split (rows are independent: no
// barrier at all); otherwise the hidden groups are split, with one barrier per step.
constexpr int kTileRows = 6;

// (std::min would instantiate a template shared with baseline code: see isa_avx512.cpp.)
inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

inline int64_t num_groups(int64_t H) { return (H + Vec::kWidth - 1) / Vec::kWidth; }

int64_t panel_floats(int64_t I, int64_t H, bool hoisted) {
  return num_groups(H) * ((hoisted ? 0 : I) + H) * 4 * Vec::kWidth;
}

void pack_panels(const FusedForwardArgs& a, float* panels) {
  constexpr int W = Vec::kWidth;
  const int64_t H = a.H, Kx = a.hoisted ? 0 : a.I, K = Kx + H, groups = num_groups(H);
#pragma omp parallel for num_threads(a.num_threads) schedule(static)
  for (int64_t q = 0; q < groups; ++q) {
    float* panel = panels + q * K * 4 * W;
    for (int64_t k = 0; k < K; ++k) {
      for (int g = 0; g < 4; ++g) {
        for (int u = 0; u < W; ++u) {
          const int64_t j = q * W + u, row = g * H + j;
          panel[(k * 4 + g) * W + u] =
              j >= H ? 0.0f : (k < Kx ? a.w_ih[row * a.I + k] : a.w_hh[row * H + (k - Kx)]);
        }
      }
    }
  }
}

// Software prefetch of the next weight block into L2 while the current one is in use.
// Weights that do not fit in L2 are streamed from L3 once per step, and the hardware
// prefetcher alone does not run far enough ahead of this compute-bound loop to hide that.
// Each k step reads one row of the block, Vec::kWidth / 4 cache lines ("lanes"); the first
// tiles of a block each prefetch one or two lanes of the next block, at a fixed byte offset
// from the row they read. Offsets, not pointers: a pointer and a bound per tile cost the
// registers that keep the accumulators out of memory.
struct Prefetch {
  bool on = false;  // off: the k loop is compiled without the prefetches (B = 1 is load-bound)
  int64_t off0 = 0, off1 = 0;
};

// About one core's L2 on current x86 server CPUs (1-2 MB).
constexpr int64_t kL2Bytes = int64_t{2} << 20;

// As asm that declares no memory access: GCC models _mm_prefetch as a load that may alias the
// accumulators, which it then stores to the stack on every k step (2x slower, measured).
inline void prefetch(const float* w, const Prefetch& pf) {
  asm volatile("prefetcht1 (%0,%1)\n\tprefetcht1 (%0,%2)"
               :
               : "r"(w), "r"(pf.off0), "r"(pf.off1));
}

// The weight block after `block` (rows [k_lo, k_hi) of panel q) in a thread's panels
// [q_lo, q_hi) of K x 4W floats each, which are contiguous: the rest of this panel, else the
// next panel's first block (panel q_lo's again for the next step).
struct NextBlock {
  int64_t delta;  // bytes from the current block to the next
  bool enabled;

  NextBlock(const float* panels, int64_t K, int64_t q, int64_t k_lo, int64_t k_hi, int64_t q_lo,
            int64_t q_hi, bool enabled_)
      : enabled(enabled_) {
    const int64_t q_next = k_hi < K ? q : (q + 1 < q_hi ? q + 1 : q_lo);
    const int64_t k_next = k_hi < K ? k_hi : 0;
    delta = ((q_next * K + k_next) - (q * K + k_lo)) * 4 * Vec::kWidth * int64_t{sizeof(float)};
  }

  // Tile `tile` of `tiles`: lanes split over the first min(tiles, lanes) tiles, at most two
  // per tile (a lone tile covers half the block; the hardware prefetcher does the rest).
  Prefetch share(int64_t tiles, int64_t tile) const {
    constexpr int64_t lanes = Vec::kWidth / 4;
    const int64_t users = imin(tiles, lanes), per = lanes / users;
    if (!enabled || tile >= users) return {};
    const int64_t lane = tile * per;
    return {true, delta + lane * 64, delta + (lane + (per > 1 ? 1 : 0)) * 64};
  }
};

// acc[r][g] += sum over k in [k_lo, k_hi) of row_r[k] * panel[k][g], where row_r[k] is
// a_rows[r][k] for k < Ka and b_rows[r][k - Ka] after (the [x_t, h] concatenation, never
// materialized).
template <int R, bool kPrefetch>
inline void tile_accumulate(const float* const* a_rows, int64_t Ka, const float* const* b_rows,
                            int64_t k_lo, int64_t k_hi, const float* panel, Vec (&acc)[R][4],
                            Prefetch pf) {
  constexpr int W = Vec::kWidth;
  const float* w = panel + k_lo * 4 * W;
  for (int64_t k = k_lo; k < imin(k_hi, Ka); ++k, w += 4 * W) {
    const Vec w0 = Vec::load(w), w1 = Vec::load(w + W), w2 = Vec::load(w + 2 * W),
              w3 = Vec::load(w + 3 * W);
    if constexpr (kPrefetch) prefetch(w, pf);
    for (int r = 0; r < R; ++r) {
      const Vec x(a_rows[r][k]);
      acc[r][0] = fmadd(x, w0, acc[r][0]);
      acc[r][1] = fmadd(x, w1, acc[r][1]);
      acc[r][2] = fmadd(x, w2, acc[r][2]);
      acc[r][3] = fmadd(x, w3, acc[r][3]);
    }
  }
  for (int64_t k = k_lo > Ka ? k_lo : Ka; k < k_hi; ++k, w += 4 * W) {
    const Vec w0 = Vec::load(w), w1 = Vec::load(w + W), w2 = Vec::load(w + 2 * W),
              w3 = Vec::load(w + 3 * W);
    if constexpr (kPrefetch) prefetch(w, pf);
    for (int r = 0; r < R; ++r) {
      const Vec h(b_rows[r][k - Ka]);
      acc[r][0] = fmadd(h, w0, acc[r][0]);
      acc[r][1] = fmadd(h, w1, acc[r][1]);
      acc[r][2] = fmadd(h, w2, acc[r][2]);
      acc[r][3] = fmadd(h, w3, acc[r][3]);
    }
  }
}

// K is walked in blocks of kKBlock so that a block of a panel (kKBlock x 4W floats, 32 KB
// for AVX-512) stays in L1 while every row tile uses it; the R x 4 accumulators of a tile
// are parked in `partial` (4W floats per row) between blocks.
constexpr int64_t kKBlock = 128;

// One K block [k_lo, k_hi) of a tile over K columns: the accumulators start from zero (first
// block) or from `partial`, and are parked back there unless this is the last block, which
// returns true: the caller's epilogue then runs on acc.
template <int R>
inline bool tile_block(Vec (&acc)[R][4], const float* const* a_rows, int64_t Ka,
                       const float* const* b_rows, int64_t k_lo, int64_t k_hi, int64_t K,
                       const float* panel, float* partial, Prefetch pf) {
  constexpr int W = Vec::kWidth;
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < 4; ++g)
      acc[r][g] = k_lo == 0 ? Vec(0.0f) : Vec::load(partial + (r * 4 + g) * W);
  if (pf.on) {
    tile_accumulate<R, true>(a_rows, Ka, b_rows, k_lo, k_hi, panel, acc, pf);
  } else {
    tile_accumulate<R, false>(a_rows, Ka, b_rows, k_lo, k_hi, panel, acc, pf);
  }
  if (k_hi == K) return true;
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < 4; ++g) acc[r][g].store(partial + (r * 4 + g) * W);
  return false;
}

// Rows [r0, r0 + R) of step t, hidden group q, K block [k_lo, k_hi); the last block runs
// the cell epilogue.
template <int R>
void fused_tile(const FusedForwardArgs& a, const float* panels, int64_t t, int64_t r0,
                int64_t q, const float* const* x_rows, const float* const* h_rows, int64_t k_lo,
                int64_t k_hi, float* partial, Prefetch pf) {
  constexpr int W = Vec::kWidth;
  const int64_t H = a.H, Kx = a.hoisted ? 0 : a.I, K = Kx + H, j0 = q * W;
  const int64_t n = H - j0 < W ? H - j0 : W;
  Vec acc[R][4];
  if (!tile_block<R>(acc, x_rows, Kx, h_rows, k_lo, k_hi, K, panels + q * K * 4 * W, partial,
                     pf)) {
    return;
  }
  const Vec b_i = load_n<Vec>(a.bias + j0, n), b_f = load_n<Vec>(a.bias + H + j0, n);
  const Vec b_g = load_n<Vec>(a.bias + 2 * H + j0, n), b_o = load_n<Vec>(a.bias + 3 * H + j0, n);
  for (int r = 0; r < R; ++r) {
    const int64_t row = a.offsets[t] + r0 + r;
    float* pre = a.gates ? a.gates + (row - a.gates_row0) * 4 * H + j0 : nullptr;
    Vec a_i = acc[r][0] + b_i, a_f = acc[r][1] + b_f, a_g = acc[r][2] + b_g, a_o = acc[r][3] + b_o;
    if (a.hoisted) {
      a_i = a_i + load_n<Vec>(pre, n);
      a_f = a_f + load_n<Vec>(pre + H, n);
      a_g = a_g + load_n<Vec>(pre + 2 * H, n);
      a_o = a_o + load_n<Vec>(pre + 3 * H, n);
    }
    const Gates<Vec> gate = activate(a_i, a_f, a_g, a_o);
    float* c = a.c + (r0 + r) * H + j0;
    const Vec c_next = cell_next(gate, load_n<Vec>(c, n));
    store_n(c_next, c, n);
    store_n(hidden_next(gate, c_next), a.y + row * H + j0, n);
    if (a.cell) {
      store_n(c_next, a.cell + row * H + j0, n);
      store_n(gate.i, pre, n);
      store_n(gate.f, pre + H, n);
      store_n(gate.g, pre + 2 * H, n);
      store_n(gate.o, pre + 3 * H, n);
    }
  }
}

// Rows [lo, hi) of step s (processing order), groups [q_lo, q_hi).
void fused_step(const FusedForwardArgs& a, const float* panels, int64_t s, int64_t lo,
                int64_t hi, int64_t q_lo, int64_t q_hi, bool prefetch_next, float* partial) {
  const int64_t t = a.reverse ? a.T - 1 - s : s;
  const int64_t t_prev = a.reverse ? t + 1 : t - 1;
  const int64_t n = a.offsets[t + 1] - a.offsets[t];
  // Rows below n_cont continue from the previous step's output; the others start from h0
  // (all of them at the first step; in the reverse direction of a packed batch, the
  // sequences that begin at this step).
  const int64_t n_cont = s == 0 ? 0 : imin(n, a.offsets[t_prev + 1] - a.offsets[t_prev]);
  hi = imin(hi, n);
  // Groups outer, then K blocks, row tiles inner: a block of a group's weight panel is read
  // from memory once per step and then from L1 for every tile.
  // Blocking pays only when enough row tiles reuse each block.
  const int64_t K = (a.hoisted ? 0 : a.I) + a.H;
  const int64_t k_block = hi - lo > 4 * kTileRows ? kKBlock : K;
  const int64_t tiles = (hi - lo + kTileRows - 1) / kTileRows;
  for (int64_t q = q_lo; q < q_hi; ++q) {
    for (int64_t k_lo = 0; k_lo < K; k_lo += k_block) {
      const int64_t k_hi = imin(K, k_lo + k_block);
      const NextBlock next(panels, K, q, k_lo, k_hi, q_lo, q_hi, prefetch_next);
      for (int64_t r0 = lo; r0 < hi; r0 += kTileRows) {
        const Prefetch pf = next.share(tiles, (r0 - lo) / kTileRows);
        const int64_t R = imin(kTileRows, hi - r0);
        const float* x_rows[kTileRows];
        const float* h_rows[kTileRows];
        for (int64_t r = 0; r < R; ++r) {
          const int64_t b = r0 + r;
          x_rows[r] = a.hoisted ? nullptr : a.x + (a.offsets[t] + b) * a.I;
          h_rows[r] = b < n_cont ? a.y + (a.offsets[t_prev] + b) * a.H : a.h0 + b * a.H;
        }
        float* part = partial + (r0 - lo) * 4 * Vec::kWidth;
        switch (R) {
          case 6: fused_tile<6>(a, panels, t, r0, q, x_rows, h_rows, k_lo, k_hi, part, pf); break;
          case 5: fused_tile<5>(a, panels, t, r0, q, x_rows, h_rows, k_lo, k_hi, part, pf); break;
          case 4: fused_tile<4>(a, panels, t, r0, q, x_rows, h_rows, k_lo, k_hi, part, pf); break;
          case 3: fused_tile<3>(a, panels, t, r0, q, x_rows, h_rows, k_lo, k_hi, part, pf); break;
          case 2: fused_tile<2>(a, panels, t, r0, q, x_rows, h_rows, k_lo, k_hi, part, pf); break;
          default: fused_tile<1>(a, panels, t, r0, q, x_rows, h_rows, k_lo, k_hi, part, pf); break;
        }
      }
    }
  }
}

void fused_forward(const FusedForwardArgs& a, const float* panels) {
  const int64_t groups = num_groups(a.H);
  const int nt = a.num_threads;
  // Splitting rows needs no barrier but makes every thread stream all the weights and
  // reuse each panel over fewer rows: it wins for small layers (few groups), where one
  // barrier per step would cost as much as the step.
  const bool split_rows = groups < nt || (groups < 4 * nt && a.B >= 2 * kTileRows * nt);
  // Prefetching pays only when a thread's weights do not stay in its L2 from one step to the
  // next (measured: +3-4% with 4-8 MB per thread, -5% with 1 MB, neutral at 2 MB).
  const int64_t K = (a.hoisted ? 0 : a.I) + a.H;
  const int64_t thread_groups = split_rows ? groups : (groups + nt - 1) / nt;
  const int64_t thread_bytes = thread_groups * K * 4 * Vec::kWidth * int64_t{sizeof(float)};
  const bool prefetch_next = thread_bytes > kL2Bytes;
#pragma omp parallel num_threads(nt)
  {
    const int64_t tid = omp_get_thread_num(), threads = omp_get_num_threads();
    float* partial = a.partial + tid * a.B * 4 * Vec::kWidth;
    if (split_rows) {
      const int64_t per = (a.B + threads - 1) / threads;
      for (int64_t s = a.s0; s < a.s1; ++s) {
        fused_step(a, panels, s, tid * per, imin(a.B, (tid + 1) * per), 0, groups, prefetch_next,
                   partial);
      }
    } else {
      const int64_t per = (groups + threads - 1) / threads;
      const int64_t q_lo = imin(groups, tid * per), q_hi = imin(groups, q_lo + per);
      for (int64_t s = a.s0; s < a.s1; ++s) {
        fused_step(a, panels, s, 0, a.B, q_lo, q_hi, prefetch_next, partial);
#pragma omp barrier
      }
    }
  }
}
