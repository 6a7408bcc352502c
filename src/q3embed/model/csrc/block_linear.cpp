// y = x W^T on an AVX512-BF16 CPU, x and y bf16, for weights held in one of three packed forms:
//   - GGUF's Q8_0 blocks: int8 values q and one scale d per 32 inputs of an output,
//     W[n, k] = d[n, k/32] x q[n, k] (q3embed_cpu::q8_linear);
//   - the same blocks for int8 inputs (q3embed_cpu::q8_linear_int8, quantize="int8"): x is
//     quantized per row and 32 inputs as llama.cpp quantizes activations (Q8_0), and the blocks are
//     multiplied in int8 with AVX512-VNNI (see "Int8 inputs" below);
//   - bf16 (q3embed_cpu::bf16_linear).
//
// Why kernels of our own. Q8_0: no library on PyPI multiplies by Q8_0 blocks; torch and oneDNN
// need them expanded to bf16 first, which doubles the memory the model holds and the bytes a query
// streams. Here each tile of 32 outputs is expanded as it is read, into a bf16 copy that stays in
// L2 (64-192 KB), and multiplied there: memory sees the int8 bytes once. bf16: for the few rows of
// an interactive query oneDNN's kernel streams the weights below what memory allows; this one,
// prefetching ahead of its reads, runs 1-27-row products 1.1-1.5x faster on a 2-core Zen 4 and
// large ones within 0-15% of oneDNN (bench/linear_kernels.py, docs/benchmarks.md).
//
// The Q8_0 expansion rounds each d x q (fp32) to bf16 with round-to-nearest-even, as loading the
// file into bf16 does (gguf.quants.dequantize, then .to(torch.bfloat16)): the products are those of
// the dequantized model. Both sum in fp32 (vdpbf16ps), in another order than oneDNN.
//
// Packed layouts (model/block_linear.py packs them), N outputs (N % 32 == 0), K inputs
// (K % 32 == 0), a tile being 32 consecutive outputs:
//   q8 values  int8 [N/32, K/2, 32, 2]: per input pair, the tile's 32 outputs x 2 inputs (one
//              64-byte line, the operand order of vdpbf16ps), so a tile is one contiguous stream
//   q8 scales  fp32 [N/32, K/32, 32]: per tile and block of 32 inputs, each output's d
//   bf16       bf16 [N/32, K/2, 32, 2]: the same order (two lines per input pair)
//   int8-input values  uint8 [N/32, K/4, 32, 4]: q + 128 per input quad, the tile's 32 outputs x 4
//              inputs (two lines, vpdpbusd's unsigned operand); scales as for q8
// Threads split the tiles (at::parallel_for: torch's own OpenMP team, no second runtime).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <immintrin.h>

#include "simd.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

using namespace q3embed_simd;

constexpr int64_t kTile = 32;   // outputs per tile: two 16-lane fp32 accumulators per row
constexpr int64_t kBlock = 32;  // inputs per Q8_0 block
constexpr int64_t kPairsPerBlock = kBlock / 2;
enum class Weights { kQ8, kBf16, kQ8Int8Inputs };

// Rows a tile is multiplied with per pass: 2 accumulators a row, 2 weight vectors and 1 broadcast
// input in the 32 vector registers, so 14 for bf16 (13 rows, the length of a short query, in one
// pass: at 12 they took two, 7 and 6, and ran at 33 GB/s against 40 at 12 rows). Q8_0's first pass
// also holds the block's 4 scale vectors and the 4 fp32 quarters of the line it expands, so 12:
// beyond that GCC spills accumulators in the loop.
// Int8 inputs: 2 int32 accumulators a row for the block in progress (the fp32 sums are spilled
// between blocks, once per 16 products).
template <Weights W>
constexpr int kRowsPerPass = W == Weights::kBf16 ? 14 : 12;
// Prefetch the weights this many bytes ahead of the reads: the expansion and the products then
// overlap the memory reads (a one-row Q8_0 product read 20 GB/s without it, 48 with 8 KB; 2-core
// Zen 4). 8 KB of int8 for Q8_0, 8 KB (two lines per pair) for bf16.
constexpr int64_t kPrefetchBytes = 8192;
// bf16: rows are taken this many bytes of x at a time (all tiles, then the next rows), so that the
// rows a tile is multiplied with come from L2, not L3, in large batches. Not Q8_0: each chunk would
// expand every tile again (a 0.6B batch 333 against 511 tokens/s unchunked).
constexpr int64_t kRowChunkBytes = 256 * 1024;
// Int8 inputs: blocks of 32 inputs quantized per thread at least (quantize_rows).
constexpr int64_t kQuantizeGrainBlocks = 128;

