// The fused per-row passes of the LSTM cell, written once over a vector type V (a SIMD Vec,
// or a one-lane Scalar for the generic build and float64) and compiled per ISA. The math is
// lstm_cell.h's; these loops only move rows of hidden units through it, kWidth at a time.
// Include inside the including translation unit's own namespace, after V's header.

template <typename V, typename T>
inline V load_n(const T* p, int64_t n) {
  return n == V::kWidth ? V::load(p) : V::load(p, n);
}

template <typename V, typename T>
inline void store_n(const V& x, T* p, int64_t n) {
  if (n == V::kWidth) {
    x.store(p);
  } else {
    x.store(p, n);
  }
}

// Forward, one row: `a` holds x W_ih^T + h W_hh^T (i|f|g|o blocks of H) and receives the
// activated gates when `cell_out` is given (training). c is updated in place; h goes to
// h_out and, when given, to h_state.
template <typename V, typename T>
void forward_row(int64_t H, T* a, const T* bias, T* c, T* cell_out, T* h_out, T* h_state) {
  for (int64_t j = 0; j < H; j += V::kWidth) {
    const int64_t n = H - j < V::kWidth ? H - j : V::kWidth;
    const Gates<V> gate = activate(
        load_n<V>(a + j, n) + load_n<V>(bias + j, n),
        load_n<V>(a + H + j, n) + load_n<V>(bias + H + j, n),
        load_n<V>(a + 2 * H + j, n) + load_n<V>(bias + 2 * H + j, n),
        load_n<V>(a + 3 * H + j, n) + load_n<V>(bias + 3 * H + j, n));
    const V c_next = cell_next(gate, load_n<V>(c + j, n));
    const V h_next = hidden_next(gate, c_next);
    store_n(c_next, c + j, n);
    store_n(h_next, h_out + j, n);
    if (h_state) store_n(h_next, h_state + j, n);
    if (cell_out) {
      store_n(c_next, cell_out + j, n);
      store_n(gate.i, a + j, n);
      store_n(gate.f, a + H + j, n);
      store_n(gate.g, a + 2 * H + j, n);
      store_n(gate.o, a + 3 * H + j, n);
    }
  }
}

// Backward, hidden units [j_lo, j_hi) of one row: gate gradients `da` from dL/dh = dh_a +
// dh_b (either may be null) and dc (in: dL/dc_t, out: dL/dc_prev). Writes o * tanh(c_t) to
// h_raw when given. All pointers are to the row's unit 0.
template <typename V, typename T>
void backward_units(int64_t H, int64_t j_lo, int64_t j_hi, const T* a, const T* c_prev,
                    const T* c_t, const T* dh_a, const T* dh_b, T* dc, T* da, T* h_raw) {
  for (int64_t j = j_lo; j < j_hi; j += V::kWidth) {
    const int64_t n = j_hi - j < V::kWidth ? j_hi - j : V::kWidth;
    const Gates<V> gate{load_n<V>(a + j, n), load_n<V>(a + H + j, n),
                        load_n<V>(a + 2 * H + j, n), load_n<V>(a + 3 * H + j, n)};
    V dh(T(0));
    if (dh_a) dh = dh + load_n<V>(dh_a + j, n);
    if (dh_b) dh = dh + load_n<V>(dh_b + j, n);
    const V c = load_n<V>(c_t + j, n);
    V dc_prev;
    const Gates<V> d = cell_backward(gate, load_n<V>(c_prev + j, n), c, dh,
                                     load_n<V>(dc + j, n), &dc_prev);
    store_n(dc_prev, dc + j, n);
    store_n(d.i, da + j, n);
    store_n(d.f, da + H + j, n);
    store_n(d.g, da + 2 * H + j, n);
    store_n(d.o, da + 3 * H + j, n);
    if (h_raw) store_n(hidden_next(gate, c), h_raw + j, n);
  }
}

// All H units of one row.
template <typename V, typename T>
void backward_row(int64_t H, const T* a, const T* c_prev, const T* c_t, const T* dh_a,
                  const T* dh_b, T* dc, T* da, T* h_raw) {
  backward_units<V, T>(H, 0, H, a, c_prev, c_t, dh_a, dh_b, dc, da, h_raw);
}
