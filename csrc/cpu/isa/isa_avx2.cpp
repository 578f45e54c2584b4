// Kernels for AVX2 + FMA. Everything this unit compiles is AVX2 code, so it
// includes nothing but intrinsics and the project's templates, instantiated only with this
// unit's own types: no inline function shared with baseline code can pick up AVX2.
#pragma GCC target("avx2,fma")

#include <immintrin.h>
#include <omp.h>
#include <sched.h>

#include <cstdint>

#include "../../lstm_cell.h"
#include "kernels.h"

namespace fused_lstm::cpu::avx2 {
#include "vec_avx2.h"
#include "vec_math.h"
#include "cell_rows.h"
#include "tile.h"
#include "spin_barrier.h"
#include "fused_forward.h"
#include "weight_grads.h"
#include "fused_backward.h"
#include "fma_peak.h"

CellKernels<float> cell_kernels() {
  return {&forward_row<Vec, float>, &backward_row<Vec, float>};
}

FusedKernels fused_kernels() {
  return {&panel_floats, &fused_forward, &column_panel_floats, &fused_backward,
          &weight_grad_floats, &fma_peak_gflops, nullptr, nullptr};
}

}  // namespace fused_lstm::cpu::avx2
