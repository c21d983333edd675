// What the CPU convolution ops (winograd.cpp, taps_conv.cpp) share: their
// operand checks and how they split their work among the threads.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <optional>

namespace resnet_fast::cpu {

// A float32 or float64 CPU tensor (the convolutions have no reduced-precision
// build), named `name` in the error.
void check_wide_float(const at::Tensor& t, const char* name);

// A dense channels_last [N, C, H, W] tensor.
void check_channels_last(const at::Tensor& t, const char* name);

inline bool has(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

// The sizes of a convolution's operands, once checked.
struct ConvOperands {
  int64_t N, C, H, W, K;
  int64_t Ho, Wo;  // the output's map
};

// Checks the operands of a CPU convolution op (3x3 with padding 1, or 1x1
// with padding 0) of `stride` (1 or 2) and returns their sizes:
//   input:    [N, C, H, W] dense channels_last, float32 or float64
//   weight:   [parts, C, K] contiguous, input's dtype: the weight as the op
//             takes it, made by `made_by` (named `name` in the errors)
//   bias:     [K] or None, input's dtype
//   residual: [N, K, Ho, Wo] dense channels_last or None, input's dtype,
//             Ho = ceil(H / stride), Wo likewise
ConvOperands check_conv_operands(const at::Tensor& input, const at::Tensor& weight, const char* name,
                                 int64_t parts, const char* made_by, const std::optional<at::Tensor>& bias,
                                 const std::optional<at::Tensor>& residual, int64_t stride = 1);

// The [N, K, Ho, Wo] channels_last output of such an op (NaN-filled where
// outputs are poisoned, so that a kernel that skips an element is caught).
at::Tensor conv_output(const at::Tensor& input, const ConvOperands& sizes);

// How a convolution of R rows (Winograd tiles, output pixels) into K output
// channels is split into work items, each a chunk of rows by a block of
// output channels, done start to end on one thread while its rows are in
// that thread's cache. Chunks of at most 64 rows (for Winograd, 36 x 64 x
// (C + K) values, 1.2 MB in float32 at C = K = 64: measured on ResNet stages
// at batch 64, 48 to 64 are fastest; fewer re-read the weight too often, more
// outgrow the cache), as many chunks as a multiple of the threads. Where
// there are fewer chunks than threads (small maps, small batches), the output
// channels are split instead, in multiples of 16, so that each thread reads
// only its part of the weight rather than all of it for a few rows.
// rows >= 1, K >= 1 (the ops return empty outputs before splitting).
struct WorkSplit {
  int64_t chunk, chunks;  // rows per chunk, chunks
  int64_t block, blocks;  // output channels per block, blocks

  WorkSplit(int64_t rows, int64_t K) {
    const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
    chunks = (rows + 63) / 64;
    if (chunks > 1) chunks = (chunks + threads - 1) / threads * threads;
    chunk = (rows + chunks - 1) / chunks;
    chunks = (rows + chunk - 1) / chunk;
    blocks = std::min((threads + chunks - 1) / chunks, (K + 15) / 16);
    block = (K + blocks - 1) / blocks;
    if (blocks > 1) block = (block + 15) / 16 * 16;
    blocks = (K + block - 1) / block;
  }
  int64_t items() const { return chunks * blocks; }
};

}  // namespace resnet_fast::cpu
