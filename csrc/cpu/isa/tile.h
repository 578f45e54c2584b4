// The register tile both fused time loops are built on: R <= 6 rows times NV <= 4 vectors of
// a weight panel, accumulated over K in registers, K-blocked, with software prefetch of the
// weights. Written once over Vec (include inside the ISA unit's namespace, after vec_*.h).
// R x 4 accumulators + 4 weight vectors + 1 broadcast must fit in the vector registers:
// 6 rows with AVX-512's 32, 3 with AVX2's 16 (6 rows there spilled 28 accumulators to the
// stack on every k step: 2.2x slower at (100, 64, 512, 512)).
constexpr int kTileRows = Vec::kRegisters >= 32 ? 6 : 3;

// The accumulators stay in registers only when the whole tile is inlined into the function
// that owns them; as an out-of-line call they live in the caller's memory and are stored on
// every k step (measured 2x slower).
#define LSTM_TILE_INLINE inline __attribute__((always_inline))

// Calls f.template operator()<R>() with R = rows, for 1 <= rows <= kTileRows: the tile
// functions are instantiated per row count, and only for counts this ISA's tile holds.
template <int R = kTileRows, typename F>
inline void with_rows(int64_t rows, const F& f) {
  if constexpr (R > 1) {
    if (rows < R) return with_rows<R - 1>(rows, f);
  }
  f.template operator()<R>();
}

// (std::min would instantiate a template shared with baseline code: see isa_avx512.cpp.)
inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// Thread tid's share [lo, hi) of n items (hidden groups, column panels), in one contiguous
// range per thread.
struct ThreadShare {
  int64_t lo, hi;
  ThreadShare(int64_t n, int64_t tid, int64_t threads) {
    const int64_t per = (n + threads - 1) / threads;
    lo = imin(n, tid * per);
    hi = imin(n, lo + per);
  }
};

// What a panel may take of one core's L1 (48 KB on current x86 server CPUs), and about one
// core's L2 (1-2 MB).
constexpr int64_t kL1Bytes = int64_t{32} << 10;
constexpr int64_t kL2Bytes = int64_t{2} << 20;

// Two software prefetches, each compiled into the k loop only where it pays:
// - ahead: the tile's own panel rows kAheadBytes ahead, into L1. A tile streams its panel
//   from L2 whenever the panel is larger than L1 and not K-blocked, and the hardware
//   prefetchers fall behind (4 lines per k step): measured 116 -> 182 GFLOP/s on one core
//   for 3 tiles over L2-resident panels in isolation; in the whole layer at B = 16,
//   H = 1024: forward 114.8 -> 112.1 ms, forward+backward 321.8 -> 302.5 ms.
// - next: the next weight block, into L2, when a thread's weights do not stay in L2 from one
//   step to the next and are streamed from L3 (measured +3-4% at 512-1024 hidden units).
//   Every tile of a block takes an equal slice of the next block and prefetches one line of
//   it per k step, at a pointer that advances through its slice as the tile walks its rows.
//   Spread over all tiles, few L3 requests are in flight at once: when the first 4 tiles
//   fetched all of it, 2 lines per k step, each waiting on L3 held a line fill buffer, and
//   the tile's own reads from L2 queued behind them (those tiles ran 1.4x as long as the
//   others with 2 threads, 2.1x with one; in-process A/B of the forward, best / median of
//   alternating blocks: (100, 64, 512, 512) 174 / 183 ms against 180 / 193, (100, 16, 1024,
//   1024) 164 / 170 against 180 / 187, (100, 24, 768, 768) 139 / 147 against 169 / 184,
//   (100, 16, 512, 512) even).
struct Prefetch {
  bool ahead = false, next = false;
  int64_t offset = 0;  // next: bytes from the tile's first panel row to its first line
  int64_t step = 0;    // next: bytes the prefetch pointer advances per k step
};

constexpr int64_t kAheadBytes = 1024;

// Both as asm that declares no memory access: GCC models _mm_prefetch as a load that may alias
// the accumulators, which it then stores to the stack on every k step (2x slower, measured).
template <int kLines>
inline void prefetch_ahead(const float* w) {
  for (int l = 0; l < kLines; ++l) {  // constant displacements: no register per line
    asm volatile("prefetcht0 %c1(%0)" : : "r"(w), "i"(kAheadBytes + 64 * l));
  }
}

