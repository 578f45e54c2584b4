// The register tile both fused time loops are built on: R <= 6 rows times NV <= 4 vectors of
// a weight panel, accumulated over K in registers, K-blocked, with software prefetch of the
// next weight block. Written once over Vec (include inside the ISA unit's namespace, after
// vec_*.h).
constexpr int kTileRows = 6;

// (std::min would instantiate a template shared with baseline code: see isa_avx512.cpp.)
inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

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

// acc[r][v] += sum over k in [k_lo, k_hi) of row_r[k] * panel[k][v], where row_r[k] is
// a_rows[r][k] for k < Ka and b_rows[r][k - Ka] after (the [x_t, h] concatenation, never
// materialized); the panel holds NV vectors per k.
template <int R, int NV, bool kPrefetch>
inline void tile_accumulate(const float* const* a_rows, int64_t Ka, const float* const* b_rows,
                            int64_t k_lo, int64_t k_hi, const float* panel, Vec (&acc)[R][NV],
                            Prefetch pf) {
  constexpr int W = Vec::kWidth;
  const float* w = panel + k_lo * NV * W;
  for (int64_t k = k_lo; k < imin(k_hi, Ka); ++k, w += NV * W) {
    Vec wv[NV];
    for (int v = 0; v < NV; ++v) wv[v] = Vec::load(w + v * W);
    if constexpr (kPrefetch) prefetch(w, pf);
    for (int r = 0; r < R; ++r) {
      const Vec x(a_rows[r][k]);
      for (int v = 0; v < NV; ++v) acc[r][v] = fmadd(x, wv[v], acc[r][v]);
    }
  }
  for (int64_t k = k_lo > Ka ? k_lo : Ka; k < k_hi; ++k, w += NV * W) {
    Vec wv[NV];
    for (int v = 0; v < NV; ++v) wv[v] = Vec::load(w + v * W);
    if constexpr (kPrefetch) prefetch(w, pf);
    for (int r = 0; r < R; ++r) {
      const Vec h(b_rows[r][k - Ka]);
      for (int v = 0; v < NV; ++v) acc[r][v] = fmadd(h, wv[v], acc[r][v]);
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
template <int R, int NV>
inline bool tile_block(Vec (&acc)[R][NV], const float* const* a_rows, int64_t Ka,
                       const float* const* b_rows, int64_t k_lo, int64_t k_hi, int64_t K,
                       const float* panel, float* partial, Prefetch pf) {
  constexpr int W = Vec::kWidth;
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v)
      acc[r][v] = k_lo == 0 ? Vec(0.0f) : Vec::load(partial + (r * 4 + v) * W);
  if (pf.on) {
    tile_accumulate<R, NV, true>(a_rows, Ka, b_rows, k_lo, k_hi, panel, acc, pf);
  } else {
    tile_accumulate<R, NV, false>(a_rows, Ka, b_rows, k_lo, k_hi, panel, acc, pf);
  }
  if (k_hi == K) return true;
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v].store(partial + (r * 4 + v) * W);
  return false;
}
