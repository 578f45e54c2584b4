// The autograd formulas of fused_lstm::lstm_layer and of lstm_stack's unidirectional stacks
// (for every device, under the Autograd key): forward runs the op below autograd and saves
// what lstm_layer_backward needs.
//
// In C++ rather than torch.library.register_autograd: the Python wrapper cost ~200 us per
// layer call in training (at the seed's stock shape, forward + backward through FusedLSTM
// took 5.25 ms against 4.08 ms for the same four op calls made directly), most of it
// torch's own Python glue (filling in the schema's defaults alone took 55 us per call).
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

#include "ops.h"

namespace fused_lstm {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using LayerOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

at::Tensor or_undefined(const std::optional<at::Tensor>& t) {
  return t.has_value() ? *t : at::Tensor();
}

std::optional<at::Tensor> or_none(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

const auto& layer_backward_op() {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fused_lstm::lstm_layer_backward", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                            at::Tensor, at::Tensor>(
              const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
              const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&,
              const at::Tensor&, const at::Tensor&, const at::Tensor&,
              const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
              const at::Tensor&, const at::Tensor&, const at::Tensor&, bool, bool)>();
  return op;
}

class LstmLayer : public torch::autograd::Function<LstmLayer> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input,
                               const at::Tensor& h0, const at::Tensor& c0,
                               const at::Tensor& w_ih, const at::Tensor& w_hh,
                               const std::optional<at::Tensor>& bias,
                               const std::optional<at::Tensor>& w_hr,
                               const std::optional<at::Tensor>& batch_sizes, bool reverse,
                               bool train) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("fused_lstm::lstm_layer", "")
                               .typed<LayerOutputs(const at::Tensor&, const at::Tensor&,
                                                   const at::Tensor&, const at::Tensor&,
                                                   const at::Tensor&,
                                                   const std::optional<at::Tensor>&,
                                                   const std::optional<at::Tensor>&,
                                                   const std::optional<at::Tensor>&, bool,
                                                   bool)>();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [output, h_n, c_n, gates, cell] =
        op.call(input, h0, c0, w_ih, w_hh, bias, w_hr, batch_sizes, reverse, train);
    ctx->save_for_backward({input, h0, c0, w_ih, w_hh, or_undefined(w_hr),
                            or_undefined(batch_sizes), output, gates, cell});
    ctx->saved_data["reverse"] = reverse;
    ctx->saved_data["has_bias"] = bias.has_value();
    ctx->mark_non_differentiable({gates, cell});
    // Outputs the loss does not use get no gradient, not a materialized tensor of zeros
    // (the kernel treats a missing gradient as zero without reading memory).
    ctx->set_materialize_grads(false);
    return {output, h_n, c_n, gates, cell};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    const at::Tensor &input = s[0], &h0 = s[1], &c0 = s[2], &w_ih = s[3], &w_hh = s[4];
    const at::Tensor &w_hr = s[5], &batch_sizes = s[6], &output = s[7], &gates = s[8];
    const at::Tensor& cell = s[9];
    const bool input_grad = ctx->needs_input_grad(0);
    auto [grad_input, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_w_hr, grad_bias] =
        layer_backward_op().call(or_none(grads[0]), or_none(grads[1]), or_none(grads[2]), input,
                                 h0, c0, w_ih, w_hh, or_none(w_hr), or_none(batch_sizes),
                                 output, gates, cell, ctx->saved_data["reverse"].toBool(),
                                 input_grad);
    const at::Tensor none;
    return {input_grad ? grad_input : none,
            grad_h0,
            grad_c0,
            grad_w_ih,
            grad_w_hh,
            ctx->saved_data["has_bias"].toBool() ? grad_bias : none,
            w_hr.defined() ? grad_w_hr : none,
            none,
            none,
            none};
  }
};

LayerOutputs lstm_layer_autograd(const at::Tensor& input, const at::Tensor& h0,
                                 const at::Tensor& c0, const at::Tensor& w_ih,
                                 const at::Tensor& w_hh, const std::optional<at::Tensor>& bias,
                                 const std::optional<at::Tensor>& w_hr,
                                 const std::optional<at::Tensor>& batch_sizes, bool reverse,
                                 bool train) {
  const variable_list out =
      LstmLayer::apply(input, h0, c0, w_ih, w_hh, bias, w_hr, batch_sizes, reverse, train);
  return {out[0], out[1], out[2], out[3], out[4]};
}

