// fused_lstm::matmul on the CPU: the GEMM the layers run over all rows (lstm_layer.h:
// layer_gemm), as an op of its own for the tests and the benchmark.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../ops.h"
#include "lstm_layer.h"

namespace fused_lstm::cpu {
namespace {

at::Tensor matmul(const at::Tensor& a, const at::Tensor& b, bool trans_a, bool trans_b,
                  const std::optional<at::Tensor>& c, double beta, int64_t k_block) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2, "a and b must be 2-D, got ", a.dim(), "-D and ",
              b.dim(), "-D");
  TORCH_CHECK(a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble,
              "a must be float32 or float64, got ", a.scalar_type());
  CHECK_DEVICE(b, a);
  CHECK_DTYPE(b, a);
  TORCH_CHECK(k_block >= 0, "k_block must be >= 0, got ", k_block);
  const int64_t m = a.size(trans_a ? 1 : 0), k = a.size(trans_a ? 0 : 1);
  const int64_t n = b.size(trans_b ? 0 : 1);
  TORCH_CHECK(b.size(trans_b ? 1 : 0) == k, "op(b) must have ", k,
              " rows (the columns of op(a)), got ", b.size(trans_b ? 1 : 0));
  at::Tensor out;
  if (c.has_value()) {
    CHECK_DEVICE(*c, a);
    CHECK_DTYPE(*c, a);
    TORCH_CHECK(c->sizes() == at::IntArrayRef({m, n}), "c must have shape [", m, ", ", n,
                "], got ", c->sizes());
    out = c->contiguous().clone();
  } else {  // beta = 0: the GEMM writes C without reading it (k = 0: zeros, blas.h)
    out = at::empty({m, n}, a.options());
    beta = 0.0;
  }
  const at::Tensor a_c = a.contiguous(), b_c = b.contiguous();
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "matmul", [&] {
    layer_gemm<scalar_t>(trans_a, trans_b, m, n, k, a_c.data_ptr<scalar_t>(), a_c.size(1),
                         b_c.data_ptr<scalar_t>(), b_c.size(1), static_cast<scalar_t>(beta),
                         out.data_ptr<scalar_t>(), n, k_block);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_lstm, CPU, m) { m.impl("matmul", &matmul); }

}  // namespace fused_lstm::cpu
