// lstm_stack and lstm_stack_train for every device: their checks, lstm_stack's autograd
// kernel, and the layer-by-layer loops over lstm_layer. Under autograd, a unidirectional stack
// without projections or dropout is one node over lstm_stack_train (csrc/autograd.cpp); other
// stacks build the graph from lstm_layer's own autograd (one node per layer and direction).
// Without gradients the op goes below autograd, to the CPU's kernel (cpu/lstm_stack_cpu.cpp)
// or, on other backends, the same loop (CompositeExplicitAutograd); so does lstm_stack_train.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

#include "ops.h"

namespace fused_lstm {
namespace {

const auto& layer_op() {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fused_lstm::lstm_layer", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
              const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
              const at::Tensor&, const std::optional<at::Tensor>&,
              const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, bool, bool)>();
  return op;
}

}  // namespace

StackLayout check_stack(const at::Tensor& h0, const at::Tensor& c0, at::TensorList weights,
                        bool has_biases, int64_t num_layers, bool bidirectional) {
  TORCH_CHECK(num_layers >= 1, "num_layers must be at least 1, got ", num_layers);
  const int64_t D = bidirectional ? 2 : 1, LD = num_layers * D;
  // sym_size: under torch.compile the batch size may be symbolic (and unbacked).
  TORCH_CHECK(h0.dim() == 3 && h0.sym_size(0) == LD, "h0 must be 3-D (", LD,
              " = layers * directions, B, P), got ", h0.sym_sizes());
  TORCH_CHECK(c0.dim() == 3 && c0.sym_size(0) == LD, "c0 must be 3-D (", LD,
              " = layers * directions, B, H), got ", c0.sym_sizes());
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
    at::TensorList weights, bool has_biases, int64_t num_layers, double dropout, bool train,
    bool bidirectional, const std::optional<at::Tensor>& batch_sizes, bool keep_state) {
  const StackLayout s = check_stack(h0, c0, weights, has_biases, num_layers, bidirectional);
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
          layer_op().call(x, h0[k], c0[k], w[0], w[1], bias, w_hr, batch_sizes, d == 1,
                          keep_state);
      outputs.push_back(y);
      h_n.push_back(h);
      c_n.push_back(c);
    }
    x = s.directions == 2 ? at::cat(outputs, -1) : outputs[0];
    if (train && dropout > 0 && l + 1 < s.layers) x = at::dropout(x, dropout, true);
  }
  return {x, at::stack(h_n), at::stack(c_n)};
}

StackLayout check_stack_train(const at::Tensor& h0, const at::Tensor& c0, at::TensorList weights,
                              bool has_biases, int64_t num_layers) {
  const StackLayout s = check_stack(h0, c0, weights, has_biases, num_layers, false);
  TORCH_CHECK(!s.proj, "lstm_stack_train takes no projections: weights must hold ",
              has_biases ? 4 : 2, " tensors per layer, got ", s.per);
  return s;
}

StackTrainOutputs stack_train_layers(const at::Tensor& input, const at::Tensor& h0,
                                     const at::Tensor& c0, at::TensorList weights,
                                     bool has_biases, int64_t num_layers,
                                     const std::optional<at::Tensor>& batch_sizes) {
  const StackLayout s = check_stack_train(h0, c0, weights, has_biases, num_layers);
  std::vector<at::Tensor> outputs, h_n, c_n, gates, cells;
  for (int64_t l = 0; l < s.layers; ++l) {
    const at::Tensor* w = weights.data() + l * s.per;
    const std::optional<at::Tensor> bias =
        s.has_biases ? std::optional<at::Tensor>(w[2] + w[3]) : std::nullopt;
    auto [y, h, c, g, cell] = layer_op().call(l == 0 ? input : outputs.back(), h0[l], c0[l],
                                              w[0], w[1], bias, std::nullopt, batch_sizes,
                                              false, true);
    outputs.push_back(y);
    h_n.push_back(h);
    c_n.push_back(c);
    gates.push_back(g);
    cells.push_back(cell);
  }
  return {outputs, at::stack(h_n), at::stack(c_n), gates, cells};
}

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_stack_no_grad(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    at::TensorList weights, bool has_biases, int64_t num_layers, double dropout, bool train,
    bool bidirectional, const std::optional<at::Tensor>& batch_sizes) {
  return stack_layers(input, h0, c0, weights, has_biases, num_layers, dropout, train,
                      bidirectional, batch_sizes, false);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_stack_autograd(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    at::TensorList weights, bool has_biases, int64_t num_layers, double dropout, bool train,
    bool bidirectional, const std::optional<at::Tensor>& batch_sizes) {
  bool grad = input.requires_grad() || h0.requires_grad() || c0.requires_grad();
  for (const at::Tensor& w : weights) grad = grad || w.requires_grad();
  if (grad && at::GradMode::is_enabled()) {
    const StackLayout s = check_stack(h0, c0, weights, has_biases, num_layers, bidirectional);
    if (s.directions == 1 && !s.proj && !(train && dropout > 0)) {
      return stack_with_grad(input, h0, c0, weights, has_biases, num_layers, batch_sizes);
    }
    return stack_layers(input, h0, c0, weights, has_biases, num_layers, dropout, train,
                        bidirectional, batch_sizes, true);
  }
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fused_lstm::lstm_stack", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
              const at::Tensor&, const at::Tensor&, const at::Tensor&, at::TensorList, bool,
              int64_t, double, bool, bool, const std::optional<at::Tensor>&)>();
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op.call(input, h0, c0, weights, has_biases, num_layers, dropout, train, bidirectional,
                 batch_sizes);
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_lstm, CompositeExplicitAutograd, m) {
  m.impl("lstm_stack", &lstm_stack_no_grad);
  m.impl("lstm_stack_train", &stack_train_layers);
}

TORCH_LIBRARY_IMPL(fused_lstm, Autograd, m) { m.impl("lstm_stack", &lstm_stack_autograd); }

}  // namespace fused_lstm
