// The decoder's operations besides its linear layers, on an AVX512-BF16 CPU in bf16: RMSNorm, the
// per-head RMSNorm + RoPE of q and k, and causal attention over a packed batch.
//
// Why. On 2 cores an interactive query of 13 tokens spent ~14 of its ~45 ms outside the matrix
// products: per layer torch dispatches a dozen small operations (RMSNorm alone is 5, ~28 us at 13
// tokens) and SDPA's flash kernel takes ~120 us for 13 x 13 keys. Each operation here is one call
// doing one pass; attention is one call per layer for the whole batch, with grouped-query heads
// read in place (no expanded copy of k and v), where the loop made one SDPA call per sequence.
//
// Numerics follow model/kernels.py (the reference's): RMSNorm's mean of squares in fp32, the
// normed value rounded to bf16 before the weight multiply (a bf16 product); RoPE in fp32 on the
// normed bf16 values, x cos + rotate_half(x) sin rounded once. Built with -ffp-contract=off so
// no multiply and add are fused where torch rounds between them: the only difference from eager
// torch is the order of the fp32 sum of squares (a rare last-bit flip of a bf16 value).
// Attention: q k^T with bf16 dot products summed in fp32 (vdpbf16ps), softmax and p v in fp32,
// the output rounded to bf16 once; SDPA's CPU kernel rounds the probabilities to bf16 before p v,
// so this is the closer of the two to the fp32 computation.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

#define Q3_INLINE inline __attribute__((always_inline))

constexpr int64_t kLanes = 16;  // fp32 lanes of a vector register
// Below this many elements an operation runs on the calling thread: waking the OpenMP team costs
// more than the work (a 13-token RMSNorm is 13k elements).
constexpr int64_t kParallelElements = 64 * 1024;
// Queries of one sequence per attention work item (see causal_attention).
constexpr int64_t kQueryChunk = 256;

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

// 1 / sqrt(mean(x^2) + eps) of one row of `dim` bf16 values: squares rounded to fp32, then summed
// (torch: x32.pow(2).mean(-1)), the mean a division as torch's CPU mean is.
Q3_INLINE float inverse_rms(const at::BFloat16* x, int64_t dim, float eps) {
  __m512 sums[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  int64_t d = 0;
  for (; d + 4 * kLanes <= dim; d += 4 * kLanes)
    for (int i = 0; i < 4; ++i) {
      const __m512 v = load_bf16(x + d + i * kLanes);
      sums[i] = _mm512_add_ps(sums[i], _mm512_mul_ps(v, v));
    }
  for (; d < dim; d += kLanes) {
    const __m512 v = load_bf16(x + d);
    sums[0] = _mm512_add_ps(sums[0], _mm512_mul_ps(v, v));
  }
  const __m512 total = _mm512_add_ps(_mm512_add_ps(sums[0], sums[1]), _mm512_add_ps(sums[2], sums[3]));
  const float mean = _mm512_reduce_add_ps(total) / static_cast<float>(dim);
  return 1.0f / std::sqrt(mean + eps);
}

// weight * bf16(x * r) for 16 values: the reference's two roundings.
Q3_INLINE __m512 normed(const at::BFloat16* x, const at::BFloat16* weight, __m512 r) {
  return round_bf16(_mm512_mul_ps(load_bf16(weight), round_bf16(_mm512_mul_ps(load_bf16(x), r))));
}

void check_bf16(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kBFloat16, name, " must be bf16 on the CPU");
}

// ------------------------------------------------------------------------------------------ norms

// x [rows, dim] (rows at any stride, each row contiguous), weight [dim] -> [rows, dim].
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  check_bf16(x, "x");
  check_bf16(weight, "weight");
  TORCH_CHECK(x.dim() == 2 && x.stride(1) == 1, "x must be [rows, dim] with contiguous rows");
  const int64_t rows = x.size(0), dim = x.size(1);
  TORCH_CHECK(dim % kLanes == 0 && weight.dim() == 1 && weight.size(0) == dim && weight.is_contiguous(),
              "weight must be [", dim, "] and dim a multiple of 16");
  at::Tensor out = at::empty({rows, dim}, x.options());
  const at::BFloat16* xp = x.data_ptr<at::BFloat16>();
  const at::BFloat16* wp = weight.data_ptr<at::BFloat16>();
  at::BFloat16* op = out.data_ptr<at::BFloat16>();
  const int64_t stride = x.stride(0);
  at::parallel_for(0, rows, std::max<int64_t>(1, kParallelElements / dim), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const at::BFloat16* xr = xp + row * stride;
      const __m512 r = _mm512_set1_ps(inverse_rms(xr, dim, static_cast<float>(eps)));
      for (int64_t d = 0; d < dim; d += kLanes) store_bf16(op + row * dim + d, normed(xr + d, wp + d, r));
    }
  });
  return out;
}

