// A barrier for the threads of one OpenMP team that waits by spinning on a shared word
// (include inside the ISA unit's namespace). The time loops that split a step's work across
// threads meet once or twice per step, a few microseconds apart; GOMP's barrier cost about
// 1 us per meeting there (measured at B = 1, H = 256: 12% of the forward's samples). Plain
// GCC atomics, no std::atomic: see isa_avx512.cpp on templates shared with baseline code.
// After kSpinsBeforeYield pauses (a few ms) a waiting thread yields its core between checks,
// so a team with more threads than cores still makes progress.
struct SpinBarrier {
  static constexpr int kSpinsBeforeYield = 1 << 15;
  alignas(64) int arrived = 0;
  alignas(64) int phase = 0;
  int threads = 1;

  void wait() {
    const int my_phase = __atomic_load_n(&phase, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&arrived, 1, __ATOMIC_ACQ_REL) == threads) {
      __atomic_store_n(&arrived, 0, __ATOMIC_RELAXED);
      __atomic_store_n(&phase, my_phase + 1, __ATOMIC_RELEASE);  // publishes the reset too
      return;
    }
    for (int spins = 0; __atomic_load_n(&phase, __ATOMIC_ACQUIRE) == my_phase; ++spins) {
      if (spins < kSpinsBeforeYield) {
        _mm_pause();
      } else {
        sched_yield();
      }
    }
  }
};
