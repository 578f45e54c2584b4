// CPU bindings of the fused_lstm ops: checks, buffers, the choice of kernels. The time loops
// are in isa/fused_*.h (float32 on AVX2/AVX-512, no projection) and lstm_layer.h (the rest).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstring>

#include "../ops.h"
#include "buffer_cache.h"
#include "lstm_cpu.h"
#include "lstm_layer.h"

namespace fused_lstm::cpu {
namespace {

// Without train, the input projection is computed a chunk of steps at a time so that
// inference memory stays flat in T: chunks of gates as large as the layer's weights, and at
// least this many elements. Smaller chunks cost DRAM traffic: each chunk's GEMM streams
// W_ih through L3 and the steps after it W_hh, each evicting the other (H = 1024, B = 16,
// 32 MB of weights: forward 82.7 ms with chunks of 4 MB, 76.4-76.9 with 16-64 MB, in-process
// A/B).
constexpr int64_t kInferenceChunkElems = int64_t{1} << 20;

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

at::Tensor contiguous_or_undefined(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->contiguous() : at::Tensor();
}

// Shape of a per-row tensor with `features` columns in the input's layout: all its rows, or
// none (the per-step state that inference does not keep).
std::vector<int64_t> rows_shape(const at::Tensor& input, bool all_rows, int64_t features) {
  if (input.dim() == 3) {
    return {all_rows ? input.size(0) : 0, input.size(1), features};
  }
  return {all_rows ? input.size(0) : 0, features};
}

template <typename T>
LayerParams<T> layer_params(const LayerSizes& n, const at::Tensor& input, const at::Tensor& w_ih,
                            const at::Tensor& w_hh, const at::Tensor& w_hr,
                            const at::Tensor& bias, bool reverse) {
  return {n.T, n.B, n.I, n.H, n.P, &n.offsets, reverse, input.data_ptr<T>(),
          w_ih.data_ptr<T>(), w_hh.data_ptr<T>(), ptr_or_null<T>(w_hr), ptr_or_null<T>(bias)};
}

}  // namespace

bool hoist_projection(const LayerSizes& n) {
  constexpr int64_t kHoistMaxBatch = 16;
  return n.B <= kHoistMaxBatch;
}

bool use_fused(const LayerSizes& n, const at::Tensor& input, bool has_kernel, bool proj) {
  constexpr int64_t kMinSteps = 8, kMinRows = 32, kMidMinRows = 4;
  const bool mid_hidden = n.H >= 256 && n.H <= 512;
  return input.scalar_type() == at::kFloat && has_kernel && !proj &&
         (n.T >= kMinSteps || n.N >= kMinRows || (mid_hidden && n.N >= kMidMinRows));
}

FusedForwardArgs fused_forward_args(const LayerSizes& n, const at::Tensor& input,
                                    const float* h0, const at::Tensor& w_ih,
                                    const at::Tensor& w_hh, const float* b_ih,
                                    const float* b_hh, bool reverse, bool train,
                                    const at::Tensor& output, const at::Tensor& cell,
                                    float* c_n) {
  return {n.T, n.B, n.I, n.H, n.offsets.data(), reverse, hoist_projection(n), 0, n.T,
          input.data_ptr<float>(), w_ih.data_ptr<float>(), w_hh.data_ptr<float>(), b_ih, b_hh,
          h0, nullptr, 0,
          output.data_ptr<float>(), train ? cell.data_ptr<float>() : nullptr,
          c_n, nullptr, at::get_num_threads()};
}

void copy_last_hidden(const LayerSizes& n, const at::Tensor& output, bool reverse, void* dst) {
  TORCH_INTERNAL_ASSERT(output.is_contiguous());
  // Each sequence's h_n is its output at its own last step: step 0 for all of them in the
  // reverse direction; forward, step t is the last for sequences [rows(t + 1), rows(t)).
  // Plain copies: at T = 1 and (B, H) = (32, 50), two layers, the ops' copy_ and stack took
  // 4.3-4.9 us of a 32 us call, these 0.3.
  const int64_t row = output.size(-1) * output.element_size();
  const char* y = static_cast<const char*>(output.const_data_ptr());
  char* h = static_cast<char*>(dst);
  if (reverse) {
    std::memcpy(h, y, n.B * row);
    return;
  }
  for (int64_t t = 0; t < n.T; ++t) {
    const int64_t lo = t + 1 < n.T ? n.rows(t + 1) : 0, hi = n.rows(t);
    if (hi > lo) std::memcpy(h + lo * row, y + (n.offsets[t] + lo) * row, (hi - lo) * row);
  }
}

namespace {

at::Tensor last_hidden(const LayerSizes& n, const at::Tensor& output, bool reverse) {
  at::Tensor h_n = at::empty({n.B, output.size(-1)}, output.options());
  copy_last_hidden(n, output, reverse, h_n.data_ptr());
  return h_n;
}

// The fused float32 forward (isa/fused_forward.h): writes output, cell (when training), the
// activated gates (when training), c_n; returns h_n.
at::Tensor fused_forward(const FusedKernels& kernels, const LayerSizes& n, const at::Tensor& input,
                         const at::Tensor& h0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                         const at::Tensor& bias, bool reverse, bool train, int64_t chunk,
                         at::Tensor& workspace, at::Tensor& output, at::Tensor& cell,
                         at::Tensor& c_n) {
  FusedForwardArgs args =
      fused_forward_args(n, input, h0.data_ptr<float>(), w_ih, w_hh, bias.data_ptr<float>(),
                         nullptr, reverse, train, output, cell, c_n.data_ptr<float>());
  const bool hoisted = args.hoisted;
  at::Tensor panels = cached_empty({kernels.panel_floats(n.I, n.H, hoisted)}, input.options());
  float* panel_ptr = panels.data_ptr<float>();
  at::Tensor partial = at::empty({args.num_threads * n.B * 64}, input.options());
  args.partial = partial.data_ptr<float>();
  const int64_t G = 4 * n.H;
  float* ws = workspace.data_ptr<float>();
  if (!hoisted) {
    args.gates = train ? ws : nullptr;
    kernels.forward(&args, 1, &panel_ptr, true);
  }
  // Hoisted: the projection of a chunk of steps (all of them when training) by one GEMM,
  // then the fused steps of that chunk; chunk rows are contiguous in either direction.
  GemmReuse w_ih_packed;  // packed by the first chunk's GEMM
  for (int64_t s0 = 0; hoisted && s0 < n.T; s0 += chunk) {
    const int64_t s1 = std::min(s0 + chunk, n.T);
    const int64_t t_lo = reverse ? n.T - s1 : s0, t_hi = reverse ? n.T - 1 - s0 : s1 - 1;
    const int64_t row_lo = n.offsets[t_lo], row_hi = n.offsets[t_hi + 1];
    float* gates = train ? ws + row_lo * G : ws;
    layer_gemm<float>(false, true, row_hi - row_lo, G, n.I,
                      input.data_ptr<float>() + row_lo * n.I, n.I, w_ih.data_ptr<float>(), n.I,
                      0.0f, gates, G, 0, &w_ih_packed);
    args.s0 = s0;
    args.s1 = s1;
    args.gates = gates;
    args.gates_row0 = row_lo;
    kernels.forward(&args, 1, &panel_ptr, s0 == 0);  // the first chunk packs the panels
  }
  return last_hidden(n, output, reverse);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer(
    const at::Tensor& input_, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih_,
    const at::Tensor& w_hh_, const std::optional<at::Tensor>& bias_,
    const std::optional<at::Tensor>& w_hr_, const std::optional<at::Tensor>& batch_sizes,
    bool reverse, bool train) {
  const LayerSizes n = check_forward(input_, h0, c0, w_ih_, w_hh_, bias_, w_hr_, batch_sizes);
  const BlasDeterminism determinism;
  const auto opts = input_.options();
  const at::Tensor input = input_.contiguous(), w_ih = w_ih_.contiguous();
  const at::Tensor w_hh = w_hh_.contiguous(), w_hr = contiguous_or_undefined(w_hr_);
  const at::Tensor bias = bias_.has_value() ? bias_->contiguous() : at::zeros({4 * n.H}, opts);

  // Steps whose input projection is one GEMM: all of them when training (the activated
  // gates are kept for backward), else a chunk of bounded size.
  const int64_t chunk_elems = std::max(kInferenceChunkElems, 4 * n.H * (n.I + n.P));
  const int64_t chunk = train ? n.T : std::min(n.T, std::max<int64_t>(
      1, chunk_elems / std::max<int64_t>(n.B * 4 * n.H, 1)));
  at::Tensor gates = cached_empty(rows_shape(input, train, 4 * n.H), opts);
  at::Tensor cell = cached_empty(rows_shape(input, train, n.H), opts);
  at::Tensor output = cached_empty(rows_shape(input, true, n.P), opts);
  // The running c: starts as c0, ends as c_n (h likewise in the generic pass).
  at::Tensor c_n = c0.contiguous().clone();
  const FusedKernels fused = fused_kernels();
  const bool fused_path = use_fused(n, input, fused.forward != nullptr, w_hr.defined());
  // The projection buffer: the kept gates when training; without training, a bounded chunk
  // where a projection is computed ahead of the steps (the generic pass, or a hoisted one).
  const bool needs_chunk = !train && (!fused_path || hoist_projection(n));
  at::Tensor workspace =
      train ? gates : cached_empty({needs_chunk ? chunk * n.B : 0, 4 * n.H}, opts);
  if (fused_path && n.T > 0) {
    at::Tensor h_n = fused_forward(fused, n, input, h0.contiguous(), w_ih, w_hh, bias, reverse,
                                   train, chunk, workspace, output, cell, c_n);
    return {output, h_n, c_n, gates, cell};
  }
  at::Tensor h_n = h0.contiguous().clone();
  at::Tensor h_raw = at::empty({w_hr.defined() ? n.B : 0, n.H}, opts);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "lstm_layer", [&] {
    const auto p = layer_params<scalar_t>(n, input, w_ih, w_hh, w_hr, bias, reverse);
    ForwardPass<scalar_t>(p, train, chunk, workspace.data_ptr<scalar_t>(),
                          output.data_ptr<scalar_t>(), cell.data_ptr<scalar_t>(),
                          h_n.data_ptr<scalar_t>(), c_n.data_ptr<scalar_t>(),
                          h_raw.data_ptr<scalar_t>())
        .Run();
  });
  return {output, h_n, c_n, gates, cell};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_backward(const std::optional<at::Tensor>& grad_output,
                    const std::optional<at::Tensor>& grad_h_n,
                    const std::optional<at::Tensor>& grad_c_n, const at::Tensor& input_,
                    const at::Tensor& h0_, const at::Tensor& c0_, const at::Tensor& w_ih_,
                    const at::Tensor& w_hh_, const std::optional<at::Tensor>& w_hr_,
                    const std::optional<at::Tensor>& batch_sizes, const at::Tensor& output_,
                    const at::Tensor& gates_, const at::Tensor& cell_, bool reverse,
                    bool input_grad) {
  const LayerSizes n = check_backward(grad_output, grad_h_n, grad_c_n, input_, h0_, c0_, w_ih_,
                                      w_hh_, w_hr_, batch_sizes, output_, gates_, cell_);
  const BlasDeterminism determinism;
  const auto opts = input_.options();
  const at::Tensor input = input_.contiguous(), h0 = h0_.contiguous(), c0 = c0_.contiguous();
  const at::Tensor w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous();
  const at::Tensor w_hr = contiguous_or_undefined(w_hr_);
  const at::Tensor output = output_.contiguous(), gates = gates_.contiguous();
  const at::Tensor cell = cell_.contiguous(), dy = contiguous_or_undefined(grad_output);
  const bool proj = w_hr.defined();

  // dh / dc start as dL/dh_n, dL/dc_n and end as dL/dh0, dL/dc0.
  at::Tensor grad_h0 = state_grad(grad_h_n, n.B, n.P, opts);
  at::Tensor grad_c0 = state_grad(grad_c_n, n.B, n.H, opts);
  at::Tensor dgates = cached_empty({n.N, 4 * n.H}, opts);
  const FusedKernels fused = fused_kernels();
  const bool fused_path = use_fused(n, input, fused.backward != nullptr, proj);
  const int threads = at::get_num_threads();
  // The fused loop computes dW_ih and dW_hh itself where that pays (isa/weight_grads.h),
  // except in deterministic mode: its sum over threads depends on the thread count.
  const int64_t dw_floats = fused_path && !at::globalContext().deterministicAlgorithms()
                                ? fused.weight_grad_floats(n.B, n.I, n.H, threads)
                                : 0;
  // Each row's previous h for dW_hh, gathered only for packed input (see weight_gradients).
  const bool gather = (batch_sizes.has_value() && dw_floats == 0) || !fused_path;
  at::Tensor h_prev = cached_empty({gather ? n.N : 0, n.P}, opts);
  at::Tensor dh_all = at::empty({proj ? n.N : 0, n.P}, opts);
  at::Tensor h_raw = at::empty({proj ? n.N : 0, n.H}, opts);
  at::Tensor dh_raw = at::empty({proj ? n.B : 0, n.H}, opts);
  at::Tensor grad_input = cached_empty(input_grad ? input.sizes() : at::IntArrayRef{0}, opts);
  // The weight-gradient GEMMs (or the fused loop) overwrite these (beta = 0; gemm
  // zero-fills when k = 0).
  at::Tensor grad_w_ih = cached_empty({4 * n.H, n.I}, opts);
  at::Tensor grad_w_hh = cached_empty({4 * n.H, n.P}, opts);
  at::Tensor grad_w_hr = cached_empty({proj ? n.P : 0, n.H}, opts);

  if (fused_path) {
    at::Tensor panels = cached_empty({fused.column_panel_floats(4 * n.H, n.H)}, opts);
    // dx comes from the loop along with the weight gradients (the step's dgates rows are
    // hot), unless the panels would pad I by more than a third: measured with AVX-512
    // (64-column panels), I = 64 and I = 50 gained 4-5% and 2-3% of the backward, I = 32
    // lost 8%.
    const int64_t ih_floats = fused.column_panel_floats(4 * n.H, n.I);
    const int64_t padded_i = ih_floats / std::max<int64_t>(4 * n.H, 1);
    const bool loop_dx = dw_floats > 0 && input_grad && 3 * padded_i <= 4 * n.I;
    at::Tensor ih_panels = cached_empty({loop_dx ? ih_floats : 0}, opts);
    at::Tensor partial = at::empty({threads * n.B * 64}, opts);
    at::Tensor dw_scratch = at::empty({dw_floats}, opts);
    at::Tensor dbias = at::zeros({n.B, 4 * n.H}, opts);
    const FusedBackwardArgs args{
        n.T, n.B, n.I, n.H, n.offsets.data(), reverse, h0.data_ptr<float>(),
        c0.data_ptr<float>(), output.data_ptr<float>(), gates.data_ptr<float>(),
        cell.data_ptr<float>(), ptr_or_null<float>(dy), dgates.data_ptr<float>(),
        grad_h0.data_ptr<float>(), grad_c0.data_ptr<float>(),
        gather ? h_prev.data_ptr<float>() : nullptr, dbias.data_ptr<float>(),
        partial.data_ptr<float>(), threads, input.data_ptr<float>(),
        dw_floats > 0 ? dw_scratch.data_ptr<float>() : nullptr, grad_w_ih.data_ptr<float>(),
        grad_w_hh.data_ptr<float>(), w_hh.data_ptr<float>(), w_ih.data_ptr<float>(),
        loop_dx ? ih_panels.data_ptr<float>() : nullptr,
        loop_dx ? grad_input.data_ptr<float>() : nullptr};
    fused.backward(args, panels.data_ptr<float>());
    if (dw_floats == 0) {
      weight_gradients<float>(n, dgates.data_ptr<float>(),
                              gather ? h_prev.data_ptr<float>() : nullptr,
                              input.data_ptr<float>(), w_ih.data_ptr<float>(),
                              input_grad ? grad_input.data_ptr<float>() : nullptr,
                              grad_w_ih.data_ptr<float>(), grad_w_hh.data_ptr<float>(),
                              output.data_ptr<float>(), h0.data_ptr<float>(), reverse);
    } else if (input_grad && !loop_dx) {
      input_gradient<float>(n, dgates.data_ptr<float>(), w_ih.data_ptr<float>(),
                            grad_input.data_ptr<float>());
    }
    return {grad_input, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_w_hr, dbias.sum(0)};
  }
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "lstm_layer_backward", [&] {
    using T = scalar_t;
    const auto p = layer_params<T>(n, input, w_ih, w_hh, w_hr, at::Tensor(), reverse);
    const typename BackwardPass<T>::Buffers buf{
        dgates.data_ptr<T>(), grad_h0.data_ptr<T>(), grad_c0.data_ptr<T>(), h_prev.data_ptr<T>(),
        dh_all.data_ptr<T>(), h_raw.data_ptr<T>(), dh_raw.data_ptr<T>()};
    BackwardPass<T>(p, h0.data_ptr<T>(), c0.data_ptr<T>(), output.data_ptr<T>(),
                    gates.data_ptr<T>(), cell.data_ptr<T>(), ptr_or_null<T>(dy), buf)
        .Run(input_grad ? grad_input.data_ptr<T>() : nullptr, grad_w_ih.data_ptr<T>(),
             grad_w_hh.data_ptr<T>(), grad_w_hr.data_ptr<T>());
  });
  at::Tensor grad_bias = dgates.sum(0);
  return {grad_input, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_w_hr, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_lstm, CPU, m) {
  m.impl("lstm_layer", &lstm_layer);
  m.impl("lstm_layer_backward", &lstm_layer_backward);
}

}  // namespace fused_lstm::cpu
