// Boundary checks shared by every backend's implementation of the fused_lstm ops.
// The Python module validates user input with friendly errors first; these checks make the
// raw ops (torch.ops.fused_lstm.*) safe to call directly: a wrong shape is an exception,
// never an out-of-bounds read.
#pragma once

#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <vector>

#define CHECK_SHAPE(x, ...)                                                              \
  TORCH_CHECK((x).sizes() == at::IntArrayRef({__VA_ARGS__}), #x " must have shape (" #__VA_ARGS__ \
              "), got ", (x).sizes())
#define CHECK_DEVICE(x, ref)                                                             \
  TORCH_CHECK((x).device() == (ref).device(), #x " must be on ", (ref).device(), ", got ", \
              (x).device())
#define CHECK_DTYPE(x, ref)                                                              \
  TORCH_CHECK((x).scalar_type() == (ref).scalar_type(), #x " must have dtype ",         \
              (ref).scalar_type(), ", got ", (x).scalar_type())
#define CHECK_TENSOR(x, ref, ...) \
  CHECK_DEVICE(x, ref);           \
  CHECK_DTYPE(x, ref);            \
  CHECK_SHAPE(x, __VA_ARGS__)

namespace fused_lstm {

// Sizes of one layer and direction, read off the inputs once.
//   T steps, B sequences, N = rows of input (T*B when every sequence is full length),
//   I input features, H hidden units, P features of h (P = H without a projection).
// Rows are time-major: step t owns rows [offsets[t], offsets[t+1]), the first
// batch_sizes[t] sequences (sequences sorted by decreasing length, as in PackedSequence).
struct LayerSizes {
  int64_t T, B, N, I, H, P;
  std::vector<int64_t> offsets;  // T + 1 entries

  int64_t rows(int64_t t) const { return offsets[t + 1] - offsets[t]; }
};

// input [T, B, I] (batch_sizes None) or packed [N, I] with batch_sizes [T] (int64, CPU,
// non-increasing, batch_sizes[0] == B, sum == N); h0 [B, P], c0 [B, H], w_ih [4H, I],
// w_hh [4H, P], bias [4H] or None, w_hr [P, H] or None.
LayerSizes check_forward(const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
                         const at::Tensor& w_ih, const at::Tensor& w_hh,
                         const std::optional<at::Tensor>& bias,
                         const std::optional<at::Tensor>& w_hr,
                         const std::optional<at::Tensor>& batch_sizes);

// The forward's inputs and saved outputs, plus the incoming gradients (each optional).
LayerSizes check_backward(const std::optional<at::Tensor>& grad_output,
                          const std::optional<at::Tensor>& grad_h_n,
                          const std::optional<at::Tensor>& grad_c_n, const at::Tensor& input,
                          const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
                          const at::Tensor& w_hh, const std::optional<at::Tensor>& w_hr,
                          const std::optional<at::Tensor>& batch_sizes,
                          const at::Tensor& output, const at::Tensor& gates,
                          const at::Tensor& cell);

// The running state gradient of a backward: a fresh contiguous copy of dL/dh_n or dL/dc_n
// ([B, features]), zeros when absent; the time loop turns it into dL/dh0, dL/dc0 in place.
at::Tensor state_grad(const std::optional<at::Tensor>& grad_n, int64_t B, int64_t features,
                      const at::TensorOptions& opts);

// How lstm_stack's flat weight list splits into layers: `per` tensors per layer and
// direction, the last of them w_hr when `proj`.
struct StackLayout {
  int64_t layers, directions, per;
  bool has_biases, proj;
};

// Checks lstm_stack's arguments that no layer's check_forward sees: the layer count, the
// states' leading dimension, the length of the weight list.
StackLayout check_stack(const at::Tensor& h0, const at::Tensor& c0, at::TensorList weights,
                        bool has_biases, int64_t num_layers, bool bidirectional);

// lstm_stack layer by layer through the dispatcher's lstm_layer (any device): under autograd
// (keep_state: each layer keeps what its backward needs), or below it.
std::tuple<at::Tensor, at::Tensor, at::Tensor> stack_layers(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    at::TensorList weights, bool has_biases, int64_t num_layers, double dropout, bool train,
    bool bidirectional, const std::optional<at::Tensor>& batch_sizes, bool keep_state);

// lstm_stack_train's results: per layer outputs, then h_n, c_n, then per layer gates, cells.
using StackTrainOutputs = std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor,
                                     std::vector<at::Tensor>, std::vector<at::Tensor>>;

// check_stack for lstm_stack_train: unidirectional, no projections.
StackLayout check_stack_train(const at::Tensor& h0, const at::Tensor& c0, at::TensorList weights,
                              bool has_biases, int64_t num_layers);

// lstm_stack_train layer by layer through the dispatcher's lstm_layer (any device; on the CPU
// where the layers cannot run as a wavefront). Below autograd.
StackTrainOutputs stack_train_layers(const at::Tensor& input, const at::Tensor& h0,
                                     const at::Tensor& c0, at::TensorList weights,
                                     bool has_biases, int64_t num_layers,
                                     const std::optional<at::Tensor>& batch_sizes);

// lstm_stack with gradients for a unidirectional stack without projections or dropout: one
// autograd node (csrc/autograd.cpp) whose forward is lstm_stack_train and whose backward runs
// lstm_layer_backward layer by layer, top down.
std::tuple<at::Tensor, at::Tensor, at::Tensor> stack_with_grad(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    at::TensorList weights, bool has_biases, int64_t num_layers,
    const std::optional<at::Tensor>& batch_sizes);

// Rows per GEMM when a weight gradient is summed over rows (dW = dgates^T @ h over N rows).
// BLAS sums a GEMM's k terms in one chain (up to its own k block of a few hundred), which for
// a few hundred rows gives 2-3x the rounding error of nn.LSTM's per-step sums. Small
// gradients are therefore summed in blocks of 32 rows (a chain of at most 32 + N / 32 terms);
// large ones in one GEMM, where the extra passes over dW would cost more than they are worth.
inline int64_t grad_row_block(int64_t rows, int64_t grad_bytes) {
  constexpr int64_t kGradRowBlock = 32, kSmallGradBytes = int64_t{256} << 10;
  return grad_bytes <= kSmallGradBytes ? kGradRowBlock : std::max<int64_t>(rows, 1);
}

}  // namespace fused_lstm
