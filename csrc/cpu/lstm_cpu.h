// The pieces of the CPU forward of one layer (lstm_cpu.cpp) that the stacked-layer forward
// (lstm_stack_cpu.cpp) shares.
#pragma once

#include <ATen/ATen.h>

#include "../ops.h"
#include "isa/kernels.h"

namespace fused_lstm::cpu {

// At most 16 sequences: the input projection is hoisted out of the time loop into one GEMM,
// and each step only streams W_hh. Larger batches reuse each weight panel over enough rows
// that the per-step [x_t, h] @ [W_ih; W_hh]^T pass wins (and the projection buffer would not
// stay in cache).
bool hoist_projection(const LayerSizes& n);

// Whether the layer runs the fused kernels (float32, no projection, kernels for this ISA).
// They pack the weights on every call, one extra pass over them, and win per step and row
// after that; with few steps and few rows the per-step library path is faster. Measured
// here, forward and forward+backward, B = 1:
//   - T = 1, H = 1024: 0.80 / 4.2 ms against 1.69 / 7.4 ms fused
//   - T = 4, H = 256: 0.14 / 0.75 ms against 0.19 / 0.76 ms fused
// From T = 8 (H = 256), or 32 rows at T = 1 (B = 32, H = 50: 0.11 ms fused against 0.20),
// the fused kernels are ahead.
bool use_fused(const LayerSizes& n, const at::Tensor& input, bool has_kernel, bool proj);

// The fused forward's arguments for all T steps of a layer (float32, contiguous; cell only
// read when train; b_ih + b_hh is the bias, either may be null); gates, gates_row0 and
// partial are left for the caller.
FusedForwardArgs fused_forward_args(const LayerSizes& n, const at::Tensor& input,
                                    const float* h0, const at::Tensor& w_ih,
                                    const at::Tensor& w_hh, const float* b_ih,
                                    const float* b_hh, bool reverse, bool train,
                                    const at::Tensor& output, const at::Tensor& cell,
                                    float* c_n);

// h_n [B, features] of a layer's output (contiguous): each sequence's output at its own last
// step; copy_last_hidden writes it to dst, B x features elements of output's dtype.
at::Tensor last_hidden(const LayerSizes& n, const at::Tensor& output, bool reverse);
void copy_last_hidden(const LayerSizes& n, const at::Tensor& output, bool reverse, void* dst);

}  // namespace fused_lstm::cpu
