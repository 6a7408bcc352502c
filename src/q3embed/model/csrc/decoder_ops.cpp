// The decoder's operations besides its linear layers, on an AVX512-BF16 CPU in bf16: RMSNorm (alone
// and with the residual add before it), the per-head RMSNorm + RoPE of q and k, SwiGLU's
// silu(gate) * up, and causal attention over a packed batch.
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
// torch is the order of the fp32 sum of squares (a rare last-bit flip of a bf16 value). SwiGLU:
// silu in fp32, rounded to bf16, times up (torch's two roundings); e^x is ours, within ~2 ulp of
// torch's (Sleef's), so a bf16 silu value may differ in its last bit, rarely.
// Attention: q k^T with bf16 dot products summed in fp32 (vdpbf16ps), softmax in fp32, the
// probabilities rounded to bf16 for p v (summed in fp32) as SDPA's CPU kernel does, the output
// rounded to bf16 once: as close to the fp32 computation as SDPA (tests/test_decoder_ops.py).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <immintrin.h>

#include "simd.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <tuple>
#include <limits>
#include <vector>

namespace {

using namespace q3embed_simd;

constexpr int64_t kLanes = 16;  // fp32 lanes of a vector register
// Below this many elements an operation runs on the calling thread: waking the OpenMP team costs
// more than the work (a 13-token RMSNorm is 13k elements).
constexpr int64_t kParallelElements = 64 * 1024;
// q/k norm + RoPE does several times RMSNorm's work per element: a 13-token query's q and k (40k
// elements) took 22-26 us on one thread, 13-16 on two (2-core Zen 4).
constexpr int64_t kParallelNormRopeElements = 8 * 1024;
// Queries of one sequence per attention work item (see causal_attention).
constexpr int64_t kQueryChunk = 256;

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

// x [rows, dim] bf16 with contiguous rows (at any stride), weight [dim], dim a multiple of 16.
void check_norm_inputs(const at::Tensor& x, const at::Tensor& weight, const char* name) {
  check_bf16(x, name);
  check_bf16(weight, "weight");
  TORCH_CHECK(x.dim() == 2 && x.stride(1) == 1, name, " must be [rows, dim] with contiguous rows");
  const int64_t dim = x.size(1);
  TORCH_CHECK(dim % kLanes == 0 && weight.dim() == 1 && weight.size(0) == dim && weight.is_contiguous(),
              "weight must be [", dim, "] and dim a multiple of 16");
}

// One row of RMSNorm: xr [dim] -> out [dim].
Q3_INLINE void norm_row(const at::BFloat16* xr, const at::BFloat16* weight, int64_t dim, float eps, at::BFloat16* out) {
  const __m512 r = _mm512_set1_ps(inverse_rms(xr, dim, eps));
  for (int64_t d = 0; d < dim; d += kLanes) store_bf16(out + d, normed(xr + d, weight + d, r));
}

// x [rows, dim] (rows at any stride, each row contiguous), weight [dim] -> [rows, dim].
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  check_norm_inputs(x, weight, "x");
  const int64_t rows = x.size(0), dim = x.size(1);
  at::Tensor out = at::empty({rows, dim}, x.options());
  const at::BFloat16* xp = x.data_ptr<at::BFloat16>();
  const at::BFloat16* wp = weight.data_ptr<at::BFloat16>();
  at::BFloat16* op = out.data_ptr<at::BFloat16>();
  const int64_t stride = x.stride(0);
  at::parallel_for(0, rows, std::max<int64_t>(1, kParallelElements / dim), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row)
      norm_row(xp + row * stride, wp, dim, static_cast<float>(eps), op + row * dim);
  });
  return out;
}