// The 4 scale vectors of one block for the 4 quarters of a line: quarter i holds outputs
// 8i .. 8i+7, each for 2 inputs, so its scales are d[8i], d[8i], d[8i+1], d[8i+1], ...
Q3_INLINE void line_scales(const float* d, __m512 out[4]) {
  const __m512 low = _mm512_loadu_ps(d), high = _mm512_loadu_ps(d + 16);
  const __m512i pairs = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
  for (int i = 0; i < 4; ++i)
    out[i] = _mm512_permutex2var_ps(low, _mm512_add_epi32(pairs, _mm512_set1_epi32(8 * i)), high);
}

// One Q8_0 line (an input pair of the tile, 64 int8) -> its two bf16 weight vectors (outputs 0-15, 16-31).
Q3_INLINE void expand_line(const int8_t* line, const __m512 scales[4], __m512i& w0, __m512i& w1) {
  __m512 f[4];
  for (int i = 0; i < 4; ++i) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(line + 16 * i));
    f[i] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes)), scales[i]);
  }
  w0 = (__m512i)_mm512_cvtne2ps_pbh(f[1], f[0]);
  w1 = (__m512i)_mm512_cvtne2ps_pbh(f[3], f[2]);
}

// Where the weights 8 KB ahead are prefetched to: into L2 for a bf16 product of 8-14 rows (one
// pass, each line read once), whose loop computes long enough per line that the L1's own
// prefetcher brings the lines in time, and the L1's few miss buffers are not held by lines far
// ahead; into L1 otherwise (Q8_0's expansion reads each line at once; with more passes the tile
// stays for them). On a 2-core Zen 4, interleaved: 13-token queries 41-42 against 46-56 ms
// (bench/single_query.py); into L2 for every pass, 256-2,048-row products were 4-10% slower and
// 1-row ones 0.7-1.1x (bench/linear_kernels.py).
template <Weights W, int ROWS, bool KEEP>
Q3_INLINE void prefetch(const void* address) {
  constexpr bool to_l2 = (W == Weights::kQ8Int8Inputs || (W == Weights::kBf16 && ROWS >= 8)) && !KEEP;
  _mm_prefetch(static_cast<const char*>(address), to_l2 ? _MM_HINT_T1 : _MM_HINT_T0);
}

// One tile's weights as the kernel reads them.
struct Tile {
  const void* weights;  // Q8_0 values [k/2, 32, 2] int8, or bf16 [k/2, 32, 2]
  const float* d;       // Q8_0 scales [k/32, 32]; unused for bf16
  uint16_t* wide;       // Q8_0: the tile expanded to bf16 by the first pass, for the next passes
  Tile const* next;     // the tile this thread multiplies after this one, or nullptr
};

