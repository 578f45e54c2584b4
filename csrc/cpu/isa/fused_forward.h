// The forward time loop with the four gate GEMMs and the cell fused into one register-tiled
// kernel per step, written once over Vec and compiled per ISA (include inside the ISA unit's
// namespace, after cell_rows.h and tile.h).
//
// Weights are packed once per call into panels, one per group of W = Vec::kWidth hidden
// units: panel q is [K][i|f|g|o][W] for K = (hoisted ? 0 : I) + H, so one step of the k loop
// loads the 4 gate vectors of the group from one contiguous 4W floats. The threads pack them
// inside the time loop's parallel region, each the groups it computes (or, when every thread
// reads all groups, a share of them and then one barrier): no parallel region of its own,
// and a thread's own panels land in its own cache. A tile of R <= 6 rows
// (tile.h) keeps its R x 4 accumulators in registers over all of K; the epilogue adds the
// bias (and the hoisted input projection), applies sigmoid/tanh, updates c and writes h_t
// straight into the output, which is the next step's input. Nothing is allocated.
//
// The last group of a hidden size that is not a multiple of W has w < W units. Padded to W
// it would cost a full group of FMAs (at H = 50, a quarter of all of them for 2 units), so
// its panel packs the gates back to back, [K][i|f|g|o][w], in NV = ceil(4w / W) vectors.
//
// Threads: with enough rows per thread, the batch is split (rows are independent: no
// barrier at all); otherwise the hidden groups are split, with one barrier per step.

inline int64_t num_groups(int64_t H) { return (H + Vec::kWidth - 1) / Vec::kWidth; }

// Vectors per k of group q's panel: 4, or fewer for a narrow last group (see above).
inline int group_vectors(int64_t H, int64_t q) {
  const int64_t w = H - q * Vec::kWidth;
  return w >= Vec::kWidth ? 4 : static_cast<int>((4 * w + Vec::kWidth - 1) / Vec::kWidth);
}

// Panels start every K x 4W floats whatever their width (prefetch and threads index them so);
// after them, at bias_offset, the layer's summed bias, 4H floats.
inline int64_t bias_offset(int64_t I, int64_t H, bool hoisted) {
  return num_groups(H) * ((hoisted ? 0 : I) + H) * 4 * Vec::kWidth;
}

int64_t panel_floats(int64_t I, int64_t H, bool hoisted) {
  return bias_offset(I, H, hoisted) + 4 * H;
}

// Group q's panel, W x W blocks at a time: W rows (units) of one gate by W columns (k) of
// W_ih, then of W_hh, transposed in registers. A narrow group's rows past its units are
// zeros, and its gates are stored back to back (see above). Packing one float at a time
// took 65 us for a 1 MB W_hh (4.5% of the forward at B = 1). At (B, I, H) = (32, 50, 50),
// two layers: 8.2-8.7 us of a 32 us T = 1 call with a parallel region per layer, the block
// straddling W_ih's end and W_hh's start and the narrow group packed a float at a time;
// 3.5 us in the time loop's region with these blocks (rdtsc in the op).
void pack_group(const FusedForwardArgs& a, int64_t q, float* panel) {
  constexpr int W = Vec::kWidth;
  const int64_t H = a.H, Kx = a.hoisted ? 0 : a.I;
  const int64_t units = imin(W, H - q * W);
  const int nv = group_vectors(H, q);
  const int64_t lanes = nv == 4 ? W : units;  // per gate
  const int64_t stride = nv * W;              // floats per k
  for (int64_t k = 0; 4 * lanes < stride && k < Kx + H; ++k) {
    for (int64_t u = 4 * lanes; u < stride; ++u) panel[k * stride + u] = 0.0f;
  }
  for (int g = 0; g < 4; ++g) {
    const int64_t row0 = g * H + q * W;
    // The columns of W_ih, then of W_hh.
    pack_transposed(a.w_ih + row0 * Kx, Kx, units, Kx, panel + g * lanes, stride, lanes);
    pack_transposed(a.w_hh + row0 * H, H, units, H, panel + Kx * stride + g * lanes, stride,
                    lanes);
  }
}

// Groups [q_lo, q_hi) of the layer's panels, and the bias b_ih + b_hh of their units.
void pack_groups(const FusedForwardArgs& a, float* panels, int64_t q_lo, int64_t q_hi) {
  const int64_t H = a.H, K = (a.hoisted ? 0 : a.I) + H;
  for (int64_t q = q_lo; q < q_hi; ++q) pack_group(a, q, panels + q * K * 4 * Vec::kWidth);
  float* bias = panels + bias_offset(a.I, a.H, a.hoisted);
  for (int g = 0; g < 4; ++g) {
    for (int64_t j = g * H + q_lo * Vec::kWidth; j < g * H + imin(H, q_hi * Vec::kWidth); ++j) {
      bias[j] = (a.b_ih ? a.b_ih[j] : 0.0f) + (a.b_hh ? a.b_hh[j] : 0.0f);
    }
  }
}

