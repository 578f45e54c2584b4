// Op schemas of the fused_lstm namespace and the checks every implementation runs first.
#include "ops.h"

#include <Python.h>

namespace fused_lstm {

LayerSizes check_forward(const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
                         const at::Tensor& w_ih, const at::Tensor& w_hh,
                         const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(input.dim() == 3, "input must be 3-D (T, B, I), got ", input.dim(), "-D");
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
              "input must be float32 or float64, got ", input.scalar_type());
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) % 4 == 0, "w_hh must be 2-D (4H, H), got ",
              w_hh.sizes());
  const LayerSizes n{input.size(0), input.size(1), input.size(2), w_hh.size(0) / 4};
  CHECK_TENSOR(w_hh, input, 4 * n.H, n.H);
  CHECK_TENSOR(w_ih, input, 4 * n.H, n.I);
  CHECK_TENSOR(h0, input, n.B, n.H);
  CHECK_TENSOR(c0, input, n.B, n.H);
  if (bias.has_value()) {
    CHECK_TENSOR(*bias, input, 4 * n.H);
  }
  return n;
}

LayerSizes check_backward(const std::optional<at::Tensor>& grad_output,
                          const std::optional<at::Tensor>& grad_h_n,
                          const std::optional<at::Tensor>& grad_c_n, const at::Tensor& input,
                          const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
                          const at::Tensor& w_hh, const at::Tensor& output,
                          const at::Tensor& gates, const at::Tensor& cell) {
  const LayerSizes n = check_forward(input, h0, c0, w_ih, w_hh, std::nullopt);
  TORCH_CHECK(gates.numel() > 0 || n.T * n.B * n.H == 0,
              "lstm_layer_backward needs the gates saved by lstm_layer(..., train=True)");
  CHECK_TENSOR(output, input, n.T, n.B, n.H);
  CHECK_TENSOR(gates, input, n.T, n.B, 4 * n.H);
  CHECK_TENSOR(cell, input, n.T, n.B, n.H);
  if (grad_output.has_value()) {
    CHECK_TENSOR(*grad_output, input, n.T, n.B, n.H);
  }
  if (grad_h_n.has_value()) {
    CHECK_TENSOR(*grad_h_n, input, n.B, n.H);
  }
  if (grad_c_n.has_value()) {
    CHECK_TENSOR(*grad_c_n, input, n.B, n.H);
  }
  return n;
}

TORCH_LIBRARY(fused_lstm, m) {
  // One layer, one direction. `reverse` runs time backwards (the reverse direction of a
  // bidirectional LSTM) without flipping the input. With train=True the activated gates
  // [T, B, 4H] and cell states [T, B, H] are returned for backward; with train=False they
  // come back empty and nothing per step is kept.
  m.def(
      "lstm_layer(Tensor input, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? bias, "
      "bool reverse, bool train) -> (Tensor output, Tensor h_n, Tensor c_n, Tensor gates, "
      "Tensor cell)");
  // Gradients of lstm_layer. Missing incoming gradients count as zero. grad_bias is the
  // gradient of the summed bias (b_ih + b_hh), computed whether or not the layer has one.
  m.def(
      "lstm_layer_backward(Tensor? grad_output, Tensor? grad_h_n, Tensor? grad_c_n, "
      "Tensor input, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor output, "
      "Tensor gates, Tensor cell, bool reverse) -> (Tensor grad_input, Tensor grad_h0, "
      "Tensor grad_c0, Tensor grad_w_ih, Tensor grad_w_hh, Tensor grad_bias)");
}

}  // namespace fused_lstm

// `import fused_lstm._C` loads this library, which registers the ops above; the Python
// module itself is empty.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
