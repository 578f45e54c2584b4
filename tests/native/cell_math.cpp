// Host build of csrc/lstm_cell.h for tests/test_cell_header.py: reads rows of
// "a_i a_f a_g a_o c_prev dh dc_next" and prints, in T = float or double, the activated
// gates, c_t, h_t, the gate gradients and dc_prev, one line per row.
#include <cstdio>

#include "../../csrc/lstm_cell.h"

template <typename T>
void run() {
  double v[7];
  while (std::scanf("%lf %lf %lf %lf %lf %lf %lf", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6]) == 7) {
    using namespace fused_lstm;
    const Gates<T> g = activate<T>(T(v[0]), T(v[1]), T(v[2]), T(v[3]));
    const T c = cell_next(g, T(v[4]));
    const T h = hidden_next(g, c);
    T dc_prev;
    const Gates<T> d = cell_backward(g, T(v[4]), c, T(v[5]), T(v[6]), &dc_prev);
    std::printf("%.17g %.17g %.17g %.17g %.17g %.17g %.17g %.17g %.17g %.17g %.17g\n",
                double(g.i), double(g.f), double(g.g), double(g.o), double(c), double(h),
                double(d.i), double(d.f), double(d.g), double(d.o), double(dc_prev));
  }
}

int main(int argc, char** argv) {
  if (argc > 1 && argv[1][0] == 'f') {
    run<float>();
  } else {
    run<double>();
  }
  return 0;
}