// Lanes [g n, (g + 1) n) = p[g * stride, g * stride + n) for the four gates, zeros after:
// a narrow group's per-gate values laid out as its one packed vector (4 n <= W).
inline Vec load_packed(const float* p, int64_t stride, int64_t n) {
  float lanes[Vec::kWidth] = {};
  for (int g = 0; g < 4; ++g) {
    for (int64_t u = 0; u < n; ++u) lanes[g * n + u] = p[g * stride + u];
  }
  return Vec::load(lanes);
}

// The gates of a packed vector of pre-activations (see load_packed): sigmoid and tanh once
// each on the whole vector, the gate's lanes taken from the one it needs. The same functions
// per lane as activate(), in two evaluations instead of four (H = 50: the 2-unit group's
// epilogue cost as much as a full group's).
inline Gates<Vec> activate_packed(Vec a, int64_t n) {
  const Vec s = sigmoid(a), t = tanh_(a);
  return {s, lanes_of(s, s, n), lanes_of(t, t, 2 * n), lanes_of(s, s, 3 * n)};
}

// Panels longer than kMaxKBlocked are never blocked for the cache (fused_step), so their
// sums may take longer blocks (tile_block): each block costs the tile a pass through
// `partial` and a restart of its k loop, at K = 1024 5% of the forward with blocks of
// kKBlock (in-process A/B at (100, 64, 512, 512): 66.4 ms, 64.1 with blocks of 512). The
// error against float64 stayed below nn.LSTM's (mean 3.9e-8 against 5.8e-8 at that shape;
// 2.6e-8 with blocks of kKBlock).
constexpr int64_t kMaxKBlocked = 4 * kKBlock;

inline int64_t forward_sum_block(int64_t K) { return K <= kMaxKBlocked ? kKBlock : kMaxKBlocked; }

