// The steps of the BN host code that the fused ops (bn_fused.cpp, which
// defines them) and the stage ops (bn_stages.cpp, their passes as separate
// ops) share: each runs one pass of the device's kernel table over tensors
// already walkable with g.layout (harmonize_layout) and checks its answer;
// the reductions also plan and allocate their partials.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "../common/bn_kernels.h"

namespace resnet_fast {

// The partial results of a reduction: [rows][splits][C] float64.
struct Partials {
  at::Tensor data;  // undefined: nothing reduced (splits == 0)
  int splits = 0;
  const double* get() const { return data.defined() ? data.const_data_ptr<double>() : nullptr; }
};

// The statistics partials [3][splits][C] (count, mean, M2) of `input`
// ([N, C, H, W], walkable with g.layout, N * H * W > 0).
Partials statistics_partials(const BnKernels& k, const at::Tensor& input, const Geometry& g);

// The forward's statistics and parameters as the backward kernels read them;
// save_mean and save_invstd contiguous.
SavedStats saved_stats(const at::Tensor& save_mean, const at::Tensor& save_invstd,
                       const std::optional<at::Tensor>& weight,
                       const std::optional<at::Tensor>& bias);

// The sums partials [2][splits][C] (sum_g, sum_gx) of the backward, and
// grad_residual = g when there is a residual. Operands walkable with
// g.layout; an undefined residual / grad_residual means none.
Partials backward_partials(const BnKernels& k, const Geometry& g, const at::Tensor& grad_out,
                           const at::Tensor& input, const at::Tensor& residual,
                           const SavedStats& saved, bool relu, at::Tensor& grad_residual);

// out = act(((input - mean_hi) - mean_lo) * scale + shift [+ residual]) with
// the [4][C] (or [7][C]) coefficient table `coefs`; an undefined residual
// means none.
void run_apply(const BnKernels& k, const Geometry& g, const at::Tensor& input,
               const at::Tensor& residual, const at::Tensor& coefs, at::Tensor& out, bool relu);

// grad_input = a * g + b * (input - mean) + d with the [7][C] table `coefs`;
// g = gsrc, times the ReLU mask recomputed from input when mask_from_x.
void run_backward_apply(const BnKernels& k, const Geometry& g, const at::Tensor& gsrc,
                        const at::Tensor& input, const at::Tensor& coefs,
                        at::Tensor& grad_input, bool mask_from_x);

}  // namespace resnet_fast
