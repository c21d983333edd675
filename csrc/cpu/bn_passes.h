// The full-tensor passes of the CPU BatchNorm ops, shared by the fused ops
// (bn_act.cpp) and the stage ops (bn_stages.cpp): each fills one kernel's
// params from tensors already walkable with `layout` (see harmonize_layout)
// and runs it. An undefined `residual` means none.
#pragma once

#include <ATen/ATen.h>

#include "channel_math.h"
#include "kernels/params.h"

namespace resnet_fast::cpu {

// Per-channel batch mean and biased variance of input into [C] float64 mean, var.
void run_stats(const at::Tensor& input, Layout layout, at::Tensor& mean, at::Tensor& var);

// out = act((input - mean) * scale + bias [+ residual]).
void run_apply(const at::Tensor& input, const at::Tensor& residual, Layout layout,
               const ChannelAffine& affine, at::Tensor& out, bool relu);

// sum_g += g, sum_gx += g * (input - mean) over (N, H, W), g = grad_out masked
// by the recomputed ReLU under relu; grad_residual = g when there is a residual.
void run_backward_reduce(const at::Tensor& grad_out, const at::Tensor& input,
                         const at::Tensor& residual, Layout layout, const ChannelAffine& affine,
                         at::Tensor& sum_g, at::Tensor& sum_gx, at::Tensor& grad_residual,
                         bool relu);

// grad_input = a * g + b * (input - mean) + d, g = grad masked by the
// recomputed ReLU when relu_mask.
void run_backward_apply(const at::Tensor& grad, const at::Tensor& input, Layout layout,
                        const ChannelAffine& affine, const GradInputCoefs& coefs,
                        at::Tensor& grad_input, bool relu_mask);

}  // namespace resnet_fast::cpu