// Rows [r0, r0 + R) of step t, hidden group q (NV vectors), K block [k_lo, k_hi); the last
// block runs the cell epilogue.
template <int R, int NV>
void fused_tile(const FusedForwardArgs& a, const float* panels, int64_t t, int64_t r0,
                int64_t q, const float* const* x_rows, const float* const* h_rows, int64_t k_lo,
                int64_t k_hi, float* partial, const Prefetch& pf) {
  constexpr int W = Vec::kWidth;
  const int64_t H = a.H, Kx = a.hoisted ? 0 : a.I, K = Kx + H, j0 = q * W;
  const int64_t n = H - j0 < W ? H - j0 : W;
  // The hoisted projection's lines this tile's epilogue reads, fetched into L1 while it sums:
  // the projection GEMM wrote them long before, and they come from DRAM (26 MB of them at
  // (T, B, H) = (100, 16, 1024)). In-process A/B, 10 alternating blocks, best / median: that
  // forward 64.96 / 67.35 -> 61.95 / 64.97 ms (69.53 / 72.41 -> 68.31 / 70.46 in another run).
  if (a.hoisted && k_hi == K) {
    for (int r = 0; r < R; ++r) {
      const float* pre = a.gates + (a.offsets[t] + r0 + r - a.gates_row0) * 4 * H + j0;
      for (int g = 0; g < 4; ++g) prefetch_l1(pre + g * H);
    }
  }
  Vec acc[R][NV];
  if (!tile_block<R, NV>(acc, x_rows, Kx, h_rows, k_lo, k_hi, K, forward_sum_block(K),
                         panels + q * K * 4 * W, partial, pf)) {
    return;
  }
  const float* bias = panels + bias_offset(a.I, a.H, a.hoisted);
  const Vec b_i = load_n<Vec>(bias + j0, n), b_f = load_n<Vec>(bias + H + j0, n);
  const Vec b_g = load_n<Vec>(bias + 2 * H + j0, n), b_o = load_n<Vec>(bias + 3 * H + j0, n);
  const Vec b_packed = NV == 1 ? load_packed(bias + j0, H, n) : Vec(0.0f);
  for (int r = 0; r < R; ++r) {
    const int64_t row = a.offsets[t] + r0 + r;
    float* pre = a.gates ? a.gates + (row - a.gates_row0) * 4 * H + j0 : nullptr;
    Gates<Vec> gate;
    if constexpr (NV == 1) {  // one vector holds the four gates back to back
      const Vec sum = acc[r][0] + b_packed;
      gate = activate_packed(a.hoisted ? sum + load_packed(pre, H, n) : sum, n);
    } else {
      Vec sum[4];  // x W_ih^T + h W_hh^T of the n units, gates i, f, g, o
      if constexpr (NV == 4) {
        for (int g = 0; g < 4; ++g) sum[g] = acc[r][g];
      } else {  // back to back: gate g is lanes [g n, (g + 1) n) of the NV vectors
        for (int g = 0; g < 4; ++g) {
          const int64_t v = imin(g * n / W, NV - 1);
          sum[g] = lanes_of(acc[r][v], acc[r][imin(v + 1, NV - 1)], g * n - v * W);
        }
      }
      Vec a_i = sum[0] + b_i, a_f = sum[1] + b_f, a_g = sum[2] + b_g, a_o = sum[3] + b_o;
      if (a.hoisted) {
        a_i = a_i + load_n<Vec>(pre, n);
        a_f = a_f + load_n<Vec>(pre + H, n);
        a_g = a_g + load_n<Vec>(pre + 2 * H, n);
        a_o = a_o + load_n<Vec>(pre + 3 * H, n);
      }
      gate = activate(a_i, a_f, a_g, a_o);
    }
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

// The operands of one row tile of a step.
struct TileRows {
  int64_t t, r0, R;
  const float* x[kTileRows];
  const float* h[kTileRows];
};

// The tile's group q and K block: picks the instantiation for its rows and the group's width.
template <int NV>
void group_tile(const FusedForwardArgs& a, const float* panels, const TileRows& m, int64_t q,
                int64_t k_lo, int64_t k_hi, float* part, const Prefetch& pf) {
  with_rows(m.R, [&]<int R>() {
    fused_tile<R, NV>(a, panels, m.t, m.r0, q, m.x, m.h, k_lo, k_hi, part, pf);
  });
}

// Rows [lo, hi) of step s (processing order), groups [q_lo, q_hi); from_l3: the thread's
// weights do not stay in L2 between steps, so each next block is prefetched (tile.h).
void fused_step(const FusedForwardArgs& a, const float* panels, int64_t s, int64_t lo,
                int64_t hi, int64_t q_lo, int64_t q_hi, bool from_l3, float* partial) {
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
  // Blocking pays only when enough row tiles reuse each block, and only for short panels:
  // from K = 768 up, every tile streaming the whole panel from L2 (prefetched ahead) won
  // (in-process A/B, forward: B = 64, K = 1024 74.2 ms median against 87.5 blocked, K = 2048
  // 155 against 168, K = 768 3% ahead, K = 512 even; at K = 256, B = 256, blocked won 9%).
  const int64_t K = (a.hoisted ? 0 : a.I) + a.H;
  const int64_t k_block = hi - lo > 4 * kTileRows && K <= kMaxKBlocked ? kKBlock : K;
  const int64_t tiles = (hi - lo + kTileRows - 1) / kTileRows;
  // Groups in ascending order on even steps, descending on odd ones: a step starts with the
  // panels the previous one ended with, still in L2 when the thread's weights are not
  // (measured at B = 16, H = 1024: 70-78 -> 65-69 ms for the time loop alone).
  const bool descending = s & 1;
  for (int64_t i = q_lo; i < q_hi; ++i) {
    const int64_t q = descending ? q_hi - 1 - (i - q_lo) : i;
    const int nv = group_vectors(a.H, q);
    for (int64_t k_lo = 0; k_lo < K; k_lo += k_block) {
      const int64_t k_hi = imin(K, k_lo + k_block);
      const NextBlock next(K, k_block, q, k_lo, k_hi, q_lo, q_hi, descending, from_l3);
      const bool ahead = stream_ahead(k_block, nv, hi - lo);
      for (int64_t r0 = lo; r0 < hi; r0 += kTileRows) {
        TileRows m{t, r0, imin(kTileRows, hi - r0), {}, {}};
        for (int64_t r = 0; r < m.R; ++r) {
          const int64_t b = r0 + r;
          m.x[r] = a.hoisted ? nullptr : a.x + (a.offsets[t] + b) * a.I;
          m.h[r] = b < n_cont ? a.y + (a.offsets[t_prev] + b) * a.H : a.h0 + b * a.H;
        }
        float* part = partial + (r0 - lo) * 4 * Vec::kWidth;
        const Prefetch pf = next.share(tiles, (r0 - lo) / kTileRows, k_hi - k_lo, ahead);
        switch (nv) {
          case 1: group_tile<1>(a, panels, m, q, k_lo, k_hi, part, pf); break;
          case 2: group_tile<2>(a, panels, m, q, k_lo, k_hi, part, pf); break;
          case 3: group_tile<3>(a, panels, m, q, k_lo, k_hi, part, pf); break;
          default: group_tile<4>(a, panels, m, q, k_lo, k_hi, part, pf); break;
        }
      }
    }
  }
}

// How a layer's steps are shared among the threads.
struct ThreadPlan {
  bool split_rows;  // each thread its rows, all groups; else each thread its groups
  bool from_l3;     // prefetch each next weight block (see below)
};

ThreadPlan thread_plan(const FusedForwardArgs& a) {
  const int64_t groups = num_groups(a.H);
  const int nt = a.num_threads;
  // Splitting rows needs no barrier but makes every thread stream all the weights and
  // reuse each panel over fewer rows: it wins for small layers (few groups), where one
  // barrier per step would cost as much as the step.
  const bool split_rows = groups < nt || (groups < 4 * nt && a.B >= 2 * kTileRows * nt);
  // Prefetching pays only when a thread's weights do not stay in its L2 from one step to the
  // next (measured: +3-4% with 4-8 MB per thread, -5% with 1 MB, neutral at 2 MB), and its
  // rows fill more than two tiles: fewer tiles are bound by their loads, and the prefetches
  // are more of them (H = 1024, 8 MB per thread, in-process A/B on Zen 5: B = 16 forward
  // 90.9 -> 102.1 ms median without; B = 12 even; B = 8 60.3 -> 56.2 and B = 1, H = 640
  // 12.3 -> 10.4 ms without).
  const int64_t K = (a.hoisted ? 0 : a.I) + a.H;
  const int64_t thread_groups = split_rows ? groups : (groups + nt - 1) / nt;
  const int64_t thread_rows = split_rows ? (a.B + nt - 1) / nt : a.B;
  const int64_t thread_bytes = thread_groups * K * 4 * Vec::kWidth * int64_t{sizeof(float)};
  return {split_rows, thread_bytes > kL2Bytes && thread_rows > 2 * kTileRows};
}

// Steps [s0, s1) of `num_layers` stacked layers (layer l's x is layer l - 1's y; all share
// T, B, offsets, s0, s1, num_threads and the partial scratch), as a wavefront: step s of
// layer l runs right after step s of layer l - 1, whose output it reads. When every layer
// splits its rows, a thread's rows depend on its own rows only (in time and across layers):
// no barrier at all. Otherwise one barrier per layer and step, as layer by layer.
void fused_forward(const FusedForwardArgs* layers, int64_t num_layers, float* const* panels,
                   bool pack) {
  ThreadPlan plans[kMaxWavefrontLayers];
  bool barrier_free = true;
  for (int64_t l = 0; l < num_layers; ++l) {
    plans[l] = thread_plan(layers[l]);
    barrier_free = barrier_free && plans[l].split_rows;
  }
  const FusedForwardArgs& a = layers[0];
  SpinBarrier barrier;
#pragma omp parallel num_threads(a.num_threads)
  {
    const int64_t tid = omp_get_thread_num(), threads = omp_get_num_threads();
#pragma omp single
    barrier.start(static_cast<int>(threads));
    // Each thread packs its own groups, or a share of the groups that every thread reads.
    bool shared = false;
    for (int64_t l = 0; pack && l < num_layers; ++l) {
      const ThreadShare share(num_groups(layers[l].H), tid, threads);
      pack_groups(layers[l], panels[l], share.lo, share.hi);
      shared = shared || plans[l].split_rows;
    }
    if (shared) barrier.wait();
    float* partial = a.partial + tid * a.B * 4 * Vec::kWidth;
    const int64_t rows = (a.B + threads - 1) / threads;
    const int64_t r_lo = imin(a.B, tid * rows), r_hi = imin(a.B, r_lo + rows);
    for (int64_t s = a.s0; s < a.s1; ++s) {
      for (int64_t l = 0; l < num_layers; ++l) {
        const FusedForwardArgs& layer = layers[l];
        const int64_t groups = num_groups(layer.H);
        if (plans[l].split_rows) {
          fused_step(layer, panels[l], s, r_lo, r_hi, 0, groups, plans[l].from_l3, partial);
        } else {
          const ThreadShare share(groups, tid, threads);
          fused_step(layer, panels[l], s, 0, a.B, share.lo, share.hi, plans[l].from_l3,
                     partial);
        }
        if (!barrier_free) barrier.wait();
      }
    }
  }
}
