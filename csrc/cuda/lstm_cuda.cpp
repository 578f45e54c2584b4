// CUDA implementation of the fused_lstm ops: the time loop on the host, per step one cuBLAS
// GEMM (through ATen, on the current stream, into preallocated buffers) and one fused cell
// kernel (lstm_kernels.cu). The row layout and the packed-sequence handling are the CPU's
// (see csrc/cpu/lstm_layer.h): step t owns rows [offsets[t], offsets[t+1]), a prefix of the
// batch, and sequences that have ended keep their state in the running buffers.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "../ops.h"
#include "lstm_kernels.h"

namespace fused_lstm::cuda {
namespace {

at::Tensor rows(const at::Tensor& t, int64_t lo, int64_t n) { return t.narrow(0, lo, n); }

// The ops compute in their inputs' dtype. Autocast passes a custom op through with its key
// still set, so without this the ATen GEMMs inside would run in half precision and meet
// float32 operands in the in-place ones.
using NoAutocast = c10::impl::ExcludeDispatchKeyGuard;

// a^T @ b over the rows of a [N, m] and b [N, n], in blocks of grad_row_block rows (ops.h)
// for its rounding error: the blocks' partial sums in one batched GEMM (at most 64 of them,
// 16 MB), then their sum.
at::Tensor weight_grad(const at::Tensor& a, const at::Tensor& b) {
  const int64_t N = a.size(0), m = a.size(1), n = b.size(1);
  const int64_t block = std::max(grad_row_block(N, m * n * a.element_size()), (N + 63) / 64);
  const int64_t blocks = N / block, full = blocks * block;
  if (blocks <= 1) return at::mm(a.t(), b);
  at::Tensor grad = at::bmm(rows(a, 0, full).reshape({blocks, block, m}).transpose(1, 2),
                            rows(b, 0, full).reshape({blocks, block, n}))
                        .sum(0);
  if (full < N) grad.addmm_(rows(a, full, N - full).t(), rows(b, full, N - full));
  return grad;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer(
    const at::Tensor& input_, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
    const at::Tensor& w_hh, const std::optional<at::Tensor>& bias_,
    const std::optional<at::Tensor>& w_hr, const std::optional<at::Tensor>& batch_sizes,
    bool reverse, bool train) {
  const LayerSizes n = check_forward(input_, h0, c0, w_ih, w_hh, bias_, w_hr, batch_sizes);
  const c10::cuda::CUDAGuard guard(input_.device());
  const NoAutocast no_autocast(c10::autocast_dispatch_keyset);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto opts = input_.options();
  const at::Tensor x = input_.reshape({n.N, n.I});
  const at::Tensor bias = bias_.has_value() ? bias_->contiguous() : at::zeros({4 * n.H}, opts);
  // One GEMM for the input projection of every step; each step adds its recurrent part.
  at::Tensor gates = at::mm(x, w_ih.t());
  at::Tensor y = at::empty({n.N, n.P}, opts);
  at::Tensor cell = at::empty({train ? n.N : 0, n.H}, opts);
  at::Tensor h = h0.contiguous().clone(), c = c0.contiguous().clone();  // running state
  at::Tensor h_raw = at::empty({w_hr.has_value() ? n.B : 0, n.H}, opts);
  const at::Tensor w_hh_t = w_hh.t();
  for (int64_t s = 0; s < n.T; ++s) {
    const int64_t t = reverse ? n.T - 1 - s : s, r = n.offsets[t], m = n.rows(t);
    at::Tensor gates_t = rows(gates, r, m);
    gates_t.addmm_(rows(h, 0, m), w_hh_t);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_layer_cuda", [&] {
      using T = scalar_t;
      const bool proj = w_hr.has_value();
      launch_forward_step<T>({m, n.H, gates_t.data_ptr<T>(), bias.data_ptr<T>(), c.data_ptr<T>(),
                              train ? cell.data_ptr<T>() + r * n.H : nullptr,
                              proj ? h_raw.data_ptr<T>() : y.data_ptr<T>() + r * n.P,
                              proj ? nullptr : h.data_ptr<T>()},
                             stream);
    });
    if (w_hr.has_value()) {
      at::Tensor y_t = rows(y, r, m);
      at::mm_out(y_t, rows(h_raw, 0, m), w_hr->t());
      rows(h, 0, m).copy_(y_t);
    }
  }
  const auto saved = [&](const at::Tensor& t, int64_t features) {
    std::vector<int64_t> shape(input_.sizes().begin(), input_.sizes().end() - 1);
    if (!train) shape[0] = 0;
    shape.push_back(features);
    return train ? t.view(shape) : at::empty(shape, opts);
  };
  std::vector<int64_t> out_shape(input_.sizes().begin(), input_.sizes().end() - 1);
  out_shape.push_back(n.P);
  return {y.view(out_shape), h, c, saved(gates, 4 * n.H), saved(cell, n.H)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_backward(const std::optional<at::Tensor>& grad_output,
                    const std::optional<at::Tensor>& grad_h_n,
                    const std::optional<at::Tensor>& grad_c_n, const at::Tensor& input,
                    const at::Tensor& h0_, const at::Tensor& c0_, const at::Tensor& w_ih,
                    const at::Tensor& w_hh, const std::optional<at::Tensor>& w_hr,
                    const std::optional<at::Tensor>& batch_sizes, const at::Tensor& output,
                    const at::Tensor& gates_, const at::Tensor& cell_, bool reverse,
                    bool input_grad) {
  const LayerSizes n = check_backward(grad_output, grad_h_n, grad_c_n, input, h0_, c0_, w_ih,
                                      w_hh, w_hr, batch_sizes, output, gates_, cell_);
  const c10::cuda::CUDAGuard guard(input.device());
  const NoAutocast no_autocast(c10::autocast_dispatch_keyset);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto opts = input.options();
  const bool proj = w_hr.has_value();
  const at::Tensor x = input.reshape({n.N, n.I}), y = output.reshape({n.N, n.P});
  const at::Tensor gates = gates_.reshape({n.N, 4 * n.H}).contiguous();
  const at::Tensor cell = cell_.reshape({n.N, n.H}).contiguous();
  const at::Tensor h0 = h0_.contiguous(), c0 = c0_.contiguous();
  const at::Tensor dy = grad_output.has_value() ? grad_output->reshape({n.N, n.P}).contiguous()
                                                : at::Tensor();
  at::Tensor dh = state_grad(grad_h_n, n.B, n.P, opts);  // dL/dh_n in, dL/dh0 out
  at::Tensor dc = state_grad(grad_c_n, n.B, n.H, opts);
  at::Tensor dgates = at::empty({n.N, 4 * n.H}, opts);
  at::Tensor h_prev = at::empty({n.N, n.P}, opts);  // each row's previous h, for dW_hh
  at::Tensor dh_all = at::empty({proj ? n.N : 0, n.P}, opts);
  at::Tensor h_raw = at::empty({proj ? n.N : 0, n.H}, opts);
  at::Tensor dh_raw = at::empty({proj ? n.B : 0, n.H}, opts);
  for (int64_t s = n.T - 1; s >= 0; --s) {
    const int64_t t = reverse ? n.T - 1 - s : s, r = n.offsets[t], m = n.rows(t);
    const int64_t t_prev = reverse ? t + 1 : t - 1;
    const int64_t m_cont = s == 0 ? 0 : std::min(m, n.rows(t_prev));
    const int64_t r_prev = s == 0 ? 0 : n.offsets[t_prev];
    rows(h_prev, r, m_cont).copy_(rows(y, r_prev, m_cont));
    rows(h_prev, r + m_cont, m - m_cont).copy_(rows(h0, m_cont, m - m_cont));
    if (proj) {  // through the projection: dL/dh_raw = (dy + dh) @ W_hr
      at::Tensor dh_t = rows(dh_all, r, m);
      if (dy.defined()) {
        at::add_out(dh_t, rows(dy, r, m), rows(dh, 0, m));
      } else {
        dh_t.copy_(rows(dh, 0, m));
      }
      at::Tensor dh_raw_t = rows(dh_raw, 0, m);
      at::mm_out(dh_raw_t, dh_t, *w_hr);
    }
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_layer_backward_cuda", [&] {
      using T = scalar_t;
      const T* dh_a = proj ? dh_raw.data_ptr<T>() : (dy.defined() ? dy.data_ptr<T>() + r * n.P : nullptr);
      launch_backward_step<T>({m, m_cont, n.H, proj ? n.H : n.P, gates.data_ptr<T>() + r * 4 * n.H,
                               cell.data_ptr<T>() + r_prev * n.H, c0.data_ptr<T>(),
                               cell.data_ptr<T>() + r * n.H, dh_a, proj ? nullptr : dh.data_ptr<T>(),
                               dc.data_ptr<T>(), dgates.data_ptr<T>() + r * 4 * n.H,
                               proj ? h_raw.data_ptr<T>() + r * n.H : nullptr},
                              stream);
    });
    at::Tensor dh_t = rows(dh, 0, m);
    at::mm_out(dh_t, rows(dgates, r, m), w_hh);
  }
  // The weight gradients: sums over every step's rows.
  at::Tensor grad_w_hh = weight_grad(dgates, h_prev);
  at::Tensor grad_w_ih = weight_grad(dgates, x);
  at::Tensor grad_input = input_grad ? at::mm(dgates, w_ih).view(input.sizes())
                                    : at::empty({0}, opts);
  at::Tensor grad_w_hr = proj ? weight_grad(dh_all, h_raw) : at::zeros({0, n.H}, opts);
  return {grad_input, dh, dc, grad_w_ih, grad_w_hh, grad_w_hr, dgates.sum(0)};
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_lstm, CUDA, m) {
  m.impl("lstm_layer", &lstm_layer);
  m.impl("lstm_layer_backward", &lstm_layer_backward);
}

}  // namespace fused_lstm::cuda
