// One thread per (row, hidden unit); the math is lstm_cell.h's, the same the CPU tests check.
#include "../lstm_cell.h"
#include "lstm_kernels.h"

namespace fused_lstm::cuda {
namespace {

constexpr int kThreads = 256;

inline unsigned blocks_for(int64_t count) {
  return static_cast<unsigned>((count + kThreads - 1) / kThreads);
}

template <typename T>
__global__ void forward_step_kernel(ForwardStep<T> p) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= p.n * p.H) return;
  const int64_t b = k / p.H, j = k % p.H, H = p.H;
  T* a = p.gates + b * 4 * H;
  const Gates<T> gate = activate(a[j] + p.bias[j], a[H + j] + p.bias[H + j],
                                 a[2 * H + j] + p.bias[2 * H + j], a[3 * H + j] + p.bias[3 * H + j]);
  const T c = cell_next(gate, p.c[k]);
  const T h = hidden_next(gate, c);
  p.c[k] = c;
  p.h_out[k] = h;
  if (p.h_state) p.h_state[k] = h;
  if (p.cell_out) {
    p.cell_out[k] = c;
    a[j] = gate.i;
    a[H + j] = gate.f;
    a[2 * H + j] = gate.g;
    a[3 * H + j] = gate.o;
  }
}

template <typename T>
__global__ void backward_step_kernel(BackwardStep<T> p) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= p.n * p.H) return;
  const int64_t b = k / p.H, j = k % p.H, H = p.H;
  const T* a = p.gates + b * 4 * H;
  const Gates<T> gate{a[j], a[H + j], a[2 * H + j], a[3 * H + j]};
  const T c_prev = b < p.n_cont ? p.c_prev_cont[k] : p.c0[k];
  const T dh = (p.dh_a ? p.dh_a[b * p.dh_stride + j] : T(0)) +
               (p.dh_b ? p.dh_b[b * p.dh_stride + j] : T(0));
  T dc_prev;
  const Gates<T> d = cell_backward(gate, c_prev, p.c_t[k], dh, p.dc[k], &dc_prev);
  p.dc[k] = dc_prev;
  T* da = p.dgates + b * 4 * H;
  da[j] = d.i;
  da[H + j] = d.f;
  da[2 * H + j] = d.g;
  da[3 * H + j] = d.o;
  if (p.h_raw) p.h_raw[k] = hidden_next(gate, p.c_t[k]);
}

}  // namespace

template <typename T>
void launch_forward_step(const ForwardStep<T>& p, cudaStream_t stream) {
  if (p.n * p.H == 0) return;
  forward_step_kernel<T><<<blocks_for(p.n * p.H), kThreads, 0, stream>>>(p);
}

template <typename T>
void launch_backward_step(const BackwardStep<T>& p, cudaStream_t stream) {
  if (p.n * p.H == 0) return;
  backward_step_kernel<T><<<blocks_for(p.n * p.H), kThreads, 0, stream>>>(p);
}

template void launch_forward_step<float>(const ForwardStep<float>&, cudaStream_t);
template void launch_forward_step<double>(const ForwardStep<double>&, cudaStream_t);
template void launch_backward_step<float>(const BackwardStep<float>&, cudaStream_t);
template void launch_backward_step<double>(const BackwardStep<double>&, cudaStream_t);

}  // namespace fused_lstm::cuda
