// Plain parameter structs shared by the torch-facing CPU entry points and the
// per-ISA kernel builds. No ATen types here: the kernels in this folder are
// compiled once per CPU capability (see capability_*.cpp) and must not leak
// ATen inline functions compiled for one ISA into the others.
#pragma once

#include <cstdint>

#include "../../common/tensor_params.h"  // Dtype, Layout, Strides, Geometry

namespace resnet_fast::cpu {

// Per-channel statistics of x, in double whatever x's dtype: the mean of an
// fp32 input with a large offset needs more than fp32 to center it exactly.
struct StatsParams {
  Geometry g;
  const void* x;  // [N, C, H, W]
  Strides sx;
  double* mean;   // [C]
  double* var;    // [C], biased
};

// Centering in the acc type with a mean split in two: x - mean is computed as
// (x - mean_hi) - mean_lo, mean_hi = acc(mean), mean_lo = acc(mean - mean_hi).
// x - mean_hi is exact for x near the mean, so an fp32 input with mean 1e4 and
// std 1 is centered to fp32 precision (a single fp32 mean would be off by up
// to 5e-4, half its ulp).

// out = act((x - mean[c]) * scale[c] + bias[c] (+ residual)), centered as
// described above.
struct ApplyParams {
  Geometry g;
  const void* x;         // [N, C, H, W]
  Strides sx;
  const void* residual;  // [N, C, H, W] or nullptr
  Strides sr;
  const void* mean;      // [C] acc type: mean_hi
  const void* mean_lo;   // [C] acc type
  const void* scale;     // [C] acc type: weight * invstd
  const void* bias;      // [C] acc type
  void* out;             // [N, C, H, W]
  Strides so;
  bool relu;
};

// Backward reductions: with g = dy * [act'(pre)], pre the forward's
// pre-activation (x - mean)*scale + bias (+ r), recomputed bit-identically,
//   sum_g[c]  = sum g
//   sum_gx[c] = sum g * (x - mean[c])
// and, when grad_residual is given, grad_residual = g (written in the same
// pass, so the second pass reads g instead of dy and the residual).
struct BackwardReduceParams {
  Geometry g;
  const void* dy;        // [N, C, H, W]
  Strides sdy;
  const void* x;         // [N, C, H, W]
  Strides sx;
  const void* residual;  // [N, C, H, W] or nullptr
  Strides sr;
  const void* mean;      // [C] acc type: mean_hi
  const void* mean_lo;   // [C] acc type
  const void* scale;     // [C] acc type: the forward's scale
  const void* bias;      // [C] acc type: the forward's bias
  void* sum_g;           // [C] acc type
  void* sum_gx;          // [C] acc type
  void* grad_residual;   // [N, C, H, W] or nullptr
  Strides sgr;
  bool relu;
};

// dx = a[c] * g + b[c] * (x - mean[c]) + d[c], where g = gsrc when the mask
// was already applied (mask_from_x == false), else g = gsrc * [pre > 0] with
// pre = (x - mean)*scale + bias as in the forward.
struct BackwardApplyParams {
  Geometry g;
  const void* gsrc;   // [N, C, H, W]
  Strides sg;
  const void* x;      // [N, C, H, W]
  Strides sx;
  const void* mean;     // [C] acc type: mean_hi
  const void* mean_lo;  // [C] acc type
  const void* scale;  // [C] acc type (only read when mask_from_x)
  const void* bias;   // [C] acc type (only read when mask_from_x)
  const void* a;      // [C] acc type
  const void* b;      // [C] acc type
  const void* d;      // [C] acc type
  void* dx;           // [N, C, H, W]
  Strides sdx;
  bool mask_from_x;
};

// Elementwise over `numel` elements of identically laid out dense storage:
//   forward:  out = relu(a + b)
//   backward: grad = dy * [out > 0]
struct AddReluParams {
  Dtype dtype;
  int64_t numel;
  const void* a;
  const void* b;
  void* out;
};

struct ReluBackwardParams {
  Dtype dtype;
  int64_t numel;
  const void* dy;
  const void* out;
  void* grad;
};

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

// out = act(A^T m A + bias (+ residual)) of each tile, cropped to H x W.
struct WinogradOutputParams {
  Dtype dtype;
  int64_t N, K, H, W;
  int64_t first, count;
  const void* products;  // [36, count, K]: the tiles times the transformed weight
  const void* bias;      // [K] or nullptr
  const void* residual;  // [N, H, W, K] or nullptr
  void* out;             // [N, H, W, K]
  bool relu;
};

// One ISA build of every kernel.
struct KernelTable {
  const char* name;
  void (*bn_stats)(const StatsParams&);
  void (*bn_apply)(const ApplyParams&);
  void (*bn_backward_reduce)(const BackwardReduceParams&);
  void (*bn_backward_apply)(const BackwardApplyParams&);
  void (*add_relu)(const AddReluParams&);
  void (*relu_backward)(const ReluBackwardParams&);
  void (*winograd_input)(const WinogradInputParams&);
  void (*winograd_output)(const WinogradOutputParams&);
};

// Each returns nullptr when that build is not compiled in.
const KernelTable* kernels_default();
const KernelTable* kernels_avx2();
const KernelTable* kernels_avx512();

}  // namespace resnet_fast::cpu
