// y = x W^T on an AVX512-BF16 CPU for weights held as GGUF's Q8_0 blocks: int8 values q and one
// scale d per 32 inputs of an output, W[n, k] = d[n, k/32] x q[n, k]; x and y bf16.
//
// Why a kernel of our own: no library on PyPI multiplies by Q8_0 blocks. torch and oneDNN need
// them expanded to bf16 first, which doubles the memory the model holds and the bytes a query
// streams. Here each tile of 32 outputs is expanded as it is read, into a bf16 copy that stays in
// L2 (64-192 KB), and multiplied with vdpbf16ps: memory sees the int8 bytes once.
//
// The expansion rounds each d x q (fp32) to bf16 with round-to-nearest-even, as loading the file
// into bf16 does (gguf.quants.dequantize, then .to(torch.bfloat16)): the products are those of the
// dequantized model, summed in fp32 in another order.
//
// Packed layout (model/block_linear.py packs it), N outputs (N % 32 == 0), K inputs (K % 32 == 0),
// a tile being 32 consecutive outputs:
//   values  int8 [N/32, K/2, 32, 2]: per input pair, the tile's 32 outputs x 2 inputs (one 64-byte
//           line, the operand order of vdpbf16ps), so a tile is one contiguous stream
//   scales  fp32 [N/32, K/32, 32]: per tile and block of 32 inputs, each output's d
// Threads split the tiles (at::parallel_for: torch's own OpenMP team, no second runtime).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t kTile = 32;   // outputs per tile: two 16-lane fp32 accumulators per row
constexpr int64_t kBlock = 32;  // inputs per Q8_0 block
constexpr int64_t kPairsPerBlock = kBlock / 2;
constexpr int kRowsPerPass = 12;  // 2 x 12 accumulators + 2 weight vectors fit the 32 registers
// Prefetch the tile's values this many 64-byte lines (8 KB) ahead: the expansion then overlaps the
// memory reads (without it a one-row product read 20 GB/s, with it 48; 2-core Zen 4, 2 KB: 36).
constexpr int64_t kPrefetchLines = 128;

// The 4 scale vectors of one block for the 4 quarters of a line: quarter i holds outputs
// 8i .. 8i+7, each for 2 inputs, so its scales are d[8i], d[8i], d[8i+1], d[8i+1], ...
inline void line_scales(const float* d, __m512 out[4]) {
  const __m512 low = _mm512_loadu_ps(d), high = _mm512_loadu_ps(d + 16);
  const __m512i pairs = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
  for (int i = 0; i < 4; ++i)
    out[i] = _mm512_permutex2var_ps(low, _mm512_add_epi32(pairs, _mm512_set1_epi32(8 * i)), high);
}

// One line (an input pair of the tile, 64 int8) -> its two bf16 weight vectors (outputs 0-15, 16-31).
inline void expand_line(const int8_t* line, const __m512 scales[4], __m512i& w0, __m512i& w1) {
  __m512 f[4];
  for (int i = 0; i < 4; ++i) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(line + 16 * i));
    f[i] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes)), scales[i]);
  }
  w0 = (__m512i)_mm512_cvtne2ps_pbh(f[1], f[0]);
  w1 = (__m512i)_mm512_cvtne2ps_pbh(f[3], f[2]);
}

inline void store_bf16(at::BFloat16* out, __m512 low, __m512 high) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), (__m256i)_mm512_cvtneps_pbh(low));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16), (__m256i)_mm512_cvtneps_pbh(high));
}

// ROWS rows of x [ROWS, k] times one tile. EXPAND: read the int8 values (and d), expand each line,
// and keep it in `wide` [k/2, 32, 2] bf16 for the next passes; otherwise read `wide`.
template <int ROWS, bool EXPAND>
void tile_rows(const uint16_t* x, int64_t k, const int8_t* values, const float* d, uint16_t* wide,
               at::BFloat16* out, int64_t out_stride, bool keep) {
  __m512 acc[ROWS][2];
  for (int r = 0; r < ROWS; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  __m512 scales[4];
  for (int64_t pair = 0; pair < k / 2; ++pair) {
    __m512i w0, w1;
    if constexpr (EXPAND) {
      if (pair % kPairsPerBlock == 0) line_scales(d + (pair / kPairsPerBlock) * kTile, scales);
      _mm_prefetch(reinterpret_cast<const char*>(values + (pair + kPrefetchLines) * 64), _MM_HINT_T0);
      expand_line(values + pair * 64, scales, w0, w1);
      if (keep) {
        _mm512_storeu_si512(wide + pair * 64, w0);
        _mm512_storeu_si512(wide + pair * 64 + 32, w1);
      }
    } else {
      w0 = _mm512_loadu_si512(wide + pair * 64);
      w1 = _mm512_loadu_si512(wide + pair * 64 + 32);
    }
    for (int r = 0; r < ROWS; ++r) {
      int32_t two;  // inputs 2 pair, 2 pair + 1 of row r, broadcast to every lane
      std::memcpy(&two, x + r * k + 2 * pair, sizeof(two));
      const __m512bh xr = (__m512bh)_mm512_set1_epi32(two);
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], (__m512bh)w0, xr);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], (__m512bh)w1, xr);
    }
  }
  for (int r = 0; r < ROWS; ++r) store_bf16(out + r * out_stride, acc[r][0], acc[r][1]);
}

