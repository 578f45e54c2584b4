// The CPU kernels compiled once per instruction set, and the choice among them at run time.
// Each ISA's code lives in its own translation unit (isa_*.cpp) compiled for that ISA; the
// rest of the library is built for baseline x86-64, so a build runs on any x86-64 CPU.
#pragma once

#include <cstdint>

namespace fused_lstm::cpu {

enum class Isa { kGeneric, kAvx2, kAvx512 };

// Fused per-row passes of the cell (see cell_rows.h).
template <typename T>
struct CellKernels {
  void (*forward_row)(int64_t H, T* a, const T* bias, T* c, T* cell_out, T* h_out, T* h_state);
  void (*backward_row)(int64_t H, const T* a, const T* c_prev, const T* c_t, const T* dh_a,
                       const T* dh_b, T* dc, T* da, T* h_raw);
};

// The ISA in use: the best this CPU supports, unless FUSED_LSTM_CPU_ISA (generic, avx2,
// avx512) or set_isa asked for another one this CPU supports.
Isa active_isa();
const char* isa_name(Isa isa);
bool cpu_supports(Isa isa);
// Returns false (and changes nothing) if the CPU lacks it.
bool set_isa(Isa isa);
bool parse_isa(const char* name, Isa* isa);

template <typename T>
CellKernels<T> cell_kernels();  // for the active ISA; float64 always runs the generic code

namespace generic {
template <typename T>
CellKernels<T> cell_kernels();
}
namespace avx2 {
CellKernels<float> cell_kernels();
}
namespace avx512 {
CellKernels<float> cell_kernels();
}

}  // namespace fused_lstm::cpu
