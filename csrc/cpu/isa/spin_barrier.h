// A barrier for the threads of one OpenMP team that waits by spinning on a shared word
// (include inside the ISA unit's namespace). The time loops that split a step's work across
// threads meet once or twice per step, a few microseconds apart; GOMP's barrier cost about
// 1 us per meeting there (measured at B = 1, H = 256: 12% of the forward's samples). Plain
// GCC atomics, no std::atomic: see isa_avx512.cpp on templates shared with baseline code.
// A waiting thread yields its core between checks after a while: a few hundred
// microseconds normally, at once when the team has more threads than the process has cores
// (spinning there would keep the thread it waits for off the core: 50x slower, measured).
struct SpinBarrier {
  alignas(64) int arrived = 0;
  alignas(64) int phase = 0;
  int threads = 1;
  int spins_before_yield = 1 << 12;

  // Call once, by one thread of the team, before the first wait.
  void start(int team_threads) {
    threads = team_threads;
    spins_before_yield = team_threads > omp_get_num_procs() ? 0 : 1 << 12;
  }

  void wait() {
    const int my_phase = __atomic_load_n(&phase, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&arrived, 1, __ATOMIC_ACQ_REL) == threads) {
      __atomic_store_n(&arrived, 0, __ATOMIC_RELAXED);
      __atomic_store_n(&phase, my_phase + 1, __ATOMIC_RELEASE);  // publishes the reset too
      return;
    }
    for (int spins = 0; __atomic_load_n(&phase, __ATOMIC_ACQUIRE) == my_phase;) {
      if (spins < spins_before_yield) {
        ++spins;
        _mm_pause();
      } else {
        sched_yield();
      }
    }
  }
};