// Qwen3's q_norm / k_norm then RoPE: x [T, heads, d] (tokens at any stride, heads contiguous rows
// of d), weight [d] or [heads, d], cos and sin fp32 [T, d] -> [T, heads, d].
at::Tensor norm_rope(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& cos, const at::Tensor& sin,
                     double eps) {
  check_bf16(x, "x");
  check_bf16(weight, "weight");
  TORCH_CHECK(x.dim() == 3 && x.stride(2) == 1 && x.stride(1) == x.size(2), "x must be [T, heads, d], heads contiguous");
  const int64_t tokens = x.size(0), heads = x.size(1), dim = x.size(2), half = dim / 2;
  TORCH_CHECK(half % kLanes == 0, "head_dim must be a multiple of 32");
  TORCH_CHECK(weight.is_contiguous() && (weight.sizes() == at::IntArrayRef({dim})
              || weight.sizes() == at::IntArrayRef({heads, dim})), "weight must be [d] or [heads, d]");
  for (const at::Tensor* t : {&cos, &sin})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->sizes() == at::IntArrayRef({tokens, dim}),
                "cos and sin must be fp32 [T, d]");
  at::Tensor out = at::empty({tokens, heads, dim}, x.options());
  const at::BFloat16* xp = x.data_ptr<at::BFloat16>();
  const at::BFloat16* wp = weight.data_ptr<at::BFloat16>();
  const float* cp = cos.data_ptr<float>();
  const float* sp = sin.data_ptr<float>();
  at::BFloat16* op = out.data_ptr<at::BFloat16>();
  const int64_t stride = x.stride(0), weight_step = weight.dim() == 2 ? dim : 0;
  at::parallel_for(0, tokens * heads, std::max<int64_t>(1, kParallelElements / dim), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t t = row / heads, h = row % heads;
      const at::BFloat16* xr = xp + t * stride + h * dim;
      const at::BFloat16* wr = wp + h * weight_step;
      const __m512 r = _mm512_set1_ps(inverse_rms(xr, dim, static_cast<float>(eps)));
      for (int64_t d = 0; d < half; d += kLanes) {
        // out[d] = x[d] cos[d] - x[d + half] sin[d]; out[d + half] = x[d + half] cos + x[d] sin
        const __m512 low = normed(xr + d, wr + d, r), high = normed(xr + half + d, wr + half + d, r);
        const float* c = cp + t * dim + d;
        const float* s = sp + t * dim + d;
        const __m512 out_low = _mm512_add_ps(_mm512_mul_ps(low, _mm512_loadu_ps(c)),
                                             _mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), high), _mm512_loadu_ps(s)));
        const __m512 out_high = _mm512_add_ps(_mm512_mul_ps(high, _mm512_loadu_ps(c + half)),
                                              _mm512_mul_ps(low, _mm512_loadu_ps(s + half)));
        store_bf16(op + row * dim + d, out_low);
        store_bf16(op + row * dim + half + d, out_high);
      }
    }
  });
  return out;
}

// -------------------------------------------------------------------------------------- attention

// e^x for x <= 0 (scores minus their maximum), to ~2 ulp: x = n ln2 + r, |r| <= ln2 / 2, e^r by
// its degree-6 Taylor polynomial, times 2^n. Below -87.3 the result is 0 (fp32 underflow).
Q3_INLINE __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);  // ln 2 in two parts: r exact
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  for (const float c : {1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f}) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  const __m512 result = _mm512_scalef_ps(p, n);
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_LE_OQ), result, _mm512_setzero_ps());
}

// Per thread, one (sequence, kv head)'s keys and values in the layouts the loops read.
struct KeyValueScratch {
  std::vector<at::BFloat16> keys;  // [d/2, L16, 2]: per dimension pair, 16 keys at a time in vdpbf16ps order
  std::vector<float> values;       // [L, d] fp32
  std::vector<float> scores;       // [L16]
};

