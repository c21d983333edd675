// Plain parameter structs of the CPU Winograd F(4x4, 3x3) tile transforms
// (winograd_impl.h), a CPU algorithm with no GPU twin. No ATen types: see
// isa_kernels.h.
#pragma once

#include <cstdint>

#include "../../common/kernel_params.h"  // Dtype

namespace resnet_fast::cpu {

// The tile transforms of a Winograd F(4x4, 3x3) convolution (3x3 kernel,
// stride 1, padding 1, dilation 1, one group) over dense channels_last
// operands; see winograd_impl.h for the transform matrices. T, the number of
// 4x4 output tiles, is N * ceil(H / 4) * ceil(W / 4); element e of a tile is
// its row e / 6, column e % 6 of the 6x6 transform. A call covers the
// `count` tiles from `first` on (tile order: n, tile row, tile column), on the
// calling thread. kFloat or kDouble only.
struct WinogradInputParams {
  Dtype dtype;
  int64_t N, C, H, W;
  int64_t first, count;
  const void* x;  // [N, H, W, C] (channels_last [N, C, H, W])
  void* tiles;    // [36, count, C]: B^T d B of each 6x6 input patch d
};

// products[e] = tiles[e] U[e][:, k0 : k0 + Kb] for the 36 elements e of
// `count` tiles: one [count x C] by [C x Kb] matrix product per element, over
// U = winograd_weight(weight) restricted to output channels k0 .. k0 + Kb.
struct WinogradProductParams {
  Dtype dtype;
  int64_t count, C, K;
  int64_t k0, Kb;
  const void* tiles;         // [36, count, C]
  const void* weight_tiles;  // [36, C, K]
  void* products;            // [36, count, Kb]
};

// out[..., k0 : k0 + Kb] = act(A^T m A + bias (+ residual)) of each tile,
// cropped to H x W, for the output channels k0 .. k0 + Kb.
struct WinogradOutputParams {
  Dtype dtype;
  int64_t N, K, H, W;
  int64_t first, count;
  int64_t k0, Kb;
  const void* products;  // [36, count, Kb]: the tiles times the transformed weight
  const void* bias;      // [K] or nullptr
  const void* residual;  // [N, H, W, K] or nullptr
  void* out;             // [N, H, W, K]
  bool relu;
};

}  // namespace resnet_fast::cpu
