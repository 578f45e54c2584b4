// The machine's fp32 FMA peak as this ISA reaches it: every thread runs 24 independent FMA
// chains (enough to cover FMA latency on two ports) out of registers. The benchmark reports
// achieved GFLOP/s against this number. Include inside the ISA unit's namespace.

double fma_peak_gflops(int num_threads) {
  constexpr int kChains = 24;
  constexpr int64_t kIters = int64_t{1} << 22;
  double seconds = 0.0;
  float sink = 0.0f;
#pragma omp parallel num_threads(num_threads) reduction(+ : sink)
  {
    Vec acc[kChains];
    for (int j = 0; j < kChains; ++j) acc[j] = Vec(0.0f);
    const Vec a(0.999999f), b(1e-7f);
#pragma omp barrier
    const double start = omp_get_wtime();
    for (int64_t i = 0; i < kIters; ++i) {
#pragma GCC unroll 24
      for (int j = 0; j < kChains; ++j) acc[j] = fmadd(acc[j], a, b);
    }
#pragma omp barrier
#pragma omp master
    seconds = omp_get_wtime() - start;
    float out[Vec::kWidth];
    for (int j = 1; j < kChains; ++j) acc[0] = acc[0] + acc[j];
    acc[0].store(out);
    sink += out[0];
  }
  // The sink keeps the loop from being optimized away; it is finite and never zero.
  const double flops = 2.0 * Vec::kWidth * kChains * kIters * num_threads;
  return sink != 0.0f ? flops / seconds / 1e9 : 0.0;
}
