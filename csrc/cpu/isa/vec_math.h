// exp and tanh for a SIMD Vec (vec_avx512.h / vec_avx2.h), found by lstm_cell.h through
// argument-dependent lookup, and a W x W transpose. Include right after the Vec header, in
// the same namespace.

// exp(x) = 2^n * e^r with n = round(x / ln 2) and |r| <= ln2 / 2; e^r by a degree-6
// polynomial (the Cephes expf coefficients), ~1 ulp. Inputs are clamped to where float
// exp is finite and normal, so exp(-inf) ~ 1e-38 and exp(+inf) ~ 2e38: sigmoid stays
// exact to float precision at both ends. NaN stays NaN.
inline Vec exp(Vec x) {
  x = clamp(x, -87.3365f, 88.3762626647949f);
  const Vec n = round_nearest(x * Vec(1.44269504088896341f));
  const Vec r = fmadd(n, Vec(2.12194440e-4f), fmadd(n, Vec(-0.693359375f), x));
  Vec p(1.9875691500e-4f);
  p = fmadd(p, r, Vec(1.3981999507e-3f));
  p = fmadd(p, r, Vec(8.3334519073e-3f));
  p = fmadd(p, r, Vec(4.1665795894e-2f));
  p = fmadd(p, r, Vec(1.6666665459e-1f));
  p = fmadd(p, r, Vec(5.0000001201e-1f));
  const Vec y = fmadd(p * r, r, r + Vec(1.0f));
  return scale_pow2(y, n);
}

// tanh(x) by a [13/6] odd/even rational approximation, within 3e-8 of tanh on [-9, 9]
// (measured in float64; ~2 ulp evaluated in float); beyond 9 float tanh is +-1, which the
// clamp gives. Tiny |x| returns x, which is tanh(x) in float.
inline Vec tanh(Vec x) {
  const Vec xc = clamp(x, -9.0f, 9.0f);
  const Vec x2 = xc * xc;
  Vec p(-2.76076847742355e-16f);
  p = fmadd(p, x2, Vec(2.00018790482477e-13f));
  p = fmadd(p, x2, Vec(-8.60467152213735e-11f));
  p = fmadd(p, x2, Vec(5.12229709037114e-08f));
  p = fmadd(p, x2, Vec(1.48572235717979e-05f));
  p = fmadd(p, x2, Vec(6.37261928875436e-04f));
  p = fmadd(p, x2, Vec(4.89352455891786e-03f));
  Vec q(1.19825839466702e-06f);
  q = fmadd(q, x2, Vec(1.18534705686654e-04f));
  q = fmadd(q, x2, Vec(2.26843463243900e-03f));
  q = fmadd(q, x2, Vec(4.89352518554385e-03f));
  // Rounding can push p / q a hair past 1 near the clamp: keep |tanh| <= 1.
  return select_small(x, 0.0004f, x, clamp(xc * p / q, -1.0f, 1.0f));
}

// Transposes the W x W block held in r (r[i] lane j <-> r[j] lane i): 32-bit then 64-bit
// interleaves give 4 x 4 transposes within each 128-bit lane, then the ISA exchanges lanes.
inline void transpose(Vec (&r)[Vec::kWidth]) {
  constexpr int W = Vec::kWidth;
  Vec a[W];
  for (int i = 0; i < W; i += 2) {
    a[i] = unpack_lo32(r[i], r[i + 1]);
    a[i + 1] = unpack_hi32(r[i], r[i + 1]);
  }
  for (int j = 0; j < W; j += 4) {  // r[j + c], lane l: rows j..j+3 of column 4 l + c
    r[j] = unpack_lo64(a[j], a[j + 2]);
    r[j + 1] = unpack_hi64(a[j], a[j + 2]);
    r[j + 2] = unpack_lo64(a[j + 1], a[j + 3]);
    r[j + 3] = unpack_hi64(a[j + 1], a[j + 3]);
  }
  transpose_lanes(r);
}