inline void prefetch_next(const char* p) { asm volatile("prefetcht1 (%0)" : : "r"(p)); }

inline void prefetch_l1(const float* p) { asm volatile("prefetcht0 (%0)" : : "r"(p)); }

// The weight block after `block` (rows [k_lo, k_hi) of panel q, in blocks of k_block rows) in
// a thread's panels [q_lo, q_hi) of K x 4W floats each, which are contiguous and visited in
// ascending or descending order: the rest of this panel, else the next panel's first block.
// After the last panel there is none: the next step starts from that panel, still in cache.
struct NextBlock {
  static constexpr int64_t kRowBytes = 4 * Vec::kWidth * int64_t{sizeof(float)};
  int64_t delta;  // bytes from the current block to the next
  int64_t bytes;  // of the next block
  bool enabled;

  NextBlock(int64_t K, int64_t k_block, int64_t q, int64_t k_lo, int64_t k_hi, int64_t q_lo,
            int64_t q_hi, bool descending, bool enabled_) {
    const int64_t q_next = k_hi < K ? q : (descending ? q - 1 : q + 1);
    const int64_t k_next = k_hi < K ? k_hi : 0;
    enabled = enabled_ && q_next >= q_lo && q_next < q_hi;
    delta = ((q_next * K + k_next) - (q * K + k_lo)) * kRowBytes;
    bytes = imin(k_block, K - k_next) * kRowBytes;
  }

  // The prefetches of tile `tile` of `tiles`, each sweeping its block's k_steps rows
  // (`ahead` passes through): slice `tile` of the next block, as large as the tiles are many.
  // One line per k step covers the slice while step <= 64 bytes, i.e. from 4 tiles up (4W
  // floats per k). With 3 tiles (13-18 rows: thread_plan prefetches only above 12) the
  // pointer steps ~86 bytes and skips every fourth line, and a short last K block followed
  // by a full one steps further still: those lines are left to the hardware prefetcher.
  Prefetch share(int64_t tiles, int64_t tile, int64_t k_steps, bool ahead) const {
    if (!enabled) return {ahead, false, 0, 0};
    const int64_t step = (bytes + tiles * k_steps - 1) / (tiles * k_steps);
    return {ahead, true, delta + tile * step * k_steps, step};
  }
};

// Whether tiles should prefetch their own panel rows ahead (see Prefetch): the K range they
// sweep in one go (a whole panel unless K-blocked) of NV vectors per k is larger than L1, and
// the tiles are full. A tile of 1-5 rows is bound by its loads, and the prefetches are more
// loads (measured at B = 1: 1.55 -> 1.66 ms forward with them).
inline bool stream_ahead(int64_t k_range, int nv, int64_t rows) {
  return rows >= kTileRows && k_range * nv * Vec::kWidth * int64_t{sizeof(float)} > kL1Bytes;
}

