// Plain parameter structs of the CUDA kernels. No torch headers here or
// anywhere under kernels/: the CI compiles these files with nvcc for several
// architectures on a machine with no GPU and no CUDA build of torch.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../../common/tensor_params.h"  // Dtype, Layout, Strides, Geometry

namespace resnet_fast::cuda {

// A [C] vector of any supported dtype, possibly strided; data == nullptr when
// absent.
struct ChannelVector {
  const void* data = nullptr;
  Dtype dtype = Dtype::kFloat;
  int64_t stride = 1;
};

// A [C] vector updated in place (a running statistic).
struct MutableChannelVector {
  void* data = nullptr;
  Dtype dtype = Dtype::kFloat;
  int64_t stride = 1;
};

// How a reduction over (N, H, W) is cut into blocks, chosen by the plan_*
// function of the kernel and handed back to its launcher unchanged: each of
// `splits` blocks per channel writes one partial result, and a finalize
// kernel merges them.
struct ReductionPlan {
  int splits = 0;       // partial results per channel (0: nothing to reduce)
  bool vectorized = false;
  unsigned block_x = 0, block_y = 0, grid_x = 0, grid_y = 0;
};

// ---------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------

// Per-block statistics of x. Writes `plan.splits` partial results per
// channel into `partials`: [3][splits][C] float64 (count, mean, M2).
struct StatsParams {
  Geometry g;
  const void* x;  // [N, C, H, W]
  Strides sx;
  double* partials;
};

// Merges the statistics (or reads the running statistics in eval), updates
// the running statistics, and writes the per-channel outputs:
//   training: mean/var from `partials` (splits == 0: an empty batch, mean =
//             var = 0 and the running statistics are left alone).
//   eval:     mean/var = running_mean/running_var.
// Outputs, all [C]: save_mean (float64), batch_var (float64, the biased
// variance; nullptr: not written), save_invstd (acc type) and the
// coefficients of the apply kernel (acc type, see ApplyParams); save_invstd
// == coefs == nullptr writes the statistics alone (the bn_stats op).
struct FinalizeForwardParams {
  int64_t C;
  bool training;
  const double* partials;  // [3][splits][C] or nullptr
  int splits;
  ChannelVector weight, bias;
  MutableChannelVector running_mean, running_var;  // updated in place in training
  double momentum, eps;
  int64_t count;  // N * H * W
  bool acc_double;
  double* save_mean;   // [C]
  double* batch_var;   // [C] or nullptr
  void* save_invstd;   // [C] acc type, or nullptr
  void* coefs;         // [4][C] acc type: mean_hi, mean_lo, scale, shift; or nullptr
};

// Centering in the acc type with the float64 mean split in two:
// x - mean = (x - mean_hi) - mean_lo, mean_hi = acc(mean), mean_lo =
// acc(mean - mean_hi), so an fp32 input with mean 1e4 is centered to fp32
// precision.
//
// out = act(((x - mean_hi) - mean_lo) * scale + shift [+ residual]).
struct ApplyParams {
  Geometry g;
  const void* x;         // [N, C, H, W]
  Strides sx;
  const void* residual;  // [N, C, H, W] or nullptr
  Strides sr;
  const void* coefs;     // [4][C] acc type: mean_hi, mean_lo, scale, shift
  void* out;             // [N, C, H, W]
  Strides so;
  bool relu;
};

// ---------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------

// The forward's coefficients, recomputed from what the forward returned.
struct SavedStats {
  const double* save_mean;    // [C] float64
  const void* save_invstd;    // [C] acc type
  ChannelVector weight, bias;
};

// With g = dy * [pre > 0] (pre the forward's pre-activation, recomputed
// bit-identically) partial sums per block of
//   sum_g = sum g,   sum_gx = sum g * (x - mean)
// into `partials`: [2][splits][C] float64; and grad_residual = g when given.
struct BackwardReduceParams {
  Geometry g;
  const void* dy;        // [N, C, H, W]
  Strides sdy;
  const void* x;         // [N, C, H, W]
  Strides sx;
  const void* residual;  // [N, C, H, W] or nullptr
  Strides sr;
  SavedStats saved;
  bool relu;
  double* partials;
  void* grad_residual;   // [N, C, H, W] or nullptr
  Strides sgr;
};

// Sums the partials and writes grad_weight = sum_gx * invstd (in
// grad_weight_dtype), grad_bias = sum_g (in grad_bias_dtype), and the
// grad-input coefficients, [7][C] acc type: mean_hi, mean_lo, scale, shift,
// a, b, d, with dx = a * g + b * (x - mean) + d (b = d = 0 in eval).
// With sum_g set it writes the sums alone, [C] acc type each (the
// bn_*_bwd_reduce ops), and reads neither `saved` nor the outputs above.
struct FinalizeBackwardParams {
  int64_t C;
  bool training;
  const double* partials;  // [2][splits][C]
  int splits;
  SavedStats saved;
  int64_t count;
  bool acc_double;
  void* grad_weight;  // [C]
  Dtype grad_weight_dtype;
  void* grad_bias;    // [C]
  Dtype grad_bias_dtype;
  void* coefs;        // [7][C] acc type
  void* sum_g;        // [C] acc type, or nullptr
  void* sum_gx;       // [C] acc type, with sum_g
};

// The coefficients of the apply kernels from statistics the caller gives
// (the stage ops): [4][C] acc type (ApplyParams) from saved alone, or [7][C]
// (BackwardApplyParams) when mean_g and mean_gx are given, with
//   a = scale, b = -scale * invstd^2 * mean_gx, d = -scale * mean_g,
// the backward finalize's formulas with the batch means given.
struct GivenCoefsParams {
  int64_t C;
  bool acc_double;
  SavedStats saved;
  const void* mean_g;   // [C] acc type, or nullptr
  const void* mean_gx;  // [C] acc type, with mean_g
  void* coefs;          // [4][C] or [7][C] acc type
};

// dx = a * g + b * (x - mean) + d; g = gsrc, times [pre > 0] when
// mask_from_x (a ReLU without residual: the mask comes from x alone).
struct BackwardApplyParams {
  Geometry g;
  const void* gsrc;   // [N, C, H, W]: dy, or grad_residual (already masked)
  Strides sg;
  const void* x;      // [N, C, H, W]
  Strides sx;
  const void* coefs;  // [7][C] acc type, from the backward finalize
  void* dx;           // [N, C, H, W]
  Strides sdx;
  bool mask_from_x;
};

// ---------------------------------------------------------------------------
// add + ReLU over `numel` elements of identically laid out dense storage
// ---------------------------------------------------------------------------

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

}  // namespace resnet_fast::cuda
