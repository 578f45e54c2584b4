// CUDA kernels of one LSTM step over raw pointers (no torch headers: nvcc compiles them in
// about a second). The time loop and the GEMMs live in lstm_cuda.cpp.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace fused_lstm::cuda {

// Forward cell for rows [0, n): gates (x W_ih^T + h W_hh^T, [n, 4H]) + bias -> activations;
// c [n, H] updated in place; h to h_out [n, H] and, when given, h_state. With cell_out
// (training) the activated gates overwrite `gates` and c is also written to cell_out.
template <typename T>
struct ForwardStep {
  int64_t n, H;
  T* gates;
  const T* bias;
  T* c;
  T* cell_out;
  T* h_out;
  T* h_state;
};

// Backward cell for rows [0, n): rows below n_cont take c_prev from c_prev_cont, the others
// (sequences that start at this step) from c0. dL/dh = dh_a + dh_b (rows of dh_stride; either
// may be null); dc holds dL/dc_t on entry and dL/dc_prev on exit. h_raw (optional) receives
// o * tanh(c_t) for the projection's gradient.
template <typename T>
struct BackwardStep {
  int64_t n, n_cont, H, dh_stride;
  const T* gates;
  const T* c_prev_cont;
  const T* c0;
  const T* c_t;
  const T* dh_a;
  const T* dh_b;
  T* dc;
  T* dgates;
  T* h_raw;
};

template <typename T>
void launch_forward_step(const ForwardStep<T>& p, cudaStream_t stream);
template <typename T>
void launch_backward_step(const BackwardStep<T>& p, cudaStream_t stream);

}  // namespace fused_lstm::cuda