// Input pair `pair` of the next tile (the lines of its weights, and at a block's start its Q8_0
// scales), into L2. Int8 inputs: `pair` counts input quads (two lines each, as bf16's pairs).
template <Weights W>
Q3_INLINE void prefetch_next(const Tile& next, int64_t pair) {
  const auto* weights = static_cast<const char*>(next.weights);
  if constexpr (W == Weights::kBf16) {
    _mm_prefetch(weights + pair * 128, _MM_HINT_T1);
    _mm_prefetch(weights + pair * 128 + 64, _MM_HINT_T1);
    return;
  }
  constexpr int64_t line_bytes = W == Weights::kQ8 ? 64 : 128, per_block = kBlock * kTile / line_bytes;
  _mm_prefetch(weights + pair * line_bytes, _MM_HINT_T1);
  if constexpr (W == Weights::kQ8Int8Inputs) _mm_prefetch(weights + pair * line_bytes + 64, _MM_HINT_T1);
  if (pair % per_block == 0) {
    const auto* scales = reinterpret_cast<const char*>(next.d + pair / per_block * kTile);
    _mm_prefetch(scales, _MM_HINT_T1);
    _mm_prefetch(scales + 64, _MM_HINT_T1);
  }
}

// The rows of x a product reads: bf16 (bits), row r at x + r * stride.
struct Bf16Rows {
  const uint16_t* x;
  int64_t stride;
  Bf16Rows from(int64_t row) const { return {x + row * stride, stride}; }
};

// x quantized for int8 inputs (quantize_rows): per row and block b of 32 inputs, q = round(x / d)
// in int8 with d = max |x| / 127, and offset = -128 x the block's sum of q, which cancels the 128
// the weights are stored with: sum (w + 128) q + offset = sum w q.
struct Int8Rows {
  const int8_t* q;        // [m, stride], k used
  int64_t stride;
  const float* d;         // [m, k/32]
  const int32_t* offset;  // [m, k/32]
  int64_t blocks;         // k / 32
  Int8Rows from(int64_t row) const {
    return {q + row * stride, stride, d + row * blocks, offset + row * blocks, blocks};
  }
};

template <Weights W>
using RowsOf = std::conditional_t<W == Weights::kQ8Int8Inputs, Int8Rows, Bf16Rows>;

// ROWS rows of x [ROWS, k] times one tile -> out [ROWS, 32] (row stride out_stride). FIRST: the
// pass that streams the tile from memory (prefetching; Q8_0: expanding it, into `wide` if KEEP).
// NEXT: the second pass, reading the tile from cache, prefetches the next tile into L2 meanwhile.
template <int ROWS, Weights W, bool FIRST, bool KEEP, bool NEXT>
void tile_rows(const Bf16Rows& rows, int64_t k, const Tile& tile, at::BFloat16* out, int64_t out_stride) {
  const uint16_t* x = rows.x;
  const int64_t x_stride = rows.stride;
  __m512 acc[ROWS][2];
  for (int r = 0; r < ROWS; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  __m512 scales[4];
  const auto* q8 = static_cast<const int8_t*>(tile.weights);
  const auto* bf16 = static_cast<const uint16_t*>(tile.weights);
  for (int64_t pair = 0; pair < k / 2; ++pair) {
    __m512i w0, w1;
    if constexpr (W == Weights::kQ8 && FIRST) {
      if (pair % kPairsPerBlock == 0) line_scales(tile.d + (pair / kPairsPerBlock) * kTile, scales);
      prefetch<W, ROWS, KEEP>(q8 + pair * 64 + kPrefetchBytes);
      expand_line(q8 + pair * 64, scales, w0, w1);
      if constexpr (KEEP) {
        _mm512_storeu_si512(tile.wide + pair * 64, w0);
        _mm512_storeu_si512(tile.wide + pair * 64 + 32, w1);
      }
    } else {
      if constexpr (NEXT) prefetch_next<W>(*tile.next, pair);
      const uint16_t* line = W == Weights::kQ8 ? tile.wide + pair * 64 : bf16 + pair * 64;
      if constexpr (W == Weights::kBf16 && FIRST) {
        prefetch<W, ROWS, KEEP>(line + kPrefetchBytes / 2);
        prefetch<W, ROWS, KEEP>(line + kPrefetchBytes / 2 + 32);
      }
      w0 = _mm512_loadu_si512(line);
      w1 = _mm512_loadu_si512(line + 32);
    }
    for (int r = 0; r < ROWS; ++r) {
      int32_t two;  // inputs 2 pair, 2 pair + 1 of row r, broadcast to every lane
      std::memcpy(&two, x + r * x_stride + 2 * pair, sizeof(two));
      const __m512bh xr = (__m512bh)_mm512_set1_epi32(two);
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], (__m512bh)w0, xr);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], (__m512bh)w1, xr);
    }
  }
  for (int r = 0; r < ROWS; ++r) store_bf16(out + r * out_stride, acc[r][0], acc[r][1]);
}