// acc[r][v] += sum over k in [k_lo, k_hi) of row_r[k] * panel[k][v], where row_r[k] is
// a_rows[r][k] for k < Ka and b_rows[r][k - Ka] after (the [x_t, h] concatenation, never
// materialized); the panel holds NV vectors per k.
template <int R, int NV, bool kAhead, bool kNext>
LSTM_TILE_INLINE void tile_accumulate(const float* const* a_rows, int64_t Ka,
                                      const float* const* b_rows, int64_t k_lo, int64_t k_hi,
                                      const float* panel, Vec (&acc)[R][NV],
                                      const Prefetch& pf) {
  constexpr int W = Vec::kWidth;
  constexpr int kLines = NV * W * 4 / 64 > 0 ? NV * W * 4 / 64 : 1;  // per k step
  const float* w = panel + k_lo * NV * W;
  const char* next = reinterpret_cast<const char*>(w) + pf.offset;
  for (int64_t k = k_lo; k < imin(k_hi, Ka); ++k, w += NV * W, next += pf.step) {
    Vec wv[NV];
    for (int v = 0; v < NV; ++v) wv[v] = Vec::load(w + v * W);
    if constexpr (kAhead) prefetch_ahead<kLines>(w);
    if constexpr (kNext) prefetch_next(next);
    for (int r = 0; r < R; ++r) {
      const Vec x(a_rows[r][k]);
      for (int v = 0; v < NV; ++v) acc[r][v] = fmadd(x, wv[v], acc[r][v]);
    }
  }
  for (int64_t k = k_lo > Ka ? k_lo : Ka; k < k_hi; ++k, w += NV * W, next += pf.step) {
    Vec wv[NV];
    for (int v = 0; v < NV; ++v) wv[v] = Vec::load(w + v * W);
    if constexpr (kAhead) prefetch_ahead<kLines>(w);
    if constexpr (kNext) prefetch_next(next);
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

// K range [k_lo, k_hi) of a tile over K columns, summed per block of `sum_block` terms: each
// block from zero, added to the sum of the earlier blocks parked in `partial`, which it
// replaces unless it is the last block of K; then this returns true and the caller's
// epilogue runs on acc. Blocks of the sum rather than one chain: it rounds like
// sum_block + K / sum_block terms, not K (at K = 1024-2048, kKBlock gave 2-5x less error
// against float64 than one chain). A caller that blocks its loops for the cache passes
// sum_block = kKBlock, and so must every caller that may block the same K (whether it does
// depends on its rows per thread): the sums, and so the results, do not depend on the thread
// count. Narrow panels (NV < 4) are never prefetched as a next block (NextBlock assumes 4W
// floats per k).
template <int R, int NV>
LSTM_TILE_INLINE bool tile_block(Vec (&acc)[R][NV], const float* const* a_rows, int64_t Ka,
                                 const float* const* b_rows, int64_t k_lo, int64_t k_hi,
                                 int64_t K, int64_t sum_block, const float* panel,
                                 float* partial, const Prefetch& pf) {
  constexpr int W = Vec::kWidth;
  constexpr bool kCanNext = NV == 4;
  for (int64_t b_lo = k_lo; b_lo < k_hi; b_lo += sum_block) {
    const int64_t b_hi = imin(k_hi, b_lo + sum_block);
    // The prefetch pointer continues where the previous block left it.
    Prefetch pb = pf;
    pb.offset += (b_lo - k_lo) * (pf.step - NV * W * int64_t{sizeof(float)});
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = Vec(0.0f);
    if (pf.ahead) {
      if (kCanNext && pf.next) {
        tile_accumulate<R, NV, true, kCanNext>(a_rows, Ka, b_rows, b_lo, b_hi, panel, acc, pb);
      } else {
        tile_accumulate<R, NV, true, false>(a_rows, Ka, b_rows, b_lo, b_hi, panel, acc, pb);
      }
    } else {
      if (kCanNext && pf.next) {
        tile_accumulate<R, NV, false, kCanNext>(a_rows, Ka, b_rows, b_lo, b_hi, panel, acc, pb);
      } else {
        tile_accumulate<R, NV, false, false>(a_rows, Ka, b_rows, b_lo, b_hi, panel, acc, pb);
      }
    }
    if (b_lo > 0) {
      for (int r = 0; r < R; ++r)
        for (int v = 0; v < NV; ++v) acc[r][v] = acc[r][v] + Vec::load(partial + (r * 4 + v) * W);
    }
    if (b_hi == K) return true;
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v].store(partial + (r * 4 + v) * W);
  }
  return false;
}

// Rows [0, rows) of a row-major matrix m with `cols` columns (row stride ld; rows <= W, zero
// rows past them), transposed W x W blocks at a time in registers: out + k * out_stride gets
// column k's first `lanes` <= W values. The forward's weight panels and the GEMM's op(B) =
// B^T are packed so.
inline void pack_transposed(const float* m, int64_t ld, int64_t rows, int64_t cols, float* out,
                            int64_t out_stride, int64_t lanes) {
  constexpr int W = Vec::kWidth;
  for (int64_t k0 = 0; k0 < cols; k0 += W) {
    const int64_t n = imin(W, cols - k0);
    Vec block[W];
    for (int u = 0; u < W; ++u) block[u] = u < rows ? load_n<Vec>(m + u * ld + k0, n) : Vec(0.0f);
    transpose(block);
    for (int64_t k = 0; k < n; ++k) store_n(block[k], out + (k0 + k) * out_stride, lanes);
  }
}
