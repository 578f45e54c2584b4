// The generic (baseline x86-64, and float64) kernels and the run-time choice of ISA and GEMM.
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "../../lstm_cell.h"
#include "../mkl_threads.h"
#include "kernels.h"

namespace fused_lstm::cpu {
namespace generic {

// One lane of T: lets cell_rows.h run on plain scalars.
template <typename T>
struct Scalar {
  static constexpr int kWidth = 1;
  T v;
  Scalar() = default;
  Scalar(T x) : v(x) {}
  static Scalar load(const T* p) { return *p; }
  static Scalar load(const T* p, int64_t) { return *p; }  // width 1 never has a tail
  void store(T* p) const { *p = v; }
  void store(T* p, int64_t) const { *p = v; }
};
template <typename T> Scalar<T> operator+(Scalar<T> a, Scalar<T> b) { return a.v + b.v; }
template <typename T> Scalar<T> operator-(Scalar<T> a, Scalar<T> b) { return a.v - b.v; }
template <typename T> Scalar<T> operator*(Scalar<T> a, Scalar<T> b) { return a.v * b.v; }
template <typename T> Scalar<T> operator/(Scalar<T> a, Scalar<T> b) { return a.v / b.v; }
template <typename T> Scalar<T> operator-(Scalar<T> a) { return -a.v; }
template <typename T> Scalar<T> exp(Scalar<T> x) { return std::exp(x.v); }
template <typename T> Scalar<T> tanh(Scalar<T> x) { return std::tanh(x.v); }

#include "cell_rows.h"

template <typename T>
CellKernels<T> cell_kernels() {
  return {&forward_row<Scalar<T>, T>, &backward_row<Scalar<T>, T>};
}
template CellKernels<float> cell_kernels<float>();
template CellKernels<double> cell_kernels<double>();

}  // namespace generic

namespace {

Isa best_supported() {
  if (cpu_supports(Isa::kAvx512)) return Isa::kAvx512;
  if (cpu_supports(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kGeneric;
}

Isa initial_isa() {
  Isa isa;
  const char* env = std::getenv("FUSED_LSTM_CPU_ISA");
  if (env && parse_isa(env, &isa) && cpu_supports(isa)) return isa;
  return best_supported();
}

Isa& current() {
  static Isa isa = initial_isa();
  return isa;
}

Gemm initial_gemm() {
  Gemm gemm;
  const char* env = std::getenv("FUSED_LSTM_CPU_GEMM");
  if (env && parse_gemm(env, &gemm)) return gemm;
  return MKL_Set_Num_Threads_Local && __builtin_cpu_is("intel") ? Gemm::kBlas : Gemm::kOwn;
}

Gemm& current_gemm() {
  static Gemm gemm = initial_gemm();
  return gemm;
}

}  // namespace

bool cpu_supports(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("fma");
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::kGeneric:
      return true;
  }
  return false;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    case Isa::kGeneric: return "generic";
  }
  return "?";
}

bool parse_isa(const char* name, Isa* isa) {
  constexpr Isa kAll[] = {Isa::kGeneric, Isa::kAvx2, Isa::kAvx512};
  for (Isa candidate : kAll) {
    if (std::strcmp(name, isa_name(candidate)) == 0) {
      *isa = candidate;
      return true;
    }
  }
  return false;
}

Isa active_isa() { return current(); }

bool set_isa(Isa isa) {
  if (!cpu_supports(isa)) return false;
  current() = isa;
  return true;
}

Gemm active_gemm() { return current_gemm(); }

void set_gemm(Gemm gemm) { current_gemm() = gemm; }

const char* gemm_name(Gemm gemm) { return gemm == Gemm::kBlas ? "blas" : "own"; }

bool parse_gemm(const char* name, Gemm* gemm) {
  constexpr Gemm kAll[] = {Gemm::kOwn, Gemm::kBlas};
  for (Gemm candidate : kAll) {
    if (std::strcmp(name, gemm_name(candidate)) == 0) {
      *gemm = candidate;
      return true;
    }
  }
  return false;
}

template <>
CellKernels<float> cell_kernels<float>() {
  switch (active_isa()) {
    case Isa::kAvx512: return avx512::cell_kernels();
    case Isa::kAvx2: return avx2::cell_kernels();
    case Isa::kGeneric: break;
  }
  return generic::cell_kernels<float>();
}

FusedKernels fused_kernels() {
  switch (active_isa()) {
    case Isa::kAvx512: return avx512::fused_kernels();
    case Isa::kAvx2: return avx2::fused_kernels();
    case Isa::kGeneric: break;
  }
  return {};
}

template <>
CellKernels<double> cell_kernels<double>() {
  return generic::cell_kernels<double>();
}

}  // namespace fused_lstm::cpu
