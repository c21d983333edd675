// Plain parameter struct of the CPU tap-by-tap convolution (taps_impl.h), a
// CPU algorithm with no GPU twin. No ATen types: see isa_kernels.h.
#pragma once

#include <cstdint>

#include "../../common/kernel_params.h"  // Dtype

namespace resnet_fast::cpu {

// A k x k convolution (k = 1 or 3, padding k / 2, one group) of dense
// channels_last operands:
//   out[n, y, x, k0 : k0 + Kb] = act(sum over the taps (dy, dx) of the kernel
//   of x[n, y * stride + dy - k / 2, x * stride + dx - k / 2] w[dy, dx]
//   + bias (+ residual))
// for the `count` output pixels from `first` on (order: n, y, x), over the
// taps whose input pixel lies inside the image (the others read padding:
// zeros, skipped). On the calling thread. kFloat or kDouble only.
struct TapsConvParams {
  Dtype dtype;
  int64_t N, C, H, W, K;   // H, W: the input's
  int64_t ksize, stride;   // k, and the stride (1 or 2)
  int64_t Ho, Wo;          // the output's map
  int64_t first, count;
  int64_t k0, Kb;
  const void* x;         // [N, H, W, C] (channels_last [N, C, H, W])
  const void* weight;    // [k * k, C, K]: tap dy * k + dx, then [C x K]
  const void* bias;      // [K] or nullptr
  const void* residual;  // [N, Ho, Wo, K] or nullptr
  void* out;             // [N, Ho, Wo, K]
  void* sums;            // [count, Kb] scratch: the sums over the taps
  bool relu;
};

// The weight gradient of that convolution for one tap and a block of its
// [C x K] matrix:
//   sums[c, k] = sum over the output pixels whose input pixel for the tap
//   lies inside the image of x[input pixel, c0 + c] grad[output pixel, k0 + k]
// for c < Cb, k < Kb, summed over the pixels in order (n, y, x).
struct TapsWeightGradParams {
  Dtype dtype;
  int64_t N, C, H, W, K;
  int64_t ksize, stride;
  int64_t Ho, Wo;
  int64_t tap;
  int64_t c0, Cb, k0, Kb;
  const void* x;     // [N, H, W, C]
  const void* grad;  // [N, Ho, Wo, K]
  void* sums;        // [Cb, ld]
  int64_t ld;        // sums' row length
};

}  // namespace resnet_fast::cpu
