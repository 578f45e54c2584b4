// The CPU kernels of lstm_stack and lstm_stack_train: unidirectional float32 layers without
// projections run as one wavefront of the fused forward (isa/fused_forward.h), step s of every
// layer before step s + 1 of any; everything else layer by layer (stack_layers and
// stack_train_layers, ops.h). lstm_stack runs here only below autograd; with gradients its
// autograd kernel (csrc/lstm_stack.cpp) takes lstm_stack_train, which keeps each layer's
// gates and cell states for the backward.
//
// Why: the layers' steps share one parallel region, and with the batch split across the
// threads, a thread's rows of layer l + 1 read only its own rows of layer l, so no layer waits
// for another thread; each step's output is read back from cache by the next layer; and the
// call costs one op dispatch, not one per layer plus the glue between them.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

#include "../ops.h"
#include "buffer_cache.h"
#include "lstm_cpu.h"

namespace fused_lstm::cpu {
namespace {

// Layer l's weights in lstm_stack's flat list, contiguous; the biases are summed as the
// kernel packs the weights.
struct StackWeights {
  at::Tensor w_ih, w_hh;
  std::optional<at::Tensor> b_ih, b_hh;
};

StackWeights layer_weights(at::TensorList weights, const StackLayout& s, int64_t l) {
  const at::Tensor* w = weights.data() + l * s.per;
  if (!s.has_biases) return {w[0].contiguous(), w[1].contiguous(), std::nullopt, std::nullopt};
  return {w[0].contiguous(), w[1].contiguous(), w[2].contiguous(), w[3].contiguous()};
}

// Whether the stack runs as a wavefront: the fused kernels for every layer, no hoisted
// projection (a layer's input arrives a step at a time), more than one layer.
bool wavefront(const at::Tensor& input, const at::Tensor& c0, const StackLayout& s,
               const FusedKernels& kernels, const std::optional<at::Tensor>& batch_sizes) {
  if (s.directions != 1 || s.proj || s.layers < 2 || s.layers > kMaxWavefrontLayers ||
      !kernels.forward || input.scalar_type() != at::kFloat || input.numel() == 0) {
    return false;
  }
  // Every layer has the same rows, so the first layer's sizes decide for all of them.
  LayerSizes n;
  n.B = c0.size(1);
  n.T = batch_sizes.has_value() ? batch_sizes->size(0) : input.size(0);
  n.N = batch_sizes.has_value() ? input.size(0) : n.T * n.B;
  return !hoist_projection(n) && use_fused(n, input, true, false);
}

// The layers of a stack that wavefront() accepts, all T steps; with `train` each layer also
// keeps its activated gates and cell states (lstm_layer's with train=True).
struct Wavefront {
  std::vector<at::Tensor> outputs, gates, cells;
  at::Tensor h_n, c_n;  // [layers, B, H]
};

Wavefront run_wavefront(const at::Tensor& input_, const at::Tensor& h0_, const at::Tensor& c0,
                        at::TensorList weights, const StackLayout& s, bool train,
                        const FusedKernels& kernels,
                        const std::optional<at::Tensor>& batch_sizes) {
  const auto opts = input_.options();
  const at::Tensor input = input_.contiguous(), h0 = h0_.contiguous();
  Wavefront r;
  r.c_n = c0.contiguous().clone();  // the running c of every layer: c0 in, c_n out
  const int64_t B = c0.size(1), H = c0.size(2);
  r.h_n = at::empty({s.layers, B, H}, opts);
  std::vector<LayerSizes> sizes;
  sizes.reserve(s.layers);  // the layers' args point into their offsets
  std::vector<StackWeights> w;
  std::vector<at::Tensor> panels;
  std::vector<FusedForwardArgs> args;
  std::vector<float*> panel_ptrs;
  for (int64_t l = 0; l < s.layers; ++l) {
    const at::Tensor x = l == 0 ? input : r.outputs.back();
    const StackWeights& lw = w.emplace_back(layer_weights(weights, s, l));
    const LayerSizes& n = sizes.emplace_back(check_forward(
        x, h0[l], r.c_n[l], lw.w_ih, lw.w_hh, lw.b_ih, std::nullopt, batch_sizes));
    if (lw.b_hh.has_value()) {
      const at::Tensor& b_hh = *lw.b_hh;
      CHECK_TENSOR(b_hh, x, 4 * n.H);
    }
    const auto rows = [&](int64_t features) {
      std::vector<int64_t> shape = x.sizes().vec();
      shape.back() = features;
      return cached_empty(shape, opts);
    };
    r.outputs.push_back(rows(n.H));
    if (train) {
      r.gates.push_back(rows(4 * n.H));
      r.cells.push_back(rows(n.H));
    }
    const auto ptr = [](const std::optional<at::Tensor>& b) {
      return b.has_value() ? b->data_ptr<float>() : nullptr;
    };
    args.push_back(fused_forward_args(
        n, x, h0.data_ptr<float>() + l * B * H, lw.w_ih, lw.w_hh, ptr(lw.b_ih), ptr(lw.b_hh),
        false, train, r.outputs[l], train ? r.cells[l] : at::Tensor(),
        r.c_n.data_ptr<float>() + l * B * H));
    if (train) args[l].gates = r.gates[l].data_ptr<float>();
    panels.push_back(cached_empty({kernels.panel_floats(n.I, n.H, false)}, opts));
    panel_ptrs.push_back(panels[l].data_ptr<float>());
  }
  at::Tensor partial = at::empty({args[0].num_threads * B * 64}, opts);
  for (FusedForwardArgs& a : args) a.partial = partial.data_ptr<float>();
  kernels.forward(args.data(), s.layers, panel_ptrs.data(), true);
  for (int64_t l = 0; l < s.layers; ++l) {
    copy_last_hidden(sizes[l], r.outputs[l], false, r.h_n.data_ptr<float>() + l * B * H);
  }
  return r;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_stack(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    at::TensorList weights, bool has_biases, int64_t num_layers, double dropout, bool train,
    bool bidirectional, const std::optional<at::Tensor>& batch_sizes) {
  const StackLayout s = check_stack(h0, c0, weights, has_biases, num_layers, bidirectional);
  const FusedKernels kernels = fused_kernels();
  if ((train && dropout > 0) || !wavefront(input, c0, s, kernels, batch_sizes)) {
    return stack_layers(input, h0, c0, weights, has_biases, num_layers, dropout, train,
                        bidirectional, batch_sizes, false);
  }
  Wavefront r = run_wavefront(input, h0, c0, weights, s, false, kernels, batch_sizes);
  return {r.outputs.back(), r.h_n, r.c_n};
}

StackTrainOutputs lstm_stack_train(const at::Tensor& input, const at::Tensor& h0,
                                   const at::Tensor& c0, at::TensorList weights,
                                   bool has_biases, int64_t num_layers,
                                   const std::optional<at::Tensor>& batch_sizes) {
  const StackLayout s = check_stack_train(h0, c0, weights, has_biases, num_layers);
  const FusedKernels kernels = fused_kernels();
  if (!wavefront(input, c0, s, kernels, batch_sizes)) {
    return stack_train_layers(input, h0, c0, weights, has_biases, num_layers, batch_sizes);
  }
  Wavefront r = run_wavefront(input, h0, c0, weights, s, true, kernels, batch_sizes);
  return {r.outputs, r.h_n, r.c_n, r.gates, r.cells};
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_lstm, CPU, m) {
  m.impl("lstm_stack", &lstm_stack);
  m.impl("lstm_stack_train", &lstm_stack_train);
}

}  // namespace fused_lstm::cpu
