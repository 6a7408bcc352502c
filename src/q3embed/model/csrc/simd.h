// Vector helpers the two kernel files share (csrc/block_linear.cpp, csrc/decoder_ops.cpp): bf16
// loads, roundings and stores, e^x, and SwiGLU's silu(gate) * up with torch's roundings. Header-only
// and inlined: the inner loops call them per vector. model/block_linear.py rebuilds the extension
// when this file changes (its hash is in the compile flags: cpp_extension hashes only the sources).

#pragma once

#include <ATen/ATen.h>
#include <immintrin.h>

#include <cstdint>
#include <limits>

namespace q3embed_simd {

// Called, not inlined, a helper costs a vzeroupper and a spill of every accumulator per call.
#define Q3_INLINE inline __attribute__((always_inline))

Q3_INLINE __m512 load_bf16(const at::BFloat16* p) {  // 16 bf16 -> fp32 (exact)
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

Q3_INLINE __m512 round_bf16(__m512 v) {  // fp32 -> nearest bf16 (even on ties) -> fp32
  const __m256i raw = (__m256i)_mm512_cvtneps_pbh(v);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

Q3_INLINE void store_bf16(at::BFloat16* p, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), (__m256i)_mm512_cvtneps_pbh(v));
}

// 32 fp32 (outputs 0-15, 16-31) -> 32 bf16 at out, round to nearest even.
Q3_INLINE void store_bf16(at::BFloat16* out, __m512 low, __m512 high) {
  store_bf16(out, low);
  store_bf16(out + 16, high);
}

// e^x to ~2 ulp: x = n ln2 + r, |r| <= ln2 / 2, e^r by its degree-6 Taylor polynomial, times 2^n
// (scalef: gradual underflow below 2^-126); +inf past fp32's range, 0 below its least denormal.
Q3_INLINE __m512 exp_ps(__m512 x) {
  const __m512 clamped = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(88.7f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(clamped, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), clamped);  // ln 2 in two parts: r exact
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  for (const float c : {1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f}) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  __m512 result = _mm512_scalef_ps(p, n);
  result = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(88.72f), _CMP_GT_OQ), result,
                                _mm512_set1_ps(std::numeric_limits<float>::infinity()));
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-104.0f), _CMP_LT_OQ), result, _mm512_setzero_ps());
}

// silu(g) * u for 16 values that are bf16 (held exactly in fp32) as torch computes them: silu in
// fp32, g / (1 + e^-g), rounded to bf16, then the bf16 product (rounded when stored).
Q3_INLINE __m512 silu_times(__m512 g, __m512 u) {
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_mul_ps(round_bf16(_mm512_div_ps(g, _mm512_add_ps(one, exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), g))))), u);
}

}  // namespace q3embed_simd
