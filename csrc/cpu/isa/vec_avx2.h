// 8 floats in one AVX2 register. Include only from a translation unit compiled for
// AVX2 + FMA (isa_avx2.cpp), inside that unit's own namespace, after <immintrin.h>.

struct Vec {
  static constexpr int kWidth = 8;
  static constexpr int kRegisters = 16;  // vector registers
  __m256 v;

  Vec() = default;
  Vec(__m256 x) : v(x) {}
  Vec(float x) : v(_mm256_set1_ps(x)) {}

  static Vec load(const float* p) { return _mm256_loadu_ps(p); }
  void store(float* p) const { _mm256_storeu_ps(p, v); }
  // The first n < kWidth lanes; the others read as 0 and are not written.
  static Vec load(const float* p, int64_t n) { return _mm256_maskload_ps(p, mask(n)); }
  void store(float* p, int64_t n) const { _mm256_maskstore_ps(p, mask(n), v); }
  static __m256i mask(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
};

inline Vec operator+(Vec a, Vec b) { return _mm256_add_ps(a.v, b.v); }
inline Vec operator-(Vec a, Vec b) { return _mm256_sub_ps(a.v, b.v); }
inline Vec operator*(Vec a, Vec b) { return _mm256_mul_ps(a.v, b.v); }
// a / b as a * (1 / b): the 12-bit reciprocal estimate refined by one Newton step, within
// a few ulp of IEEE division for finite, nonzero b (all the cell math ever divides by), and
// far cheaper than vdivps.
inline Vec operator/(Vec a, Vec b) {
  const __m256 r = _mm256_rcp_ps(b.v);
  const __m256 r1 = _mm256_fmadd_ps(r, _mm256_fnmadd_ps(b.v, r, _mm256_set1_ps(1.0f)), r);
  return _mm256_mul_ps(a.v, r1);
}
inline Vec operator-(Vec a) { return _mm256_xor_ps(a.v, _mm256_set1_ps(-0.0f)); }
inline Vec fmadd(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a.v, b.v, c.v); }
// NaN in x comes out as NaN (min/max return their second operand when one is NaN).
inline Vec clamp(Vec x, float lo, float hi) {
  return _mm256_max_ps(_mm256_set1_ps(lo), _mm256_min_ps(_mm256_set1_ps(hi), x.v));
}
inline Vec round_nearest(Vec x) {
  return _mm256_round_ps(x.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
// y * 2^n for integral n in [-127, 127] (exp's clamp keeps n there).
inline Vec scale_pow2(Vec y, Vec n) {
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y.v, _mm256_castsi256_ps(e));
}
// Lanes where |x| < t take a, the others b.
inline Vec select_small(Vec x, float t, Vec a, Vec b) {
  const __m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x.v);
  return _mm256_blendv_ps(b.v, a.v, _mm256_cmp_ps(ax, _mm256_set1_ps(t), _CMP_LT_OQ));
}
// Lanes [off, off + kWidth) of the concatenation a | b, for 0 <= off <= kWidth.
inline Vec lanes_of(Vec a, Vec b, int64_t off) {
  const __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(off)),
                                       _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  const __m256 from_a = _mm256_permutevar8x32_ps(a.v, idx);  // uses idx mod 8
  const __m256 from_b = _mm256_permutevar8x32_ps(b.v, idx);
  return _mm256_blendv_ps(from_a, from_b,
                          _mm256_castsi256_ps(_mm256_cmpgt_epi32(idx, _mm256_set1_epi32(7))));
}

// Interleaves within 128-bit lanes, for transpose() (vec_math.h): 32-bit elements of a and
// b alternating (the low or high pair of each lane), and 64-bit ones.
inline Vec unpack_lo32(Vec a, Vec b) { return _mm256_unpacklo_ps(a.v, b.v); }
inline Vec unpack_hi32(Vec a, Vec b) { return _mm256_unpackhi_ps(a.v, b.v); }
inline Vec unpack_lo64(Vec a, Vec b) {
  return _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(a.v), _mm256_castps_pd(b.v)));
}
inline Vec unpack_hi64(Vec a, Vec b) {
  return _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(a.v), _mm256_castps_pd(b.v)));
}

// The last stage of transpose(): r[j + c] holds, in 128-bit lane l, rows j..j+3 of column
// 4 l + c; afterwards r[i] is column i (the two lanes exchanged per c).
inline void transpose_lanes(Vec (&r)[8]) {
  for (int c = 0; c < 4; ++c) {
    const __m256 lo = r[c].v, hi = r[4 + c].v;
    r[c] = _mm256_permute2f128_ps(lo, hi, 0x20);
    r[4 + c] = _mm256_permute2f128_ps(lo, hi, 0x31);
  }
}