// Int8 inputs: ROWS quantized rows times one tile -> out [ROWS, 32]. Per block of 32 inputs, each
// row's int32 sums start at its offset and take the block's 8 quads with vpdpbusd (64 products of
// u8 weights and s8 inputs an instruction, against vdpbf16ps' 32); then d_w x d_x scales them
// into the row's fp32 sums. FIRST: the pass that streams the tile (prefetching ahead); NEXT: as in
// tile_rows. The sums of a row are in block order whatever the other rows: any batch, the same values.
template <int ROWS, bool FIRST, bool NEXT>
void tile_rows_int8(const Int8Rows& x, int64_t k, const Tile& tile, at::BFloat16* out, int64_t out_stride) {
  constexpr Weights W = Weights::kQ8Int8Inputs;
  constexpr int64_t kQuadsPerBlock = kBlock / 4;
  // The fp32 sums live in memory (L1), read and written once per block: in registers beside the
  // int32 sums GCC spilled and copied those inside the quad loop (12 rows: 0.35 TOP/s).
  alignas(64) float sums[ROWS][kTile] = {};
  const auto* weights = static_cast<const uint8_t*>(tile.weights);
  for (int64_t block = 0; block < k / kBlock; ++block) {
    __m512i acc[ROWS][2];
    for (int r = 0; r < ROWS; ++r) acc[r][0] = acc[r][1] = _mm512_set1_epi32(x.offset[r * x.blocks + block]);
#pragma GCC unroll 8
    for (int64_t j = 0; j < kQuadsPerBlock; ++j) {
      const int64_t quad = block * kQuadsPerBlock + j;
      const uint8_t* line = weights + quad * 128;
      if constexpr (FIRST) prefetch<W, ROWS, false>(line + kPrefetchBytes);
      if constexpr (FIRST) prefetch<W, ROWS, false>(line + kPrefetchBytes + 64);
      if constexpr (NEXT) prefetch_next<W>(*tile.next, quad);
      const __m512i w0 = _mm512_loadu_si512(line), w1 = _mm512_loadu_si512(line + 64);
      for (int r = 0; r < ROWS; ++r) {
        int32_t four;  // inputs 4 quad .. 4 quad + 3 of row r, broadcast to every lane
        std::memcpy(&four, x.q + r * x.stride + 4 * quad, sizeof(four));
        const __m512i xr = _mm512_set1_epi32(four);
        acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], w0, xr);
        acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], w1, xr);
      }
    }
    const __m512 dw0 = _mm512_loadu_ps(tile.d + block * kTile), dw1 = _mm512_loadu_ps(tile.d + block * kTile + 16);
    for (int r = 0; r < ROWS; ++r) {
      const __m512 dx = _mm512_set1_ps(x.d[r * x.blocks + block]);
      _mm512_store_ps(sums[r], _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][0]), _mm512_mul_ps(dw0, dx),
                                               _mm512_load_ps(sums[r])));
      _mm512_store_ps(sums[r] + 16, _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][1]), _mm512_mul_ps(dw1, dx),
                                                    _mm512_load_ps(sums[r] + 16)));
    }
  }
  for (int r = 0; r < ROWS; ++r) store_bf16(out + r * out_stride, _mm512_load_ps(sums[r]), _mm512_load_ps(sums[r] + 16));
}