template <bool EXPAND>
void tile_pass(int64_t rows, const uint16_t* x, int64_t k, const int8_t* values, const float* d,
               uint16_t* wide, at::BFloat16* out, int64_t n, bool keep) {
  switch (rows) {
#define Q3_ROWS(R) case R: tile_rows<R, EXPAND>(x, k, values, d, wide, out, n, keep); break;
    Q3_ROWS(1) Q3_ROWS(2) Q3_ROWS(3) Q3_ROWS(4) Q3_ROWS(5) Q3_ROWS(6)
    Q3_ROWS(7) Q3_ROWS(8) Q3_ROWS(9) Q3_ROWS(10) Q3_ROWS(11) Q3_ROWS(12)
#undef Q3_ROWS
    default: TORCH_CHECK(false, "a pass has 1 to ", kRowsPerPass, " rows");
  }
}

// All m rows against one tile, in passes as even as they go (13 rows: 7 and 6, not 12 and 1); the
// first pass expands the tile, the others read its bf16 copy.
void tile_all_rows(const uint16_t* x, int64_t m, int64_t k, const int8_t* values, const float* d,
                   uint16_t* wide, at::BFloat16* out, int64_t n) {
  const int64_t passes = (m + kRowsPerPass - 1) / kRowsPerPass;
  int64_t row = 0;
  for (int64_t p = 0; p < passes; ++p) {
    const int64_t rows = (m - row) / (passes - p);
    if (p == 0) tile_pass<true>(rows, x + row * k, k, values, d, wide, out + row * n, n, passes > 1);
    else tile_pass<false>(rows, x + row * k, k, values, d, wide, out + row * n, n, false);
    row += rows;
  }
}

at::Tensor q8_linear(const at::Tensor& x_in, const at::Tensor& values, const at::Tensor& scales) {
  TORCH_CHECK(values.scalar_type() == at::kChar && values.dim() == 4 && values.size(2) == kTile
              && values.size(3) == 2 && values.is_contiguous(), "values must be int8 [N/32, K/2, 32, 2]");
  const int64_t tiles = values.size(0), k = values.size(1) * 2, n = tiles * kTile;
  TORCH_CHECK(k % kBlock == 0, "K must be a multiple of 32");
  TORCH_CHECK(scales.scalar_type() == at::kFloat && scales.is_contiguous()
              && scales.sizes() == at::IntArrayRef({tiles, k / kBlock, kTile}), "scales must be fp32 [N/32, K/32, 32]");
  TORCH_CHECK(x_in.device().is_cpu() && x_in.scalar_type() == at::kBFloat16 && x_in.dim() == 2
              && x_in.size(1) == k, "x must be bf16 [rows, ", k, "] on the CPU");
  const at::Tensor x = x_in.contiguous();
  const int64_t m = x.size(0);
  at::Tensor out = at::empty({m, n}, x.options());
  if (m == 0) return out;
  const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
  const int8_t* qp = values.data_ptr<int8_t>();
  const float* dp = scales.data_ptr<float>();
  at::BFloat16* op = out.data_ptr<at::BFloat16>();
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    // One tile in bf16, kept in L2 between passes; per thread, reused from call to call (a fresh
    // 64-192 KB allocation would be a fresh mapping, page faults included, per product).
    thread_local std::vector<uint16_t> wide;
    if (m > kRowsPerPass && wide.size() < static_cast<size_t>(k * kTile)) wide.resize(k * kTile);
    for (int64_t t = begin; t < end; ++t)
      tile_all_rows(xp, m, k, qp + t * k * kTile, dp + t * (k / kBlock) * kTile, wide.data(), op + t * kTile, n);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(q3embed_cpu, lib) {
  lib.def("q8_linear(Tensor x, Tensor values, Tensor scales) -> Tensor");
}

TORCH_LIBRARY_IMPL(q3embed_cpu, CPU, lib) {
  lib.impl("q8_linear", &q8_linear);
}