// lstm_stack with gradients as one node (unidirectional, no projections, no dropout): the
// forward is lstm_stack_train (on the CPU one wavefront over the layers), the backward
// lstm_layer_backward per layer from the top down, each layer's grad_input the grad_output of
// the layer below. Compared with one node per layer this also saves the graph's glue: the
// bias sums, the h0/c0 slices, the stacks of h_n and c_n.
class LstmStack : public torch::autograd::Function<LstmStack> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input,
                               const at::Tensor& h0, const at::Tensor& c0,
                               at::TensorList weights, bool has_biases, int64_t num_layers,
                               const std::optional<at::Tensor>& batch_sizes) {
    static const auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("fused_lstm::lstm_stack_train", "")
            .typed<StackTrainOutputs(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     at::TensorList, bool, int64_t,
                                     const std::optional<at::Tensor>&)>();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [outputs, h_n, c_n, gates, cells] =
        op.call(input, h0, c0, weights, has_biases, num_layers, batch_sizes);
    // Saved: input, h0, c0, batch_sizes, then per layer its weights, output, gates, cells.
    variable_list saved{input, h0, c0, or_undefined(batch_sizes)};
    saved.insert(saved.end(), weights.begin(), weights.end());
    for (const auto* list : {&outputs, &gates, &cells}) {
      saved.insert(saved.end(), list->begin(), list->end());
    }
    ctx->save_for_backward(saved);
    ctx->saved_data["has_bias"] = has_biases;
    ctx->saved_data["layers"] = num_layers;
    ctx->set_materialize_grads(false);  // as LstmLayer's
    return {outputs.back(), h_n, c_n};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const int64_t L = ctx->saved_data["layers"].toInt(), per = has_bias ? 4 : 2;
    const at::Tensor &input = s[0], &h0 = s[1], &c0 = s[2], &batch_sizes = s[3];
    const at::Tensor* weights = s.data() + 4;
    const at::Tensor* outputs = weights + L * per;
    const at::Tensor* gates = outputs + L;
    const at::Tensor* cells = gates + L;
    // Gradients in the forward's argument order: input, h0, c0, the weights, then none for
    // has_biases, num_layers, batch_sizes. Edges (needs_input_grad) count tensors only.
    variable_list out(3 + L * per + 3);
    std::vector<at::Tensor> dh0(L), dc0(L);
    at::Tensor dy = grads[0];
    for (int64_t l = L - 1; l >= 0; --l) {
      const at::Tensor* w = weights + l * per;
      const bool input_grad = l > 0 || ctx->needs_input_grad(0);
      const auto state = [&](const at::Tensor& g) {
        return g.defined() ? std::optional<at::Tensor>(g[l]) : std::nullopt;
      };
      auto [grad_input, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_w_hr, grad_bias] =
          layer_backward_op().call(or_none(dy), state(grads[1]), state(grads[2]),
                                   l == 0 ? input : outputs[l - 1], h0[l], c0[l], w[0], w[1],
                                   std::nullopt, or_none(batch_sizes), outputs[l], gates[l],
                                   cells[l], false, input_grad);
      dy = input_grad ? grad_input : at::Tensor();
      dh0[l] = grad_h0;
      dc0[l] = grad_c0;
      at::Tensor* dw = out.data() + 3 + l * per;
      dw[0] = grad_w_ih;
      dw[1] = grad_w_hh;
      if (has_bias) dw[2] = dw[3] = grad_bias;  // b_ih and b_hh enter as their sum
    }
    out[0] = dy;
    if (ctx->needs_input_grad(1)) out[1] = at::stack(dh0);
    if (ctx->needs_input_grad(2)) out[2] = at::stack(dc0);
    return out;
  }
};

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> stack_with_grad(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    at::TensorList weights, bool has_biases, int64_t num_layers,
    const std::optional<at::Tensor>& batch_sizes) {
  const variable_list out =
      LstmStack::apply(input, h0, c0, weights, has_biases, num_layers, batch_sizes);
  return {out[0], out[1], out[2]};
}

TORCH_LIBRARY_IMPL(fused_lstm, Autograd, m) { m.impl("lstm_layer", &lstm_layer_autograd); }

}  // namespace fused_lstm
