// The plain parameter structs of every BN and add-ReLU kernel, on every
// device: the CPU kernels (compiled once per ISA, csrc/cpu/kernels/), the
// CUDA kernels (csrc/cuda/kernels/, compiled by nvcc on machines without
// torch) and the CUDA-on-CPU emulation. No ATen and no CUDA headers here.
//
// The shapes are the GPU's, where a reduction over (N, H, W) is cut into
// `splits` blocks per channel: the streaming kernels write partial results
// and a finalize step merges them into [C]-sized outputs. The CPU reduces
// with one split (its threads merge their own partials inside the kernel),
// then runs the same finalize steps (csrc/common/channel_steps.h).
#pragma once

#include <cstdint>

namespace resnet_fast {

enum class Dtype : int { kFloat, kDouble, kHalf, kBFloat16 };

// How the kernels walk a [N, C, H, W] tensor (every operand of one call alike).
//   kPlanar: stride_w == 1; work is split into "lines" (n, c, h) of W
//            contiguous elements (merged into one line of H*W per (n, c) when
//            every operand is dense over H and W).
//   kRows:   stride_c == 1 (channels_last); work is split into rows (n, h, w)
//            of C contiguous channels.
enum class Layout : int { kPlanar, kRows };

// Strides in elements of one [N, C, H, W] operand.
struct Strides {
  int64_t n = 0, c = 0, h = 0, w = 0;
};

// Geometry shared by every operand of one kernel call. Each operand has its
// own strides but all belong to the same `layout` class.
struct Geometry {
  int64_t N = 0, C = 0, H = 0, W = 0;
  Layout layout = Layout::kPlanar;
  Dtype dtype = Dtype::kFloat;
};

// A [C] vector of any supported dtype, possibly strided; data == nullptr when
// absent (weight, bias).
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

// How a reduction over (N, H, W) is cut into blocks, chosen by the device's
// plan_* function and handed back to its reduction unchanged: each of
// `splits` blocks per channel writes one partial result, and a finalize step
// merges them. The block and grid fields are the CUDA launch shape (zero on
// the CPU).
struct ReductionPlan {
  int splits = 0;  // partial results per channel (0: nothing to reduce)
  bool vectorized = false;
  unsigned block_x = 0, block_y = 0, grid_x = 0, grid_y = 0;
};

// Rows of the per-channel coefficient tables (`coefs`), [rows][C] of the acc
// type (float, double for double inputs): the apply kernels read rows 0-3,
// the grad-input kernels all seven.
//
// Centering in the acc type with the float64 mean split in two:
// x - mean = (x - mean_hi) - mean_lo, mean_hi = acc(mean), mean_lo =
// acc(mean - mean_hi). x - mean_hi is exact for x near the mean, so an fp32
// input with mean 1e4 and std 1 is centered to fp32 precision (a single fp32
// mean would be off by up to 5e-4, half its ulp).
enum CoefRow : int {
  kMeanHi = 0,
  kMeanLo = 1,
  kScale = 2,  // weight * invstd (invstd without weight)
  kShift = 3,  // bias, or 0
  kGradA = 4,  // dx = a * g + b * (x - mean) + d
  kGradB = 5,
  kGradD = 6,
};
constexpr int kApplyCoefRows = 4;
constexpr int kGradCoefRows = 7;

// ---------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------

// Per-block statistics of x. Writes `plan.splits` partial results per
// channel into `partials`: [3][splits][C] float64 (count, mean, M2), in
// float64 whatever x's dtype: the mean of an fp32 input with a large offset
// needs more than fp32 to center it exactly.
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
// coefficients of the apply kernel (rows 0-3, see CoefRow); save_invstd ==
// coefs == nullptr writes the statistics alone (the bn_stats op).
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
  void* coefs;         // [4][C] acc type, or nullptr
};

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

// What the forward returned, from which the backward recomputes its
// coefficients.
struct SavedStats {
  const double* save_mean;    // [C] float64
  const void* save_invstd;    // [C] acc type
  ChannelVector weight, bias;
};

// With g = dy * [pre > 0] (pre the forward's pre-activation, recomputed
// bit-identically) partial sums per block of
//   sum_g = sum g,   sum_gx = sum g * (x - mean)
// into `partials`: [2][splits][C] float64; and grad_residual = g when given
// (written in the same pass, so the grad-input pass reads g instead of dy
// and the residual).
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
// grad-input coefficients, [7][C] acc type (CoefRow), with
// dx = a * g + b * (x - mean) + d (b = d = 0 in eval).
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
  const void* coefs;  // [7][C] acc type
  void* dx;           // [N, C, H, W]
  Strides sdx;
  bool mask_from_x;
};

// ---------------------------------------------------------------------------
// add + ReLU over `numel` elements of identically laid out dense storage
//   forward:  out = relu(a + b)
//   backward: grad = dy * [out > 0]
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

}  // namespace resnet_fast