template <Weights W, bool FIRST, bool KEEP, bool NEXT = false>
void tile_pass(int64_t rows, const RowsOf<W>& x, int64_t k, const Tile& tile, at::BFloat16* out, int64_t n) {
  switch (rows) {
#define Q3_ROWS(R)                                                             \
    case R:                                                                    \
      if constexpr (R <= kRowsPerPass<W>) {                                    \
        if constexpr (W == Weights::kQ8Int8Inputs) tile_rows_int8<R, FIRST, NEXT>(x, k, tile, out, n); \
        else tile_rows<R, W, FIRST, KEEP, NEXT>(x, k, tile, out, n);           \
        break;                                                                 \
      }
    Q3_ROWS(1) Q3_ROWS(2) Q3_ROWS(3) Q3_ROWS(4) Q3_ROWS(5) Q3_ROWS(6)
    Q3_ROWS(7) Q3_ROWS(8) Q3_ROWS(9) Q3_ROWS(10) Q3_ROWS(11) Q3_ROWS(12)
    Q3_ROWS(13) Q3_ROWS(14)
#undef Q3_ROWS
    default: TORCH_CHECK(false, "a pass has 1 to ", kRowsPerPass<W>, " rows");
  }
}

// m rows against one tile, in passes as even as they go (bf16, 29 rows: 10, 10 and 9, not 14, 14
// and 1; Q8_0, 13 rows: 7 and 6); the first streams the tile, the others read it from cache (Q8_0:
// its bf16 copy in `wide`). The second also streams the next tile into L2 (tile.next), so that
// memory is busy while it computes and the next first pass reads from L2: a first pass alone is
// as slow as the memory, and after it the second computed with memory idle (bf16 27-row products
// of the 0.6B model, from memory: 0.30-0.35 -> 0.34-0.37 TFLOP/s; 2-core Zen 4).
template <Weights W>
void tile_all_rows(const RowsOf<W>& x, int64_t m, int64_t k, const Tile& tile, at::BFloat16* out, int64_t n) {
  const int64_t passes = (m + kRowsPerPass<W> - 1) / kRowsPerPass<W>;
  int64_t row = 0;
  for (int64_t p = 0; p < passes; ++p) {
    const int64_t rows = (m - row) / (passes - p);
    const RowsOf<W> x_pass = x.from(row);
    if (p == 1 && tile.next) tile_pass<W, false, false, true>(rows, x_pass, k, tile, out + row * n, n);
    else if (p > 0) tile_pass<W, false, false>(rows, x_pass, k, tile, out + row * n, n);
    else if (passes > 1) tile_pass<W, true, true>(rows, x, k, tile, out, n);
    else tile_pass<W, true, false>(rows, x, k, tile, out, n);
    row += rows;
  }
}

void check_x(const at::Tensor& x, int64_t k) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kBFloat16 && x.dim() == 2 && x.size(1) == k,
              "x must be bf16 [rows, ", k, "] on the CPU");
}

// x [m, k] with rows whose starts fall in different L1 sets. A pass reads one line of each of its
// up to 14 rows per 16 input pairs; rows 2k bytes apart with 2k a multiple of 4,096 (k = 2,048:
// the 0.6B model's o_proj; 4,096: most of the 8B's products) all map to one set of the 8-way L1,
// so they evict each other on every line (0.6B o_proj at 2,048 rows: 0.34 TFLOP/s against 0.44
// for the other shapes). Those x are copied with 64 bytes more per row, one copy of m x k.
at::Tensor rows_apart(const at::Tensor& x) {
  const int64_t k = x.size(1);
  if ((2 * k) % 4096 != 0 || x.size(0) == 1) return x.contiguous();
  at::Tensor padded = at::empty({x.size(0), k + 32}, x.options());
  padded.narrow(1, 0, k).copy_(x);
  return padded.narrow(1, 0, k);
}

