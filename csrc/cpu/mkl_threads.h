// MKL's per-thread thread-count setter, declared weak: non-null when torch's BLAS is MKL
// (the x86 CPU wheels), null elsewhere. Framework-free, so that the ISA dispatch can test
// for MKL as well as blas.h.
#pragma once

extern "C" int MKL_Set_Num_Threads_Local(int n) __attribute__((weak));
