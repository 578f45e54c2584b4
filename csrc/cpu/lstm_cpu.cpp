// CPU implementation of one LSTM layer in one direction: the time loop runs here in C++.
//
// forward:  gates = x @ W_ih^T             one GEMM over all steps (bias added below)
//           for each step t:
//             gates[t] += h_prev @ W_hh^T  one GEMM for all four gates
//             fused pass: + bias, sigmoid/tanh, c_t, h_t (h_t written into output[t])
// backward: for each step t, in reverse order of the forward:
//             fused pass: dgates[t] and dc_prev from dh = dy[t] + dh_rec, dc
//             dh_rec = dgates[t] @ W_hh    one GEMM
//           dW_ih, dW_hh, dx: one GEMM each over all steps; dbias: one reduction.
// Nothing is allocated inside the time loops: GEMMs and the fused passes work on raw
// pointers into buffers allocated up front.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../lstm_cell.h"
#include "../ops.h"
#include "blas.h"

namespace fused_lstm::cpu {
namespace {

// Rows of the fused pass handed to one thread: enough hidden units that the OpenMP
// fork/join (a few microseconds) is paid back.
int64_t rows_per_task(int64_t H) {
  constexpr int64_t kUnitsPerTask = 4096;
  return std::max<int64_t>(1, kUnitsPerTask / std::max<int64_t>(H, 1));
}

// Without train, the projection is computed this many elements at a time so that inference
// memory stays flat in T.
constexpr int64_t kInferenceChunkElems = int64_t{1} << 20;

// One time step of the forward cell over B rows. `gates` holds x W_ih^T + h_prev W_hh^T
// ([B, 4H], i|f|g|o blocks per row); with `save_gates` it is overwritten by the activated
// gates. `c_prev` may alias `c_next` (in-place update when nothing is saved).
template <typename T>
void forward_step(int64_t B, int64_t H, T* gates, const T* bias, const T* c_prev, T* c_next,
                  T* h_next, bool save_gates) {
  at::parallel_for(0, B, rows_per_task(H), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      T* a = gates + b * 4 * H;
      for (int64_t j = 0; j < H; ++j) {
        const Gates<T> gate = activate(a[j] + bias[j], a[H + j] + bias[H + j],
                                       a[2 * H + j] + bias[2 * H + j],
                                       a[3 * H + j] + bias[3 * H + j]);
        const T c = cell_next(gate, c_prev[b * H + j]);
        c_next[b * H + j] = c;
        h_next[b * H + j] = hidden_next(gate, c);
        if (save_gates) {
          a[j] = gate.i;
          a[H + j] = gate.f;
          a[2 * H + j] = gate.g;
          a[3 * H + j] = gate.o;
        }
      }
    }
  });
}

// One time step of the backward cell over B rows. dh = dy + dh_rec; `dc` holds dL/dc_t on
// entry and dL/dc_prev on exit. `dy` may be null (no gradient on the output).
template <typename T>
void backward_step(int64_t B, int64_t H, const T* gates, const T* c_prev, const T* c_t,
                   const T* dy, const T* dh_rec, T* dc, T* dgates) {
  at::parallel_for(0, B, rows_per_task(H), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const T* a = gates + b * 4 * H;
      T* da = dgates + b * 4 * H;
      for (int64_t j = 0; j < H; ++j) {
        const int64_t k = b * H + j;
        const Gates<T> gate{a[j], a[H + j], a[2 * H + j], a[3 * H + j]};
        const T dh = (dy ? dy[k] : T(0)) + dh_rec[k];
        T dc_prev;
        const Gates<T> d = cell_backward(gate, c_prev[k], c_t[k], dh, dc[k], &dc_prev);
        dc[k] = dc_prev;
        da[j] = d.i;
        da[H + j] = d.f;
        da[2 * H + j] = d.g;
        da[3 * H + j] = d.o;
      }
    }
  });
}

// Time index of processing step s.
inline int64_t time_of(int64_t s, int64_t T, bool reverse) { return reverse ? T - 1 - s : s; }