struct AttentionShape {
  int64_t heads, kv_heads, dim;
  float scale;
};

// Keys [L, d] (row stride k_stride) -> scratch.keys [d/2, L16, 2]; values -> fp32 [L, d].
void stage_keys_values(const at::BFloat16* k, const at::BFloat16* v, int64_t length, int64_t k_stride,
                       int64_t v_stride, int64_t dim, KeyValueScratch& s) {
  const int64_t padded = (length + kLanes - 1) / kLanes * kLanes;
  s.keys.assign(dim * padded, at::BFloat16(0.0f));
  s.values.resize(length * dim);
  s.scores.resize(padded);
  for (int64_t j = 0; j < length; ++j) {
    const at::BFloat16* kj = k + j * k_stride;
    for (int64_t d = 0; d < dim; d += 2) {
      s.keys[(d / 2 * padded + j) * 2] = kj[d];
      s.keys[(d / 2 * padded + j) * 2 + 1] = kj[d + 1];
    }
    for (int64_t d = 0; d < dim; d += kLanes) _mm512_storeu_ps(&s.values[j * dim + d], load_bf16(v + j * v_stride + d));
  }
}

// out [16W] = sum over keys j of p[j] values[j] (fp32 [keys, dim], this block's 16W columns),
// divided by the probabilities' total.
template <int W>
Q3_INLINE void weighted_values(const float* p, int64_t keys, const float* values, int64_t dim, float inverse_total,
                               at::BFloat16* out) {
  __m512 acc[W];
  for (int i = 0; i < W; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t j = 0; j < keys; ++j) {
    const __m512 pj = _mm512_set1_ps(p[j]);
    for (int i = 0; i < W; ++i) acc[i] = _mm512_fmadd_ps(pj, _mm512_loadu_ps(values + j * dim + i * kLanes), acc[i]);
  }
  for (int i = 0; i < W; ++i) store_bf16(out + i * kLanes, _mm512_mul_ps(acc[i], _mm512_set1_ps(inverse_total)));
}

// One query row q [d] against keys 0 .. keys-1 of the staged sequence -> out [d] (bf16).
void attend_one(const at::BFloat16* q, int64_t keys, int64_t padded, int64_t dim, float scale,
                KeyValueScratch& s, at::BFloat16* out) {
  float* scores = s.scores.data();
  const auto* pairs = reinterpret_cast<const int32_t*>(q);  // q's dimension pairs, 2 bf16 each
  __m512 top = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j < keys; j += kLanes) {
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    const at::BFloat16* block = s.keys.data() + j * 2;
    for (int64_t p = 0; p < dim / 2; p += 4)  // 4 chains: a dot product's latency, not its rate, would bind
      for (int i = 0; i < 4; ++i) {
        const __m512bh kp = (__m512bh)_mm512_loadu_si512(block + (p + i) * padded * 2);
        acc[i] = _mm512_dpbf16_ps(acc[i], kp, (__m512bh)_mm512_set1_epi32(pairs[p + i]));
      }
    __m512 sc = _mm512_mul_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])),
                              _mm512_set1_ps(scale));
    const int64_t live = std::min<int64_t>(kLanes, keys - j);  // keys past the causal end: -inf
    sc = _mm512_mask_blend_ps(static_cast<__mmask16>((1u << live) - 1), _mm512_set1_ps(-INFINITY), sc);
    _mm512_storeu_ps(scores + j, sc);
    top = _mm512_max_ps(top, sc);
  }
  const __m512 maximum = _mm512_set1_ps(_mm512_reduce_max_ps(top));
  __m512 total = _mm512_setzero_ps();
  for (int64_t j = 0; j < keys; j += kLanes) {
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(scores + j), maximum));
    _mm512_storeu_ps(scores + j, e);
    total = _mm512_add_ps(total, e);
  }
  const float inverse_total = 1.0f / _mm512_reduce_add_ps(total);
  for (int64_t d0 = 0; d0 < dim; d0 += 8 * kLanes) {  // up to 128 dimensions at a time, in registers
    const float* values = s.values.data() + d0;
    switch (std::min<int64_t>(8, (dim - d0) / kLanes)) {  // d is a multiple of 32: an even count
      case 2: weighted_values<2>(scores, keys, values, dim, inverse_total, out + d0); break;
      case 4: weighted_values<4>(scores, keys, values, dim, inverse_total, out + d0); break;
      case 6: weighted_values<6>(scores, keys, values, dim, inverse_total, out + d0); break;
      default: weighted_values<8>(scores, keys, values, dim, inverse_total, out + d0); break;
    }
  }
}