// What a product makes of its tiles: x W^T itself, or (SwiGLU: W = [gate; up], as many tiles of
// each) silu(x Wg^T) * (x Wu^T), the MLP's activation fused into its product so that the gate and
// up outputs (2 x [m, n/2] bf16, past L2 in a batch) are never written out and read back.
enum class Output { kProducts, kSwiglu };

// SwiGLU's epilogue for one tile's rows: gate and up [rows, 32] bf16 (the products, rounded as the
// plain kernel rounds them) -> out [rows, 32] (row stride out_stride) = silu(gate) * up, torch's roundings.
void swiglu_rows(int64_t rows, const at::BFloat16* gate, const at::BFloat16* up, at::BFloat16* out,
                 int64_t out_stride) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t half = 0; half < kTile; half += kTile / 2)  // two vectors of 16
      store_bf16(out + r * out_stride + half,
                 silu_times(load_bf16(gate + r * kTile + half), load_bf16(up + r * kTile + half)));
}

// x [m, k] bf16 quantized for int8 inputs: `rows` points into `buffer`, which holds q, d and the
// offsets one after the other (one allocation a product: a query makes 112 of them).
struct QuantizedRows {
  at::Tensor buffer;
  Int8Rows rows;
};

// Each row's blocks of 32 inputs as llama.cpp's quantize_row_q8_0 makes them (d = max |x| / 127,
// q = x x 127 / max |x| rounded to nearest even), d kept in fp32 where llama.cpp rounds it to
// fp16. Rows 64 bytes further apart than k, so that a pass's rows fall in different L1 sets.
QuantizedRows quantize_rows(const at::Tensor& x) {
  const int64_t m = x.size(0), k = x.size(1), blocks = k / kBlock, q_stride = k + 64;
  // q [m, k + 64] int8, then d [m, blocks] fp32 and offset [m, blocks] int32 (4-byte aligned: k % 32 == 0)
  at::Tensor buffer = at::empty({m * q_stride + m * blocks * 8}, x.options().dtype(at::kByte));
  int8_t* qp = reinterpret_cast<int8_t*>(buffer.data_ptr<uint8_t>());
  float* dp = reinterpret_cast<float*>(qp + m * q_stride);
  int32_t* op = reinterpret_cast<int32_t*>(dp + m * blocks);
  const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
  const int64_t x_stride = x.stride(0);
  // Split by blocks, not rows: a query's few rows are hundreds of blocks (13 x 1,024 inputs: 3.5 us
  // on one thread), and the products wait for them.
  at::parallel_for(0, m * blocks, kQuantizeGrainBlocks, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t r = i / blocks, b = i % blocks;
      const auto* src = reinterpret_cast<const at::BFloat16*>(xp + r * x_stride + b * kBlock);
      const __m512 low = load_bf16(src), high = load_bf16(src + 16);
      const float largest = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(low), _mm512_abs_ps(high)));
      const __m512 scale = _mm512_set1_ps(largest != 0.0f ? 127.0f / largest : 0.0f);
      const __m512i q_low = _mm512_cvtps_epi32(_mm512_mul_ps(low, scale));  // MXCSR: nearest even
      const __m512i q_high = _mm512_cvtps_epi32(_mm512_mul_ps(high, scale));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qp + r * q_stride + b * kBlock), _mm512_cvtsepi32_epi8(q_low));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qp + r * q_stride + b * kBlock + 16), _mm512_cvtsepi32_epi8(q_high));
      dp[r * blocks + b] = largest / 127.0f;
      op[r * blocks + b] = -128 * _mm512_reduce_add_epi32(_mm512_add_epi32(q_low, q_high));
    }
  });
  return {buffer, Int8Rows{qp, q_stride, dp, op, blocks}};
}