// The residual add and the next RMSNorm in one pass: x and added [rows, dim] (rows at any stride,
// each row contiguous) -> (sum = x + added in bf16, rms_norm(sum, weight)), each [rows, dim]. The
// sum is rounded to bf16 (torch's bf16 add) and normed from those rounded values, so both equal
// the two separate calls; a layer makes one call where it made two (~6 us each at 13 tokens).
std::tuple<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& added, const at::Tensor& weight,
                                                double eps) {
  check_norm_inputs(x, weight, "x");
  check_norm_inputs(added, weight, "added");
  TORCH_CHECK(x.sizes() == added.sizes(), "x and added must be alike, got ", x.sizes(), " and ", added.sizes());
  const int64_t rows = x.size(0), dim = x.size(1);
  at::Tensor sum = at::empty({rows, dim}, x.options());
  at::Tensor out = at::empty({rows, dim}, x.options());
  const at::BFloat16 *xp = x.data_ptr<at::BFloat16>(), *ap = added.data_ptr<at::BFloat16>();
  const at::BFloat16* wp = weight.data_ptr<at::BFloat16>();
  at::BFloat16 *sp = sum.data_ptr<at::BFloat16>(), *op = out.data_ptr<at::BFloat16>();
  const int64_t x_stride = x.stride(0), added_stride = added.stride(0);
  at::parallel_for(0, rows, std::max<int64_t>(1, kParallelElements / dim), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      at::BFloat16* sr = sp + row * dim;
      for (int64_t d = 0; d < dim; d += kLanes)
        store_bf16(sr + d, _mm512_add_ps(load_bf16(xp + row * x_stride + d), load_bf16(ap + row * added_stride + d)));
      norm_row(sr, wp, dim, static_cast<float>(eps), op + row * dim);  // from the rounded sum, still in L1
    }
  });
  return {sum, out};
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
  at::parallel_for(0, tokens * heads, std::max<int64_t>(1, kParallelNormRopeElements / dim), [&](int64_t begin, int64_t end) {
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

// ----------------------------------------------------------------------------------------- SwiGLU

// silu(gate) * up, gate and up [rows, width] (rows at any stride, each contiguous) -> [rows, width]:
// silu in fp32 as torch computes it, x / (1 + e^-x), rounded to bf16, then the bf16 product.
at::Tensor silu_mul(const at::Tensor& gate, const at::Tensor& up) {
  check_bf16(gate, "gate");
  check_bf16(up, "up");
  TORCH_CHECK(gate.dim() == 2 && gate.sizes() == up.sizes() && gate.stride(1) == 1 && up.stride(1) == 1,
              "gate and up must be [rows, width] alike, with contiguous rows");
  const int64_t rows = gate.size(0), width = gate.size(1);
  TORCH_CHECK(width % kLanes == 0, "width must be a multiple of 16");
  at::Tensor out = at::empty({rows, width}, gate.options());
  const at::BFloat16 *gp = gate.data_ptr<at::BFloat16>(), *up_ = up.data_ptr<at::BFloat16>();
  at::BFloat16* op = out.data_ptr<at::BFloat16>();
  at::parallel_for(0, rows, std::max<int64_t>(1, kParallelElements / width), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row)
      for (int64_t i = 0; i < width; i += kLanes) {
        store_bf16(op + row * width + i,
                   silu_times(load_bf16(gp + row * gate.stride(0) + i), load_bf16(up_ + row * up.stride(0) + i)));
      }
  });
  return out;
}

// -------------------------------------------------------------------------------------- attention

// Per thread, one (sequence, kv head)'s keys and values in the layouts the loops read.
struct KeyValueScratch {
  // [L16/16, d/2, 16, 2]: per block of 16 keys, per dimension pair, the 16 keys' two values (the
  // vdpbf16ps operand order); a block is one contiguous 4 KB run at d = 128, read front to back
  std::vector<at::BFloat16> keys;
  std::vector<at::BFloat16> values;  // [L16/2, d, 2]: per key pair, each dimension's two values
  std::vector<float> scores;         // [kQueryRows, L16]: a block's scores
  std::vector<at::BFloat16> probabilities;  // [kQueryRows, L16]: their softmax numerators in bf16, for p v
};

// Queries attended together (consecutive tokens of one head): each key and value line loaded is
// used this many times, so a long sequence's keys are read from cache a quarter as often (at 2,048
// tokens one query at a time was 3x slower than SDPA, its keys and values past L2).
constexpr int kQueryRows = 4;

// Rows of keys and values of one kv head: `count` tokens at a stride.
struct KeyValueRows {
  const at::BFloat16* k;
  const at::BFloat16* v;
  int64_t count, k_stride, v_stride;
};

// One key or value of a staged sequence: which segment's row, or none past the end (zeros).
struct KeyRow {
  const at::BFloat16* k = nullptr;
  const at::BFloat16* v = nullptr;
};