// Causal attention over a packed batch: q [Tq, heads, d], k and v [T, kv_heads, d] (tokens at any
// stride, heads contiguous), seq_lens summing to T. all rows: Tq = T, token i of a sequence sees
// its keys 0 .. i; last_only: Tq = B, row b is sequence b's last token, which sees all its keys.
// -> [Tq, heads, d]. Each work item stages its keys once for the `heads / kv_heads` query heads
// that share them.
at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::IntArrayRef seq_lens,
                            bool last_only) {
  for (const at::Tensor* t : {&q, &k, &v}) {
    check_bf16(*t, "q, k and v");
    TORCH_CHECK(t->dim() == 3 && t->stride(2) == 1 && t->stride(1) == t->size(2), "q, k, v must be [T, heads, d], heads contiguous");
  }
  const int64_t heads = q.size(1), kv_heads = k.size(1), dim = q.size(2), sequences = seq_lens.size();
  TORCH_CHECK(k.sizes() == v.sizes() && k.size(2) == dim && heads % kv_heads == 0 && dim % (2 * kLanes) == 0,
              "k and v must be [T, kv_heads, d] with heads a multiple of kv_heads, d a multiple of 32");
  std::vector<int64_t> starts(sequences + 1, 0);
  for (int64_t b = 0; b < sequences; ++b) {
    TORCH_CHECK(seq_lens[b] > 0, "sequence lengths must be positive");
    starts[b + 1] = starts[b] + seq_lens[b];
  }
  TORCH_CHECK(starts[sequences] == k.size(0), "seq_lens must sum to the number of keys");
  TORCH_CHECK(q.size(0) == (last_only ? sequences : k.size(0)), "q must have one row per ",
              last_only ? "sequence" : "key");
  // Work items: (sequence, chunk of its queries, kv head). A chunk stages the keys up to its last
  // query, so a long sequence spreads over the threads at the cost of staging its keys again.
  struct Item { int64_t sequence, first, last; };  // queries first .. last - 1 of the sequence
  std::vector<Item> items;
  for (int64_t b = 0; b < sequences; ++b)
    for (int64_t first = last_only ? seq_lens[b] - 1 : 0; first < seq_lens[b]; first += kQueryChunk)
      items.push_back({b, first, std::min(first + kQueryChunk, seq_lens[b])});
  at::Tensor out = at::empty({q.size(0), heads, dim}, q.options());
  const at::BFloat16 *qp = q.data_ptr<at::BFloat16>(), *kp = k.data_ptr<at::BFloat16>(), *vp = v.data_ptr<at::BFloat16>();
  at::BFloat16* op = out.data_ptr<at::BFloat16>();
  const int64_t groups = heads / kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  at::parallel_for(0, static_cast<int64_t>(items.size()) * kv_heads, 1, [&](int64_t begin, int64_t end) {
    thread_local KeyValueScratch scratch;
    for (int64_t index = begin; index < end; ++index) {
      const Item& item = items[index / kv_heads];
      const int64_t g = index % kv_heads, start = starts[item.sequence];
      const int64_t padded = (item.last + kLanes - 1) / kLanes * kLanes;
      stage_keys_values(kp + start * k.stride(0) + g * dim, vp + start * v.stride(0) + g * dim, item.last,
                        k.stride(0), v.stride(0), dim, scratch);
      for (int64_t h = g * groups; h < (g + 1) * groups; ++h)
        for (int64_t i = item.first; i < item.last; ++i) {
          const int64_t row = last_only ? item.sequence : start + i;
          attend_one(qp + row * q.stride(0) + h * dim, i + 1, padded, dim, scale, scratch, op + (row * heads + h) * dim);
        }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(q3embed_cpu, lib) {
  lib.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  lib.def("norm_rope(Tensor x, Tensor weight, Tensor cos, Tensor sin, float eps) -> Tensor");
  lib.def("causal_attention(Tensor q, Tensor k, Tensor v, int[] seq_lens, bool last_only) -> Tensor");
}

TORCH_LIBRARY_IMPL(q3embed_cpu, CPU, lib) {
  lib.impl("rms_norm", &rms_norm);
  lib.impl("norm_rope", &norm_rope);
  lib.impl("causal_attention", &causal_attention);
}
