// Op schemas of the fused_lstm namespace and the checks every implementation runs first.
#include "ops.h"

#include "cpu/buffer_cache.h"
#include "cpu/isa/kernels.h"

#include <Python.h>

namespace fused_lstm {

namespace {

// Input, output and the saved per-step tensors share the input's row layout: [T, B, features]
// or packed [N, features].
void check_rows(const char* name, const at::Tensor& x, const at::Tensor& input,
                int64_t features) {
  CHECK_DEVICE(x, input);
  CHECK_DTYPE(x, input);
  std::vector<int64_t> expected(input.sizes().begin(), input.sizes().end() - 1);
  expected.push_back(features);
  TORCH_CHECK(x.sizes() == at::IntArrayRef(expected), name, " must have shape ",
              at::IntArrayRef(expected), ", got ", x.sizes());
}

std::vector<int64_t> step_offsets(const at::Tensor& input, int64_t B,
                                  const std::optional<at::Tensor>& batch_sizes) {
  if (!batch_sizes.has_value()) {
    std::vector<int64_t> offsets(input.size(0) + 1);
    for (size_t t = 0; t < offsets.size(); ++t) offsets[t] = static_cast<int64_t>(t) * B;
    return offsets;
  }
  const at::Tensor& bs = *batch_sizes;
  TORCH_CHECK(bs.dim() == 1 && bs.scalar_type() == at::kLong && bs.device().is_cpu(),
              "batch_sizes must be a 1-D int64 CPU tensor, got ", bs.dim(), "-D ",
              bs.scalar_type(), " on ", bs.device());
  const at::Tensor sizes = bs.contiguous();
  const int64_t* b = sizes.data_ptr<int64_t>();
  std::vector<int64_t> offsets(bs.size(0) + 1, 0);
  for (int64_t t = 0; t < bs.size(0); ++t) {
    TORCH_CHECK(b[t] > 0 && b[t] <= (t == 0 ? B : b[t - 1]),
                "batch_sizes must be positive and non-increasing with batch_sizes[0] == B (",
                B, "), got ", b[t], " at step ", t);
    offsets[t + 1] = offsets[t] + b[t];
  }
  TORCH_CHECK(bs.size(0) == 0 || b[0] == B, "batch_sizes[0] must equal the batch size of h0 (",
              B, "), got ", b[0]);
  TORCH_CHECK(offsets.back() == input.size(0), "packed input must have sum(batch_sizes) = ",
              offsets.back(), " rows, got ", input.size(0));
  return offsets;
}

}  // namespace

LayerSizes check_forward(const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
                         const at::Tensor& w_ih, const at::Tensor& w_hh,
                         const std::optional<at::Tensor>& bias,
                         const std::optional<at::Tensor>& w_hr,
                         const std::optional<at::Tensor>& batch_sizes) {
  const bool packed = batch_sizes.has_value();
  TORCH_CHECK(input.dim() == (packed ? 2 : 3), "input must be ",
              packed ? "2-D (N, I) with batch_sizes" : "3-D (T, B, I)", ", got ", input.dim(),
              "-D");
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
              "input must be float32 or float64, got ", input.scalar_type());
  TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) % 4 == 0, "w_ih must be 2-D (4H, I), got ",
              w_ih.sizes());
  TORCH_CHECK(h0.dim() == 2, "h0 must be 2-D (B, P), got ", h0.sizes());
  LayerSizes n;
  n.B = h0.size(0);
  n.P = h0.size(1);
  n.H = w_ih.size(0) / 4;
  n.N = packed ? input.size(0) : input.size(0) * input.size(1);
  n.T = packed ? batch_sizes->size(0) : input.size(0);
  n.I = input.size(-1);
  TORCH_CHECK(packed || input.size(1) == n.B, "input must have batch size ", n.B,
              " (from h0), got ", input.size(1));
  CHECK_TENSOR(w_ih, input, 4 * n.H, n.I);
  CHECK_TENSOR(w_hh, input, 4 * n.H, n.P);
  CHECK_TENSOR(h0, input, n.B, n.P);
  CHECK_TENSOR(c0, input, n.B, n.H);
  if (bias.has_value()) {
    CHECK_TENSOR(*bias, input, 4 * n.H);
  }
  if (w_hr.has_value()) {
    CHECK_TENSOR(*w_hr, input, n.P, n.H);
  } else {
    TORCH_CHECK(n.P == n.H, "without w_hr, h0 must have H = ", n.H, " features, got ", n.P);
  }
  n.offsets = step_offsets(input, n.B, batch_sizes);
  return n;
}