// m [16 rows of 16 int32] transposed in place: four rounds, the one for bit s exchanging the
// elements whose row and column differ in that bit between rows i and i + s (64 two-source permutes).
Q3_INLINE void transpose_16x16(__m512i m[kLanes]) {
  for (int s = 8; s >= 1; s /= 2) {
    alignas(64) int32_t keep[kLanes], take[kLanes];  // new row i's and row i + s's sources
    for (int c = 0; c < kLanes; ++c) {
      keep[c] = (c & s) == 0 ? c : kLanes + c - s;
      take[c] = (c & s) == 0 ? c + s : kLanes + c;
    }
    const __m512i to_low = _mm512_load_si512(keep), to_high = _mm512_load_si512(take);
    for (int i = 0; i < kLanes; ++i) {
      if ((i & s) != 0) continue;
      const __m512i low = m[i], high = m[i + s];
      m[i] = _mm512_permutex2var_epi32(low, to_low, high);
      m[i + s] = _mm512_permutex2var_epi32(low, to_high, high);
    }
  }
}

// 16 keys [16 rows of d] -> one block [d/2, 16, 2]: per 32 dimensions (16 pairs of 4 bytes) the
// 16 x 16 pairs transposed, the rows past the sequence's end zero.
void stage_key_block(const KeyRow* rows, int64_t dim, at::BFloat16* block) {
  for (int64_t d = 0; d < dim; d += 2 * kLanes) {
    __m512i m[kLanes];
    for (int j = 0; j < kLanes; ++j)
      m[j] = rows[j].k == nullptr ? _mm512_setzero_si512() : _mm512_loadu_si512(rows[j].k + d);
    transpose_16x16(m);
    for (int t = 0; t < kLanes; ++t) _mm512_storeu_si512(block + (d / 2 + t) * 2 * kLanes, m[t]);
  }
}

// Two keys' values v0, v1 [d] (v1 null: zeros) -> [d, 2] interleaved, 32 dimensions at a time.
void stage_value_pair(const at::BFloat16* v0, const at::BFloat16* v1, int64_t dim, at::BFloat16* out) {
  static const __m512i low = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                              39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
  static const __m512i high = _mm512_add_epi16(low, _mm512_set1_epi16(16));
  for (int64_t d = 0; d < dim; d += 2 * kLanes) {
    const __m512i a = _mm512_loadu_si512(v0 + d);
    const __m512i b = v1 == nullptr ? _mm512_setzero_si512() : _mm512_loadu_si512(v1 + d);
    _mm512_storeu_si512(out + 2 * d, _mm512_permutex2var_epi16(a, low, b));
    _mm512_storeu_si512(out + 2 * d + 2 * kLanes, _mm512_permutex2var_epi16(a, high, b));
  }
}

// The keys of `segments` laid end to end (a shared prefix's, then the sequence's own) -> scratch.keys
// [L16/16, d/2, 16, 2] and values [L16/2, d, 2], both in vdpbf16ps operand order, the padding zero.
void stage_keys_values(std::initializer_list<KeyValueRows> segments, int64_t dim, KeyValueScratch& s) {
  int64_t length = 0;
  for (const KeyValueRows& rows : segments) length += rows.count;
  const int64_t padded = (length + kLanes - 1) / kLanes * kLanes;
  s.keys.resize(dim * padded);
  s.values.resize(padded * dim);
  s.scores.resize(kQueryRows * padded);
  s.probabilities.resize(kQueryRows * padded);
  thread_local std::vector<KeyRow> rows;
  rows.assign(padded, KeyRow{});
  int64_t j = 0;
  for (const KeyValueRows& segment : segments)
    for (int64_t t = 0; t < segment.count; ++t, ++j)
      rows[j] = {segment.k + t * segment.k_stride, segment.v + t * segment.v_stride};
  for (int64_t block = 0; block < padded; block += kLanes)
    stage_key_block(rows.data() + block, dim, s.keys.data() + block * dim);
  for (int64_t pair = 0; pair < (length + 1) / 2; ++pair)  // p v reads no pair past the last key's
    stage_value_pair(rows[2 * pair].v, rows[2 * pair + 1].v, dim, s.values.data() + pair * 2 * dim);
}

Q3_INLINE __mmask16 first_lanes(int64_t count) {  // the lowest `count` lanes (0..16)
  return count <= 0 ? 0 : count >= kLanes ? 0xFFFF : static_cast<__mmask16>((1u << count) - 1);
}

