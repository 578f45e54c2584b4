// Row-major GEMM over raw pointers, backed by the BLAS that libtorch_cpu exports (MKL in
// the x86 CPU wheels). Raw pointers keep the time loop free of tensor allocations.
#pragma once

#include <ATen/Context.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <limits>

#include "mkl_threads.h"  // without MKL, BlasDeterminism is a no-op

extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc);
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b,
            const int* ldb, const double* beta, double* c, const int* ldc);
}

namespace fused_lstm::cpu {

// MKL's GEMMs sum in an order that depends on its thread count. Under
// torch.use_deterministic_algorithms(True) this scope runs them on one thread, so results do
// not depend on torch.get_num_threads() (the fused kernels never do).
class BlasDeterminism {
 public:
  BlasDeterminism() {
    if (at::globalContext().deterministicAlgorithms() && MKL_Set_Num_Threads_Local) {
      previous_ = MKL_Set_Num_Threads_Local(1);
      active_ = true;
    }
  }
  ~BlasDeterminism() {
    if (active_) MKL_Set_Num_Threads_Local(previous_);
  }
  BlasDeterminism(const BlasDeterminism&) = delete;
  BlasDeterminism& operator=(const BlasDeterminism&) = delete;

 private:
  bool active_ = false;
  int previous_ = 0;
};

inline int blas_int(int64_t v) {
  TORCH_CHECK(v <= std::numeric_limits<int>::max(), "GEMM dimension ", v,
              " exceeds the BLAS 32-bit index range");
  return static_cast<int>(v);
}

inline void blas_gemm(const char* ta, const char* tb, const int* m, const int* n, const int* k,
                      const float* alpha, const float* a, const int* lda, const float* b,
                      const int* ldb, const float* beta, float* c, const int* ldc) {
  sgemm_(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

inline void blas_gemm(const char* ta, const char* tb, const int* m, const int* n, const int* k,
                      const double* alpha, const double* a, const int* lda, const double* b,
                      const int* ldb, const double* beta, double* c, const int* ldc) {
  dgemm_(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// C[m, n] = op(A)[m, k] @ op(B)[k, n] + beta * C, every matrix row-major with leading
// dimension ld*; op(X) is X^T when trans_x. BLAS is column-major, so this computes
// C^T = op(B)^T op(A)^T.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
          const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) {
    return;
  }
  if (k == 0) {  // C = beta C; BLAS libraries differ on whether they touch C at all here
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
    }
    return;
  }
  const int M = blas_int(m), N = blas_int(n), K = blas_int(k);
  const int LDA = blas_int(std::max<int64_t>(lda, 1)), LDB = blas_int(std::max<int64_t>(ldb, 1));
  const int LDC = blas_int(std::max<int64_t>(ldc, 1));
  const T alpha = 1;
  blas_gemm(trans_b ? "T" : "N", trans_a ? "T" : "N", &N, &M, &K, &alpha, b, &LDB, a, &LDA,
            &beta, c, &LDC);
}

}  // namespace fused_lstm::cpu
