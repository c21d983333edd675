// The CPU kernels of one ISA build (kernels_impl.h, compiled once per
// capability by capability_*.cpp), over the params of
// common/kernel_params.h with one split per reduction; the CPU kernel table
// (csrc/cpu/bn_kernels_cpu.cpp) wraps them. No ATen types here: inline ATen
// functions compiled for one ISA must not leak into the others.
#pragma once

#include "../../common/kernel_params.h"
#include "taps_params.h"
#include "winograd_params.h"

namespace resnet_fast::cpu {

// The rows of a coefficient table (CoefRow) that the CPU kernels read, [C]
// acc type each (the params' own `coefs` are not read): the table's rows,
// except where two rows are known to hold the same values (see GradRows in
// csrc/cpu/bn_kernels_cpu.cpp).
struct AffineRows {
  const void* mean_hi;
  const void* mean_lo;
  const void* scale;
  const void* shift;
};
struct GradRows {
  AffineRows affine;
  const void* a;
  const void* b;
  const void* d;
};

struct IsaKernels {
  const char* name;
  // Writes the [3][1][C] statistics partials (count, mean, M2).
  void (*bn_stats)(const StatsParams&);
  void (*bn_apply)(const ApplyParams&, const AffineRows& coefs);
  // Writes the [2][1][C] sums partials (and grad_residual); `coefs` are the
  // forward's coefficients, which the CUDA kernel recomputes per block from
  // p.saved instead.
  void (*bn_backward_reduce)(const BackwardReduceParams&, const AffineRows& coefs);
  void (*bn_backward_apply)(const BackwardApplyParams&, const GradRows& coefs);
  void (*add_relu)(const AddReluParams&);
  void (*relu_backward)(const ReluBackwardParams&);
  void (*winograd_input)(const WinogradInputParams&);
  void (*winograd_products)(const WinogradProductParams&);
  void (*winograd_output)(const WinogradOutputParams&);
  void (*taps_conv)(const TapsConvParams&);
  void (*taps_weight_grad)(const TapsWeightGradParams&);
};

// Each returns nullptr when that build is not compiled in.
const IsaKernels* kernels_default();
const IsaKernels* kernels_avx2();
const IsaKernels* kernels_avx512();

}  // namespace resnet_fast::cpu