// out = x [m, k] times every tile (kProducts: [m, 32 tiles]; kSwiglu: [m, 16 tiles], see Output);
// `tile_of(t)` -> tile t's weights.
template <Weights W, Output O = Output::kProducts, typename TileOf>
at::Tensor multiply(const at::Tensor& x_in, int64_t tiles, int64_t k, TileOf tile_of) {
  check_x(x_in, k);
  TORCH_CHECK(O == Output::kProducts || tiles % 2 == 0, "SwiGLU's weights are as many gate tiles as up tiles");
  const int64_t m = x_in.size(0), jobs = O == Output::kSwiglu ? tiles / 2 : tiles, n = jobs * kTile;
  at::Tensor out = at::empty({m, n}, x_in.options());
  if (m == 0) return out;
  // the rows as the kernel reads them: bf16 (rows_apart), or quantized for int8 inputs
  at::Tensor x;
  QuantizedRows quantized;
  RowsOf<W> x_all;
  if constexpr (W == Weights::kQ8Int8Inputs) {
    quantized = quantize_rows(x_in.contiguous());
    x_all = quantized.rows;
  } else {
    x = rows_apart(x_in);
    x_all = Bf16Rows{reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>()), x.stride(0)};
  }
  at::BFloat16* op = out.data_ptr<at::BFloat16>();
  const int64_t row_bytes = W == Weights::kQ8Int8Inputs ? k : 2 * k;
  const int64_t chunk = W == Weights::kQ8
      ? m : std::max<int64_t>(kRowsPerPass<W>, kRowChunkBytes / row_bytes / kRowsPerPass<W> * kRowsPerPass<W>);
  at::parallel_for(0, jobs, 1, [&](int64_t begin, int64_t end) {
    // One tile in bf16 (Q8_0, several passes), per thread, reused from call to call: a fresh
    // 64-192 KB allocation would be a fresh mapping, page faults included, per product.
    thread_local std::vector<uint16_t> wide;
    if (W == Weights::kQ8 && m > kRowsPerPass<W> && wide.size() < static_cast<size_t>(k * kTile))
      wide.resize(k * kTile);
    thread_local std::vector<at::BFloat16> gate, up;  // SwiGLU: one chunk's gate and up tile [rows, 32]
    if (O == Output::kSwiglu && gate.size() < static_cast<size_t>(chunk * kTile)) {
      gate.resize(chunk * kTile);
      up.resize(chunk * kTile);
    }
    for (int64_t row = 0; row < m; row += chunk) {
      const int64_t rows = std::min(chunk, m - row);
      const RowsOf<W> x_rows = x_all.from(row);
      // these rows x tile t, then tile `after` (-1: none) is multiplied
      auto rows_times = [&](int64_t t, int64_t after, at::BFloat16* to, int64_t to_stride) {
        const Tile next = after >= 0 ? tile_of(after) : Tile{};
        Tile tile = tile_of(t);
        tile.wide = wide.data();
        tile.next = after >= 0 ? &next : nullptr;
        tile_all_rows<W>(x_rows, rows, k, tile, to, to_stride);
      };
      for (int64_t t = begin; t < end; ++t) {
        const int64_t after = t + 1 < end ? t + 1 : -1;
        if constexpr (O == Output::kProducts) {
          rows_times(t, after, op + row * n + t * kTile, n);
        } else {  // gate tile t and its up tile t + jobs, then their SwiGLU into output tile t
          rows_times(t, t + jobs, gate.data(), kTile);
          rows_times(t + jobs, after, up.data(), kTile);
          swiglu_rows(rows, gate.data(), up.data(), op + row * n + t * kTile, n);
        }
      }
    }
  });
  return out;
}