LayerSizes check_backward(const std::optional<at::Tensor>& grad_output,
                          const std::optional<at::Tensor>& grad_h_n,
                          const std::optional<at::Tensor>& grad_c_n, const at::Tensor& input,
                          const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
                          const at::Tensor& w_hh, const std::optional<at::Tensor>& w_hr,
                          const std::optional<at::Tensor>& batch_sizes,
                          const at::Tensor& output, const at::Tensor& gates,
                          const at::Tensor& cell) {
  LayerSizes n = check_forward(input, h0, c0, w_ih, w_hh, std::nullopt, w_hr, batch_sizes);
  TORCH_CHECK(gates.numel() > 0 || n.N * n.H == 0,
              "lstm_layer_backward needs the gates saved by lstm_layer(..., train=True)");
  check_rows("output", output, input, n.P);
  check_rows("gates", gates, input, 4 * n.H);
  check_rows("cell", cell, input, n.H);
  if (grad_output.has_value()) {
    check_rows("grad_output", *grad_output, input, n.P);
  }
  if (grad_h_n.has_value()) {
    CHECK_TENSOR(*grad_h_n, input, n.B, n.P);
  }
  if (grad_c_n.has_value()) {
    CHECK_TENSOR(*grad_c_n, input, n.B, n.H);
  }
  return n;
}

at::Tensor state_grad(const std::optional<at::Tensor>& grad_n, int64_t B, int64_t features,
                      const at::TensorOptions& opts) {
  return grad_n.has_value() ? grad_n->contiguous().clone() : at::zeros({B, features}, opts);
}

TORCH_LIBRARY(fused_lstm, m) {
  // One layer, one direction. `input` is [T, B, I], or packed [N, I] with `batch_sizes`
  // (PackedSequence's layout: time-major, step t holds its batch_sizes[t] longest
  // sequences). `w_hr` [P, H] projects h (LSTMP). `reverse` runs time backwards (the second
  // direction of a bidirectional LSTM) without flipping the input. With train=True the
  // activated gates [rows, 4H] and cell states [rows, H] are returned for backward; with
  // train=False they come back empty and nothing per step is kept.
  m.def(
      "lstm_layer(Tensor input, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? bias, "
      "Tensor? w_hr, Tensor? batch_sizes, bool reverse, bool train) -> (Tensor output, "
      "Tensor h_n, Tensor c_n, Tensor gates, Tensor cell)");
  // Gradients of lstm_layer. Missing incoming gradients count as zero. grad_bias is the
  // gradient of the summed bias (b_ih + b_hh), computed whether or not the layer has one;
  // grad_w_hr is empty without a projection; grad_input is empty ([0]) unless input_grad
  // (its GEMM is skipped: the first layer's input rarely needs a gradient).
  m.def(
      "lstm_layer_backward(Tensor? grad_output, Tensor? grad_h_n, Tensor? grad_c_n, "
      "Tensor input, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? w_hr, "
      "Tensor? batch_sizes, Tensor output, Tensor gates, Tensor cell, bool reverse, "
      "bool input_grad) -> "
      "(Tensor grad_input, Tensor grad_h0, Tensor grad_c0, Tensor grad_w_ih, "
      "Tensor grad_w_hh, Tensor grad_w_hr, Tensor grad_bias)");
  // Stacked layers: nn.LSTM's forward in one call (aten::lstm's arguments). `weights` in
  // nn.LSTM's order, per layer and direction w_ih, w_hh, then b_ih, b_hh if has_biases, then
  // w_hr with a projection; h0 [layers * directions, B, P], c0 [.., B, H]; dropout on every
  // layer's output but the last when `train`. Returns output [rows, directions * P], h_n,
  // c_n. Without gradients, unidirectional CPU layers without projections run as one
  // wavefront (csrc/cpu/lstm_stack_cpu.cpp); with them, such stacks run lstm_stack_train
  // and the others are lstm_layer calls (csrc/lstm_stack.cpp).
  m.def(
      "lstm_stack(Tensor input, Tensor h0, Tensor c0, Tensor[] weights, bool has_biases, "
      "int num_layers, float dropout, bool train, bool bidirectional, Tensor? batch_sizes) "
      "-> (Tensor output, Tensor h_n, Tensor c_n)");
  // lstm_stack's forward for training, unidirectional and without projections, keeping
  // what each layer's lstm_layer_backward needs: per layer its output (the next layer's
  // input; the last is the stack's output), activated gates and cell states, as lstm_layer
  // returns them with train=True. lstm_stack's autograd kernel runs it and then the layers'
  // backwards (csrc/autograd.cpp); on the CPU the layers run as one wavefront where they can
  // (csrc/cpu/lstm_stack_cpu.cpp).
  m.def(
      "lstm_stack_train(Tensor input, Tensor h0, Tensor c0, Tensor[] weights, bool has_biases, "
      "int num_layers, Tensor? batch_sizes) -> (Tensor[] outputs, Tensor h_n, Tensor c_n, "
      "Tensor[] gates, Tensor[] cells)");
  // op(a) @ op(b) + beta * c (c absent: zeros), op(x) = x^T when trans_x: the GEMM the CPU
  // layers run over all rows (the input projection, dx, weight gradients), for the tests and
  // the benchmark. k_block > 0 sums every block of that many terms from zero (the weight
  // gradients' row blocks); 0 leaves it to the kernel.
  m.def(
      "matmul(Tensor a, Tensor b, bool trans_a=False, bool trans_b=False, Tensor? c=None, "
      "float beta=0.0, int k_block=0) -> Tensor");
}

}  // namespace fused_lstm

