// 16 floats in one AVX-512 register. Include only from a translation unit compiled for
// AVX-512 (isa_avx512.cpp), inside that unit's own namespace, after <immintrin.h>.

struct Vec {
  static constexpr int kWidth = 16;
  static constexpr int kRegisters = 32;  // vector registers
  __m512 v;

  Vec() = default;
  Vec(__m512 x) : v(x) {}
  Vec(float x) : v(_mm512_set1_ps(x)) {}

  static Vec load(const float* p) { return _mm512_loadu_ps(p); }
  void store(float* p) const { _mm512_storeu_ps(p, v); }
  // The first n < kWidth lanes; the others read as 0 and are not written.
  static Vec load(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  void store(float* p, int64_t n) const { _mm512_mask_storeu_ps(p, mask(n), v); }
  static __mmask16 mask(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }
};

inline Vec operator+(Vec a, Vec b) { return _mm512_add_ps(a.v, b.v); }
inline Vec operator-(Vec a, Vec b) { return _mm512_sub_ps(a.v, b.v); }
inline Vec operator*(Vec a, Vec b) { return _mm512_mul_ps(a.v, b.v); }
// a / b as a * (1 / b): the 14-bit reciprocal estimate refined by one Newton step, within
// 2 ulp of IEEE division for finite, nonzero b (all the cell math ever divides by), and far
// cheaper than vdivps.
inline Vec operator/(Vec a, Vec b) {
  const __m512 r = _mm512_rcp14_ps(b.v);
  const __m512 r1 = _mm512_fmadd_ps(r, _mm512_fnmadd_ps(b.v, r, _mm512_set1_ps(1.0f)), r);
  return _mm512_mul_ps(a.v, r1);
}
inline Vec operator-(Vec a) { return _mm512_xor_ps(a.v, _mm512_set1_ps(-0.0f)); }
inline Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a.v, b.v, c.v); }
// NaN in x comes out as NaN (min/max return their second operand when one is NaN).
inline Vec clamp(Vec x, float lo, float hi) {
  return _mm512_max_ps(_mm512_set1_ps(lo), _mm512_min_ps(_mm512_set1_ps(hi), x.v));
}
inline Vec round_nearest(Vec x) {
  return _mm512_roundscale_ps(x.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
// y * 2^n for integral n.
inline Vec scale_pow2(Vec y, Vec n) { return _mm512_scalef_ps(y.v, n.v); }
// Lanes where |x| < t take a, the others b.
inline Vec select_small(Vec x, float t, Vec a, Vec b) {
  const __m512 ax = _mm512_abs_ps(x.v);
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(ax, _mm512_set1_ps(t), _CMP_LT_OQ), b.v, a.v);
}
// Lanes [off, off + kWidth) of the concatenation a | b, for 0 <= off <= kWidth.
inline Vec lanes_of(Vec a, Vec b, int64_t off) {
  const __m512i idx = _mm512_add_epi32(
      _mm512_set1_epi32(static_cast<int>(off)),
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  return _mm512_permutex2var_ps(a.v, idx, b.v);
}

// Interleaves within 128-bit lanes, for transpose() (vec_math.h): 32-bit elements of a and
// b alternating (the low or high pair of each lane), and 64-bit ones.
inline Vec unpack_lo32(Vec a, Vec b) { return _mm512_unpacklo_ps(a.v, b.v); }
inline Vec unpack_hi32(Vec a, Vec b) { return _mm512_unpackhi_ps(a.v, b.v); }
inline Vec unpack_lo64(Vec a, Vec b) {
  return _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a.v), _mm512_castps_pd(b.v)));
}
inline Vec unpack_hi64(Vec a, Vec b) {
  return _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a.v), _mm512_castps_pd(b.v)));
}

// The last stage of transpose(): r[j + c] holds, in 128-bit lane l, rows j..j+3 of column
// 4 l + c; afterwards r[i] is column i (a 4 x 4 transpose of 128-bit lanes per c).
inline void transpose_lanes(Vec (&r)[16]) {
  Vec b[16];
  for (int i = 0; i < 16; ++i) b[i] = r[i];
  for (int c = 0; c < 4; ++c) {
    const __m512 y0 = _mm512_shuffle_f32x4(b[c].v, b[4 + c].v, 0x44);
    const __m512 y1 = _mm512_shuffle_f32x4(b[c].v, b[4 + c].v, 0xEE);
    const __m512 y2 = _mm512_shuffle_f32x4(b[8 + c].v, b[12 + c].v, 0x44);
    const __m512 y3 = _mm512_shuffle_f32x4(b[8 + c].v, b[12 + c].v, 0xEE);
    r[c] = _mm512_shuffle_f32x4(y0, y2, 0x88);
    r[4 + c] = _mm512_shuffle_f32x4(y0, y2, 0xDD);
    r[8 + c] = _mm512_shuffle_f32x4(y1, y3, 0x88);
    r[12 + c] = _mm512_shuffle_f32x4(y1, y3, 0xDD);
  }
}