// Q8_0 blocks: values [N/32, K/inputs, 32, inputs] (int8, 2 inputs a lane: q8_linear; uint8 q + 128,
// 4 a lane: q8_linear_int8) and scales fp32 [N/32, K/32, 32].
template <Weights W>
void check_q8(const at::Tensor& values, const at::Tensor& scales) {
  constexpr bool int8_inputs = W == Weights::kQ8Int8Inputs;
  constexpr int64_t inputs = int8_inputs ? 4 : 2;
  TORCH_CHECK(values.scalar_type() == (int8_inputs ? at::kByte : at::kChar) && values.dim() == 4
              && values.size(2) == kTile && values.size(3) == inputs && values.is_contiguous(),
              int8_inputs ? "values must be uint8 [N/32, K/4, 32, 4]" : "values must be int8 [N/32, K/2, 32, 2]");
  const int64_t tiles = values.size(0), k = values.size(1) * inputs;
  TORCH_CHECK(k % kBlock == 0, "K must be a multiple of 32");
  TORCH_CHECK(scales.scalar_type() == at::kFloat && scales.is_contiguous()
              && scales.sizes() == at::IntArrayRef({tiles, k / kBlock, kTile}), "scales must be fp32 [N/32, K/32, 32]");
}

template <Weights W, Output O>
at::Tensor q8_multiply(const at::Tensor& x, const at::Tensor& values, const at::Tensor& scales) {
  check_q8<W>(values, scales);
  const int64_t tiles = values.size(0), k = values.size(1) * values.size(3);
  const auto* qp = static_cast<const char*>(values.data_ptr());
  const float* dp = scales.data_ptr<float>();
  return multiply<W, O>(x, tiles, k, [&](int64_t t) {
    return Tile{qp + t * k * kTile, dp + t * (k / kBlock) * kTile, nullptr, nullptr};
  });
}

template <Output O>
at::Tensor bf16_multiply(const at::Tensor& x, const at::Tensor& weights) {
  TORCH_CHECK(weights.scalar_type() == at::kBFloat16 && weights.dim() == 4 && weights.size(2) == kTile
              && weights.size(3) == 2 && weights.is_contiguous(), "weights must be bf16 [N/32, K/2, 32, 2]");
  const int64_t tiles = weights.size(0), k = weights.size(1) * 2;
  const auto* wp = reinterpret_cast<const uint16_t*>(weights.data_ptr<at::BFloat16>());
  return multiply<Weights::kBf16, O>(x, tiles, k, [&](int64_t t) {
    return Tile{wp + t * k * kTile, nullptr, nullptr, nullptr};
  });
}

}  // namespace

TORCH_LIBRARY(q3embed_cpu, lib) {
  lib.def("q8_linear(Tensor x, Tensor values, Tensor scales) -> Tensor");
  lib.def("bf16_linear(Tensor x, Tensor weights) -> Tensor");
  // weights [gate; up] (a fused gate_up projection's) -> silu(x Wg^T) * (x Wu^T)
  lib.def("q8_linear_swiglu(Tensor x, Tensor values, Tensor scales) -> Tensor");
  lib.def("bf16_linear_swiglu(Tensor x, Tensor weights) -> Tensor");
  // Q8_0 blocks (values + 128, uint8 [N/32, K/4, 32, 4]) times x quantized to Q8_0 blocks
  lib.def("q8_linear_int8(Tensor x, Tensor values, Tensor scales) -> Tensor");
  lib.def("q8_linear_int8_swiglu(Tensor x, Tensor values, Tensor scales) -> Tensor");
}

TORCH_LIBRARY_IMPL(q3embed_cpu, CPU, lib) {
  lib.impl("q8_linear", &q8_multiply<Weights::kQ8, Output::kProducts>);
  lib.impl("bf16_linear", &bf16_multiply<Output::kProducts>);
  lib.impl("q8_linear_swiglu", &q8_multiply<Weights::kQ8, Output::kSwiglu>);
  lib.impl("bf16_linear_swiglu", &bf16_multiply<Output::kSwiglu>);
  lib.impl("q8_linear_int8", &q8_multiply<Weights::kQ8Int8Inputs, Output::kProducts>);
  lib.impl("q8_linear_int8_swiglu", &q8_multiply<Weights::kQ8Int8Inputs, Output::kSwiglu>);
}
