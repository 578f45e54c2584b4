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
// on Zen 5 (in-process, alternating), forward / forward+backward in us, library : fused:
//   - H = 50, B = 1: T = 1 24 : 31, T = 8 29 : 37; B = 4: T = 4 40 : 39, T = 8 57 : 51
//   - H = 256, B = 1: T = 1 57 : 57, T = 2 71 : 61 (f+b 209 : 211), T = 4 103 : 69
//     (270 : 236); B = 4, T = 1: 85 : 64 (260 : 218)
//   - H = 512, (T, B) = (6, 2): 814-933 : 307-366 (2214-2922 : 1178-1562)
//   - H = 1024, B = 1: T = 1 1641 : 2230, T = 4 3589-4455 : 2592-3136 (8660-10544 :
//     9088-9934); (T, B) = (1, 4): 2484-2681 : 2476-2802 (6664-7064 : 7765-7985)
// So: from T = 8, from 32 rows, and from 4 rows at 256 <= H <= 512 (where packing W_hh, up
// to 4 MB, costs less than the library's per-step calls; its 16 MB at H = 1024 cost as much
// as the steps saved). At H = 50, B = 1 the library path stayed 8 us ahead at T = 8 too, but
// at T = 32-200 the two runs disagreed (noise), so T >= 8 stays the rule for every size.
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

// h_n [B, features] of a layer's output (contiguous) into dst, B x features elements of
// output's dtype: each sequence's output at its own last step.
void copy_last_hidden(const LayerSizes& n, const at::Tensor& output, bool reverse, void* dst);

}  // namespace fused_lstm::cpu