// `import fused_lstm._C` loads this library, which registers the ops above. The module
// itself only exposes the CPU kernels' instruction-set and GEMM switches, FMA peak and buffer
// cache.
namespace {

using fused_lstm::cpu::Isa;

PyObject* py_cpu_isa(PyObject*, PyObject*) {
  return PyUnicode_FromString(fused_lstm::cpu::isa_name(fused_lstm::cpu::active_isa()));
}

// Parses an ISA name; sets a ValueError naming the accepted values if it is not one.
bool isa_arg(PyObject* args, Isa* isa) {
  const char* name = nullptr;
  if (!PyArg_ParseTuple(args, "s", &name)) return false;
  if (!fused_lstm::cpu::parse_isa(name, isa)) {
    PyErr_Format(PyExc_ValueError, "isa must be one of 'generic', 'avx2', 'avx512', got '%s'",
                 name);
    return false;
  }
  return true;
}

PyObject* py_cpu_supports(PyObject*, PyObject* args) {
  Isa isa;
  if (!isa_arg(args, &isa)) return nullptr;
  return PyBool_FromLong(fused_lstm::cpu::cpu_supports(isa));
}

PyObject* py_set_cpu_isa(PyObject*, PyObject* args) {
  Isa isa;
  if (!isa_arg(args, &isa)) return nullptr;
  if (!fused_lstm::cpu::set_isa(isa)) {
    PyErr_Format(PyExc_RuntimeError, "this CPU cannot run the '%s' kernels",
                 fused_lstm::cpu::isa_name(isa));
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyObject* py_cpu_gemm(PyObject*, PyObject*) {
  return PyUnicode_FromString(fused_lstm::cpu::gemm_name(fused_lstm::cpu::active_gemm()));
}

PyObject* py_set_cpu_gemm(PyObject*, PyObject* args) {
  const char* name = nullptr;
  if (!PyArg_ParseTuple(args, "s", &name)) return nullptr;
  fused_lstm::cpu::Gemm gemm;
  if (!fused_lstm::cpu::parse_gemm(name, &gemm)) {
    PyErr_Format(PyExc_ValueError, "gemm must be one of 'own', 'blas', got '%s'", name);
    return nullptr;
  }
  fused_lstm::cpu::set_gemm(gemm);
  Py_RETURN_NONE;
}

PyObject* py_fma_peak_gflops(PyObject*, PyObject* args) {
  int threads = 1;
  if (!PyArg_ParseTuple(args, "i", &threads)) return nullptr;
  const auto kernels = fused_lstm::cpu::fused_kernels();
  if (!kernels.fma_peak_gflops || threads < 1) Py_RETURN_NONE;
  double gflops = 0.0;
  Py_BEGIN_ALLOW_THREADS gflops = kernels.fma_peak_gflops(threads);
  Py_END_ALLOW_THREADS return PyFloat_FromDouble(gflops);
}

PyObject* py_empty_cache(PyObject*, PyObject*) {
  return PyLong_FromLongLong(fused_lstm::cpu::empty_cache());
}

PyObject* py_cached_bytes(PyObject*, PyObject*) {
  return PyLong_FromLongLong(fused_lstm::cpu::cached_bytes());
}

PyMethodDef methods[] = {
    {"cpu_isa", py_cpu_isa, METH_NOARGS, "The instruction set the CPU kernels use."},
    {"cpu_supports", py_cpu_supports, METH_VARARGS, "Whether this CPU can run an ISA's kernels."},
    {"set_cpu_isa", py_set_cpu_isa, METH_VARARGS, "Use the kernels built for this ISA."},
    {"cpu_gemm", py_cpu_gemm, METH_NOARGS, "The GEMM the CPU layers' large products run."},
    {"set_cpu_gemm", py_set_cpu_gemm, METH_VARARGS, "Run the large products on this GEMM."},
    {"fma_peak_gflops", py_fma_peak_gflops, METH_VARARGS,
     "Measured fp32 FMA GFLOP/s of the active ISA on n threads (None for generic)."},
    {"empty_cache", py_empty_cache, METH_NOARGS,
     "Frees the cached CPU buffers not in use; returns the bytes freed."},
    {"cached_bytes", py_cached_bytes, METH_NOARGS, "Bytes of CPU buffers cached, not in use."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  return PyModule_Create(&module_def);
}