template <typename T>
void forward(const LayerSizes& n, const T* x, const T* h0, const T* c0, const T* w_ih,
             const T* w_hh, const T* bias, bool reverse, bool train, int64_t chunk, T* gates,
             T* y, T* cell, T* h_n, T* c_n) {
  const int64_t B = n.B, H = n.H, G = 4 * n.H;
  const T* h_prev = h0;
  const T* c_prev = c0;
  for (int64_t s0 = 0; s0 < n.T; s0 += chunk) {
    const int64_t len = std::min(chunk, n.T - s0);
    const int64_t t_lo = reverse ? n.T - s0 - len : s0;  // this chunk covers [t_lo, t_lo+len)
    T* ws = train ? gates + t_lo * B * G : gates;
    gemm<T>(false, true, len * B, G, n.I, x + t_lo * B * n.I, n.I, w_ih, n.I, T(0), ws, G);
    for (int64_t s = s0; s < s0 + len; ++s) {
      const int64_t t = time_of(s, n.T, reverse);
      T* gates_t = ws + (t - t_lo) * B * G;
      T* c_t = train ? cell + t * B * H : c_n;  // without train, c is updated in place
      gemm<T>(false, true, B, G, H, h_prev, H, w_hh, H, T(1), gates_t, G);
      forward_step(B, H, gates_t, bias, c_prev, c_t, y + t * B * H, train);
      h_prev = y + t * B * H;
      c_prev = c_t;
    }
  }
  std::copy(h_prev, h_prev + B * H, h_n);
  if (train) {
    std::copy(c_prev, c_prev + B * H, c_n);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer(
    const at::Tensor& input_, const at::Tensor& h0_, const at::Tensor& c0_,
    const at::Tensor& w_ih_, const at::Tensor& w_hh_, const std::optional<at::Tensor>& bias_,
    bool reverse, bool train) {
  const LayerSizes n = check_forward(input_, h0_, c0_, w_ih_, w_hh_, bias_);
  const at::Tensor input = input_.contiguous(), h0 = h0_.contiguous(), c0 = c0_.contiguous();
  const at::Tensor w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous();
  const at::Tensor bias =
      bias_.has_value() ? bias_->contiguous() : at::zeros({4 * n.H}, input.options());

  // Steps whose projection is computed by one GEMM: all of them when training (the
  // activated gates are kept for backward), else a chunk of bounded size.
  const int64_t chunk = train ? n.T : std::min(n.T, std::max<int64_t>(
      1, kInferenceChunkElems / std::max<int64_t>(n.B * 4 * n.H, 1)));
  at::Tensor gates = at::empty({train ? n.T : 0, n.B, 4 * n.H}, input.options());
  at::Tensor workspace = train ? gates : at::empty({chunk, n.B, 4 * n.H}, input.options());
  at::Tensor output = at::empty({n.T, n.B, n.H}, input.options());
  at::Tensor cell = at::empty({train ? n.T : 0, n.B, n.H}, input.options());
  at::Tensor h_n = at::empty({n.B, n.H}, input.options());
  at::Tensor c_n = train ? at::empty({n.B, n.H}, input.options()) : c0.clone();

  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "lstm_layer", [&] {
    // Without train the in-place cell update starts from c_n (a copy of c0).
    forward<scalar_t>(n, input.data_ptr<scalar_t>(), h0.data_ptr<scalar_t>(),
                      train ? c0.data_ptr<scalar_t>() : c_n.data_ptr<scalar_t>(),
                      w_ih.data_ptr<scalar_t>(), w_hh.data_ptr<scalar_t>(),
                      bias.data_ptr<scalar_t>(), reverse, train, chunk,
                      workspace.data_ptr<scalar_t>(), output.data_ptr<scalar_t>(),
                      cell.data_ptr<scalar_t>(), h_n.data_ptr<scalar_t>(),
                      c_n.data_ptr<scalar_t>());
  });
  return {output, h_n, c_n, gates, cell};
}

template <typename T>
void backward(const LayerSizes& n, const T* dy, const T* x, const T* h0, const T* c0,
              const T* w_ih, const T* w_hh, const T* y, const T* gates, const T* cell,
              bool reverse, T* dgates, T* dh_rec, T* dc, T* dx, T* dw_ih, T* dw_hh) {
  const int64_t B = n.B, H = n.H, G = 4 * n.H, TB = n.T * n.B;
  for (int64_t s = n.T - 1; s >= 0; --s) {
    const int64_t t = time_of(s, n.T, reverse), t_prev = time_of(s - 1, n.T, reverse);
    const T* c_prev = s == 0 ? c0 : cell + t_prev * B * H;
    T* dgates_t = dgates + t * B * G;
    backward_step(B, H, gates + t * B * G, c_prev, cell + t * B * H,
                  dy ? dy + t * B * H : nullptr, dh_rec, dc, dgates_t);
    gemm<T>(false, false, B, H, G, dgates_t, G, w_hh, H, T(0), dh_rec, H);
  }
  // dW_hh = sum_t dgates[t]^T h_prev(t): h_prev is y shifted by one step, h0 for the first.
  const int64_t first = time_of(0, n.T, reverse);
  const int64_t rest_lo = reverse ? 0 : 1;  // time range of steps whose h_prev is in y
  const int64_t y_lo = reverse ? 1 : 0;
  gemm<T>(true, false, G, H, TB - B, dgates + rest_lo * B * G, G, y + y_lo * B * H, H, T(0),
          dw_hh, H);
  gemm<T>(true, false, G, H, B, dgates + first * B * G, G, h0, H, T(1), dw_hh, H);
  gemm<T>(true, false, G, n.I, TB, dgates, G, x, n.I, T(0), dw_ih, n.I);
  gemm<T>(false, false, TB, n.I, G, dgates, G, w_ih, n.I, T(0), dx, n.I);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_backward(const std::optional<at::Tensor>& grad_output,
                    const std::optional<at::Tensor>& grad_h_n,
                    const std::optional<at::Tensor>& grad_c_n, const at::Tensor& input_,
                    const at::Tensor& h0_, const at::Tensor& c0_, const at::Tensor& w_ih_,
                    const at::Tensor& w_hh_, const at::Tensor& output_, const at::Tensor& gates_,
                    const at::Tensor& cell_, bool reverse) {
  const LayerSizes n = check_backward(grad_output, grad_h_n, grad_c_n, input_, h0_, c0_, w_ih_,
                                      w_hh_, output_, gates_, cell_);
  const auto opts = input_.options();
  const at::Tensor input = input_.contiguous(), h0 = h0_.contiguous(), c0 = c0_.contiguous();
  const at::Tensor w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous();
  const at::Tensor output = output_.contiguous(), gates = gates_.contiguous();
  const at::Tensor cell = cell_.contiguous();
  const at::Tensor dy = grad_output.has_value() ? grad_output->contiguous() : at::Tensor();
  // dh_rec starts as dL/dh_n and dc as dL/dc_n; both are updated in place step by step and
  // end as dL/dh0 and dL/dc0.
  at::Tensor grad_h0 = grad_h_n.has_value() ? grad_h_n->contiguous().clone()
                                            : at::zeros({n.B, n.H}, opts);
  at::Tensor grad_c0 = grad_c_n.has_value() ? grad_c_n->contiguous().clone()
                                            : at::zeros({n.B, n.H}, opts);
  at::Tensor dgates = at::empty({n.T, n.B, 4 * n.H}, opts);
  at::Tensor grad_input = at::empty({n.T, n.B, n.I}, opts);
  // Zero-filled so that an empty batch (GEMMs with k = 0) gives exact zeros on any BLAS.
  at::Tensor grad_w_ih = at::zeros({4 * n.H, n.I}, opts);
  at::Tensor grad_w_hh = at::zeros({4 * n.H, n.H}, opts);

  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "lstm_layer_backward", [&] {
    backward<scalar_t>(n, dy.defined() ? dy.data_ptr<scalar_t>() : nullptr,
                       input.data_ptr<scalar_t>(), h0.data_ptr<scalar_t>(),
                       c0.data_ptr<scalar_t>(), w_ih.data_ptr<scalar_t>(),
                       w_hh.data_ptr<scalar_t>(), output.data_ptr<scalar_t>(),
                       gates.data_ptr<scalar_t>(), cell.data_ptr<scalar_t>(), reverse,
                       dgates.data_ptr<scalar_t>(), grad_h0.data_ptr<scalar_t>(),
                       grad_c0.data_ptr<scalar_t>(), grad_input.data_ptr<scalar_t>(),
                       grad_w_ih.data_ptr<scalar_t>(), grad_w_hh.data_ptr<scalar_t>());
  });
  at::Tensor grad_bias = dgates.view({n.T * n.B, 4 * n.H}).sum(0);
  return {grad_input, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_lstm, CPU, m) {
  m.impl("lstm_layer", &lstm_layer);
  m.impl("lstm_layer_backward", &lstm_layer_backward);
}

}  // namespace fused_lstm::cpu
