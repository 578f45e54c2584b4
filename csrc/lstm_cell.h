// The LSTM cell math, one copy for every backend.
//
// Gate order is nn.LSTM's: i (input), f (forget), g (cell candidate), o (output).
// Forward, per hidden unit:
//   i = sigmoid(a_i)  f = sigmoid(a_f)  g = tanh(a_g)  o = sigmoid(a_o)
//   c_t = f * c_prev + i * g
//   h_t = o * tanh(c_t)
// Backward takes the activated gates (not the pre-activations) because that is what the
// forward saves: every derivative below is written in terms of the activation's output.
//
// Inline function templates over a number type T so that the CPU kernels (csrc/cpu, T a
// scalar or a SIMD vector of floats) and the CUDA kernel (csrc/cuda) compile the very same
// code; the CPU tests therefore check the math the GPU runs. T needs +, -, *, /, a
// constructor from a scalar, and exp/tanh found by argument-dependent lookup (std:: for
// float and double, the SIMD headers for vectors).
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define LSTM_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define LSTM_HOST_DEVICE inline
#endif

namespace fused_lstm {

// Computed as 1 / (1 + exp(-x)): exact at both tails in IEEE arithmetic (exp overflow
// gives 1/inf = 0, underflow gives 1/1 = 1), no NaN for any finite or infinite input.
template <typename T>
LSTM_HOST_DEVICE T sigmoid(T x) {
  using std::exp;
  return T(1) / (T(1) + exp(-x));
}

template <typename T>
LSTM_HOST_DEVICE T tanh_(T x) {
  using std::tanh;
  return tanh(x);
}

// d sigmoid(x)/dx written in terms of y = sigmoid(x).
template <typename T>
LSTM_HOST_DEVICE T d_sigmoid(T y) {
  return y * (T(1) - y);
}

// d tanh(x)/dx written in terms of y = tanh(x).
template <typename T>
LSTM_HOST_DEVICE T d_tanh(T y) {
  return T(1) - y * y;
}

// Activated gates of one hidden unit.
template <typename T>
struct Gates {
  T i, f, g, o;
};

template <typename T>
LSTM_HOST_DEVICE Gates<T> activate(T a_i, T a_f, T a_g, T a_o) {
  return {sigmoid(a_i), sigmoid(a_f), tanh_(a_g), sigmoid(a_o)};
}

// c_t = f * c_prev + i * g
template <typename T>
LSTM_HOST_DEVICE T cell_next(const Gates<T>& gate, T c_prev) {
  return gate.f * c_prev + gate.i * gate.g;
}

// h_t = o * tanh(c_t)
template <typename T>
LSTM_HOST_DEVICE T hidden_next(const Gates<T>& gate, T c_next) {
  return gate.o * tanh_(c_next);
}

// Gradients of one cell step for one hidden unit.
//   dh      dL/dh_t (from the output and from the next step's recurrence)
//   dc_next dL/dc_t arriving from step t+1
// Returns the pre-activation gate gradients and writes dL/dc_prev.
template <typename T>
LSTM_HOST_DEVICE Gates<T> cell_backward(const Gates<T>& gate, T c_prev, T c_t, T dh,
                                        T dc_next, T* dc_prev) {
  const T tanh_c = tanh_(c_t);
  const T dc = dc_next + dh * gate.o * d_tanh(tanh_c);
  *dc_prev = dc * gate.f;
  return {
      dc * gate.g * d_sigmoid(gate.i),   // d a_i
      dc * c_prev * d_sigmoid(gate.f),   // d a_f
      dc * gate.i * d_tanh(gate.g),      // d a_g
      dh * tanh_c * d_sigmoid(gate.o),   // d a_o
  };
}

}  // namespace fused_lstm
