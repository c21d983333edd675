// The [C]-sized arithmetic around the CPU BN kernels, in plain loops: ATen
// ops on tensors this small cost more in dispatch than in arithmetic.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace resnet_fast::cpu {

// out = ((x - mean_hi) - mean_lo) * scale + bias: contiguous [C] CPU tensors
// of the acc type (float, or double for double inputs); mean_hi + mean_lo is
// the float64 mean (see kernels/params.h).
struct ChannelAffine {
  at::Tensor mean_hi, mean_lo, invstd, scale, bias;
};

// From the float64 mean and the acc-type invstd: scale = weight * invstd
// (invstd without weight), bias = bias or 0.
ChannelAffine channel_affine(const at::Tensor& mean, const at::Tensor& invstd,
                             const std::optional<at::Tensor>& weight,
                             const std::optional<at::Tensor>& bias);

// invstd = 1 / sqrt(var + eps) in `acc` from a float64 var.
at::Tensor invstd_from_var(const at::Tensor& var, double eps, at::ScalarType acc);

// running = (1 - momentum) * running + momentum * batch, with the unbiased
// variance (count = N * H * W > 1), from float64 batch statistics into the
// running tensors' own dtype.
void update_running_stats(const std::optional<at::Tensor>& running_mean,
                          const std::optional<at::Tensor>& running_var, const at::Tensor& mean,
                          const at::Tensor& var, double momentum, int64_t count);

// The grad-input coefficients: dx = a * g + b * (x - mean) + d, with
// a = scale; b and d are zero in eval, where the statistics are constants.
struct GradInputCoefs {
  at::Tensor a, b, d;
};
GradInputCoefs grad_input_coefs(const ChannelAffine& affine, const at::Tensor& sum_g,
                                const at::Tensor& sum_gx, bool training, int64_t count);

// grad_weight = sum_gx * invstd, grad_bias = sum_g, each in its parameter's
// dtype (acc type when the parameter is absent; autograd then drops it).
std::pair<at::Tensor, at::Tensor> param_grads(const ChannelAffine& affine, const at::Tensor& sum_g,
                                              const at::Tensor& sum_gx,
                                              const std::optional<at::Tensor>& weight,
                                              const std::optional<at::Tensor>& bias);

}  // namespace resnet_fast::cpu