// Scores of R query rows against the staged keys j .. j + 16W - 1 (W blocks of 16): into scores
// [R, padded], scaled, -inf past row r's last key keys0 + r - 1. Each broadcast of a query pair
// feeds W dot products: at W = 1 the broadcasts (one load and one vector op each) were as many as
// the dot products and the loop ran at half the rate of p v's. One chain per row and block; at
// W = 1 two (even and odd pairs), so that a dot product's latency, not its rate, does not bind.
template <int R, int W>
Q3_INLINE void score_blocks(const at::BFloat16* const* q, int64_t j, int64_t keys0, int64_t padded, int64_t dim,
                            float scale, KeyValueScratch& s) {
  constexpr int kChains = W == 1 ? 2 : 1;
  __m512 acc[R][W][kChains];
  for (int r = 0; r < R; ++r)
    for (int w = 0; w < W; ++w)
      for (int c = 0; c < kChains; ++c) acc[r][w][c] = _mm512_setzero_ps();
  const at::BFloat16* blocks = s.keys.data() + j * dim;  // keys j .. j + 16W - 1: W x [d/2, 16, 2]
  for (int64_t p = 0; p < dim / 2; p += kChains) {
    for (int c = 0; c < kChains; ++c) {
      __m512bh k[W];
      for (int w = 0; w < W; ++w) k[w] = (__m512bh)_mm512_loadu_si512(blocks + (w * dim / 2 + p + c) * 2 * kLanes);
      for (int r = 0; r < R; ++r) {
        const auto* pairs = reinterpret_cast<const int32_t*>(q[r]);  // q's dimension pairs, 2 bf16 each
        const __m512bh qr = (__m512bh)_mm512_set1_epi32(pairs[p + c]);
        for (int w = 0; w < W; ++w) acc[r][w][c] = _mm512_dpbf16_ps(acc[r][w][c], k[w], qr);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int w = 0; w < W; ++w) {
      const __m512 sum = kChains == 2 ? _mm512_add_ps(acc[r][w][0], acc[r][w][kChains - 1]) : acc[r][w][0];
      const int64_t first = j + w * kLanes;
      _mm512_storeu_ps(s.scores.data() + r * padded + first,
                       _mm512_mask_blend_ps(first_lanes(keys0 + r - first), _mm512_set1_ps(-INFINITY),
                                            _mm512_mul_ps(sum, _mm512_set1_ps(scale))));
    }
}

// Scores of R query rows against the staged keys, row r seeing keys 0 .. keys0 + r - 1, four
// blocks of 16 keys at a time -> scores [R, padded] (see score_blocks).
template <int R>
Q3_INLINE void block_scores(const at::BFloat16* const* q, int64_t keys0, int64_t padded, int64_t dim, float scale,
                            KeyValueScratch& s) {
  const int64_t keys = keys0 + R - 1;  // the last row's
  for (int64_t j = 0; j < keys; j += 4 * kLanes) {
    switch (std::min<int64_t>(4, (keys - j + kLanes - 1) / kLanes)) {
      case 4: score_blocks<R, 4>(q, j, keys0, padded, dim, scale, s); break;
      case 3: score_blocks<R, 3>(q, j, keys0, padded, dim, scale, s); break;
      case 2: score_blocks<R, 2>(q, j, keys0, padded, dim, scale, s); break;
      default: score_blocks<R, 1>(q, j, keys0, padded, dim, scale, s); break;
    }
  }
}

// Softmax of one row of scores over `keys` (rounded up to 16: the padding is -inf, so 0): its
// numerators e^(s - max) rounded to bf16 into p (what p v multiplies by, as SDPA's CPU kernel
// does); -> 1 / the fp32 total of the unrounded numerators.
Q3_INLINE float softmax_numerators(const float* scores, int64_t keys, at::BFloat16* p) {
  __m512 top = _mm512_set1_ps(-INFINITY);
  for (int64_t j = 0; j < keys; j += kLanes) top = _mm512_max_ps(top, _mm512_loadu_ps(scores + j));
  const __m512 maximum = _mm512_set1_ps(_mm512_reduce_max_ps(top));
  __m512 total = _mm512_setzero_ps();
  for (int64_t j = 0; j < keys; j += kLanes) {
    const __m512 e = exp_ps(_mm512_sub_ps(_mm512_loadu_ps(scores + j), maximum));
    store_bf16(p + j, e);
    total = _mm512_add_ps(total, e);
  }
  return 1.0f / _mm512_reduce_add_ps(total);
}

// out_r [16W] = sum over keys j of p_r[j] values[j] (this block's 16W dimensions), over the row's
// total, for R rows at once (R x W accumulators; each line of two keys' values loaded once): one
// vdpbf16ps per key pair, p in bf16 as SDPA's CPU kernel has it (fp32 FMAs ran at half the rate).
template <int R, int W>
Q3_INLINE void weighted_values(const at::BFloat16* p, int64_t padded, int64_t keys, const at::BFloat16* values,
                               int64_t dim, const float* inverse_total, at::BFloat16* const* out) {
  __m512 acc[R][W];
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < W; ++i) acc[r][i] = _mm512_setzero_ps();
  for (int64_t pair = 0; pair < (keys + 1) / 2; ++pair) {
    __m512bh line[W];
    for (int i = 0; i < W; ++i) line[i] = (__m512bh)_mm512_loadu_si512(values + (pair * dim + i * kLanes) * 2);
    for (int r = 0; r < R; ++r) {
      int32_t two;  // p_r of keys 2 pair, 2 pair + 1 (0 past row r's last key)
      std::memcpy(&two, p + r * padded + 2 * pair, sizeof(two));
      const __m512bh pr = (__m512bh)_mm512_set1_epi32(two);
      for (int i = 0; i < W; ++i) acc[r][i] = _mm512_dpbf16_ps(acc[r][i], line[i], pr);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < W; ++i) store_bf16(out[r] + i * kLanes, _mm512_mul_ps(acc[r][i], _mm512_set1_ps(inverse_total[r])));
}

// R query rows q[r] [d] of one head, row r attending keys 0 .. keys0 + r - 1 of the staged
// sequence -> out[r] [d] (bf16).
template <int R>
void attend_rows(const at::BFloat16* const* q, int64_t keys0, int64_t padded, int64_t dim, float scale,
                 KeyValueScratch& s, at::BFloat16* const* out) {
  block_scores<R>(q, keys0, padded, dim, scale, s);
  float inverse_total[R];
  const int64_t keys = keys0 + R - 1;
  for (int r = 0; r < R; ++r)
    inverse_total[r] = softmax_numerators(s.scores.data() + r * padded, keys, s.probabilities.data() + r * padded);
  for (int64_t d0 = 0; d0 < dim; d0 += 4 * kLanes) {  // 64 dimensions at a time: R x 4 accumulators
    at::BFloat16* out_d[R];
    for (int r = 0; r < R; ++r) out_d[r] = out[r] + d0;
    const at::BFloat16* values = s.values.data() + d0 * 2;
    const at::BFloat16* p = s.probabilities.data();
    if (dim - d0 >= 4 * kLanes) weighted_values<R, 4>(p, padded, keys, values, dim, inverse_total, out_d);
    else weighted_values<R, 2>(p, padded, keys, values, dim, inverse_total, out_d);  // d % 32 == 0
  }
}

// Queries first .. last - 1 of one head of the staged sequence, kQueryRows at a time; query i
// (a row of q at q_row(i)) sees keys 0 .. prefix + i (the prefix's keys come first).
template <typename QRow, typename OutRow>
void attend_queries(int64_t first, int64_t last, int64_t prefix, QRow q_row, OutRow out_row, int64_t padded,
                    int64_t dim, float scale, KeyValueScratch& s) {
  int64_t i = first;
  for (; i + kQueryRows <= last; i += kQueryRows) {
    const at::BFloat16* q[kQueryRows];
    at::BFloat16* out[kQueryRows];
    for (int r = 0; r < kQueryRows; ++r) q[r] = q_row(i + r), out[r] = out_row(i + r);
    attend_rows<kQueryRows>(q, prefix + i + 1, padded, dim, scale, s, out);
  }
  const int64_t rest = last - i;  // 0 .. kQueryRows - 1 queries, together
  if (rest == 0) return;
  const at::BFloat16* q[kQueryRows];
  at::BFloat16* out[kQueryRows];
  for (int r = 0; r < rest; ++r) q[r] = q_row(i + r), out[r] = out_row(i + r);
  static_assert(kQueryRows == 4, "the rest takes 1 to 3 rows");
  if (rest == 3) attend_rows<3>(q, prefix + i + 1, padded, dim, scale, s, out);
  else if (rest == 2) attend_rows<2>(q, prefix + i + 1, padded, dim, scale, s, out);
  else attend_rows<1>(q, prefix + i + 1, padded, dim, scale, s, out);
}

// Causal attention over a packed batch: q [Tq, heads, d], k and v [T, kv_heads, d] (tokens at any
// stride, heads contiguous), seq_lens summing to T. all rows: Tq = T, token i of a sequence sees
// its keys 0 .. i; last_only: Tq = B, row b is sequence b's last token, which sees all its keys.
// With prefix_k / prefix_v [P, kv_heads, d], every sequence continues that prefix: its token i
// also sees the P prefix keys (the reranker's shared system prompt, instruction and query).
// -> [Tq, heads, d]. Each work item stages its keys once for the `heads / kv_heads` query heads
// that share them.
at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::IntArrayRef seq_lens,
                            bool last_only, const std::optional<at::Tensor>& prefix_k,
                            const std::optional<at::Tensor>& prefix_v) {
  TORCH_CHECK(prefix_k.has_value() == prefix_v.has_value(), "prefix_k and prefix_v come together");
  const at::Tensor none = at::empty({0, k.size(1), k.size(2)}, k.options());
  const at::Tensor& pk = prefix_k.has_value() ? *prefix_k : none;
  const at::Tensor& pv = prefix_v.has_value() ? *prefix_v : none;
  for (const at::Tensor* t : {&q, &k, &v, &pk, &pv}) {
    check_bf16(*t, "q, k, v and the prefix");
    TORCH_CHECK(t->dim() == 3 && t->stride(2) == 1 && (t->size(0) == 0 || t->stride(1) == t->size(2)),
                "q, k, v and the prefix must be [T, heads, d], heads contiguous");
  }
  TORCH_CHECK(pk.sizes() == pv.sizes() && pk.size(1) == k.size(1) && pk.size(2) == k.size(2),
              "the prefix's keys and values must be [P, kv_heads, d] like k and v");
  const int64_t prefix = pk.size(0);
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
  const at::BFloat16 *pkp = pk.data_ptr<at::BFloat16>(), *pvp = pv.data_ptr<at::BFloat16>();
  at::BFloat16* op = out.data_ptr<at::BFloat16>();
  const int64_t groups = heads / kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  at::parallel_for(0, static_cast<int64_t>(items.size()) * kv_heads, 1, [&](int64_t begin, int64_t end) {
    thread_local KeyValueScratch scratch;
    for (int64_t index = begin; index < end; ++index) {
      const Item& item = items[index / kv_heads];
      const int64_t g = index % kv_heads, start = starts[item.sequence];
      const int64_t padded = (prefix + item.last + kLanes - 1) / kLanes * kLanes;
      stage_keys_values({{pkp + g * dim, pvp + g * dim, prefix, pk.stride(0), pv.stride(0)},
                         {kp + start * k.stride(0) + g * dim, vp + start * v.stride(0) + g * dim, item.last,
                          k.stride(0), v.stride(0)}}, dim, scratch);
      for (int64_t h = g * groups; h < (g + 1) * groups; ++h) {
        auto row = [&](int64_t i) { return last_only ? item.sequence : start + i; };  // query i's row of q and out
        attend_queries(item.first, item.last, prefix, [&](int64_t i) { return qp + row(i) * q.stride(0) + h * dim; },
                       [&](int64_t i) { return op + (row(i) * heads + h) * dim; }, padded, dim, scale, scratch);
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(q3embed_cpu, lib) {
  lib.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  lib.def("add_rms_norm(Tensor x, Tensor added, Tensor weight, float eps) -> (Tensor, Tensor)");
  lib.def("norm_rope(Tensor x, Tensor weight, Tensor cos, Tensor sin, float eps) -> Tensor");
  lib.def("silu_mul(Tensor gate, Tensor up) -> Tensor");
  lib.def("causal_attention(Tensor q, Tensor k, Tensor v, int[] seq_lens, bool last_only, "
          "Tensor? prefix_k=None, Tensor? prefix_v=None) -> Tensor");
}

TORCH_LIBRARY_IMPL(q3embed_cpu, CPU, lib) {
  lib.impl("rms_norm", &rms_norm);
  lib.impl("add_rms_norm", &add_rms_norm);
  lib.impl("norm_rope", &norm_rope);
  lib.impl("silu_mul", &silu_mul);
  lib.impl("causal_attention", &causal_attention);
}
