// lstm_stack for every device: its checks, and the layer-by-layer loop over lstm_layer that
// backends without a stacked kernel of their own run (registered CompositeExplicitAutograd;
// the CPU's kernel in cpu/lstm_stack_cpu.cpp takes over on the CPU).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

#include "ops.h"

namespace fused_lstm {

StackLayout check_stack(const at::Tensor& h0, const at::Tensor& c0, at::TensorList weights,
                        bool has_biases, int64_t num_layers, bool bidirectional) {
  TORCH_CHECK(num_layers >= 1, "num_layers must be at least 1, got ", num_layers);
  const int64_t D = bidirectional ? 2 : 1, LD = num_layers * D;
  TORCH_CHECK(h0.dim() == 3 && h0.size(0) == LD, "h0 must be 3-D (", LD,
              " = layers * directions, B, P), got ", h0.sizes());
  TORCH_CHECK(c0.dim() == 3 && c0.size(0) == LD, "c0 must be 3-D (", LD,
              " = layers * directions, B, H), got ", c0.sizes());
  const int64_t plain = has_biases ? 4 : 2;
  const int64_t count = static_cast<int64_t>(weights.size());
  TORCH_CHECK(count == LD * plain || count == LD * (plain + 1), "weights must hold ", plain,
              " (or ", plain + 1, " with projections) tensors for each of the ", LD,
              " layers and directions, ", LD * plain, " or ", LD * (plain + 1), " in all, got ",
              count);
  const int64_t per = count / LD;
  return {num_layers, D, per, has_biases, per > plain};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> stack_layers(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    at::TensorList weights, bool has_biases, int64_t num_layers, bool bidirectional,
    const std::optional<at::Tensor>& batch_sizes) {
  const StackLayout s = check_stack(h0, c0, weights, has_biases, num_layers, bidirectional);
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fused_lstm::lstm_layer", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
              const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
              const at::Tensor&, const std::optional<at::Tensor>&,
              const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, bool, bool)>();
  at::Tensor x = input;
  std::vector<at::Tensor> h_n, c_n;
  for (int64_t l = 0; l < s.layers; ++l) {
    std::vector<at::Tensor> outputs;
    for (int64_t d = 0; d < s.directions; ++d) {
      const int64_t k = l * s.directions + d;
      const at::Tensor* w = weights.data() + k * s.per;
      const std::optional<at::Tensor> bias =
          s.has_biases ? std::optional<at::Tensor>(w[2] + w[3]) : std::nullopt;
      const std::optional<at::Tensor> w_hr =
          s.proj ? std::optional<at::Tensor>(w[s.per - 1]) : std::nullopt;
      auto [y, h, c, gates, cell] =
          op.call(x, h0[k], c0[k], w[0], w[1], bias, w_hr, batch_sizes, d == 1, false);
      outputs.push_back(y);
      h_n.push_back(h);
      c_n.push_back(c);
    }
    x = s.directions == 2 ? at::cat(outputs, -1) : outputs[0];
  }
  return {x, at::stack(h_n), at::stack(c_n)};
}

TORCH_LIBRARY_IMPL(fused_lstm, CompositeExplicitAutograd, m) {
  m.impl("lstm_stack", &stack_layers);
}

}  // namespace fused_lstm
