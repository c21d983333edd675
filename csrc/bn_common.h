// Device-independent parts of the fused BatchNorm ops: argument checks and
// the per-channel ([C]-sized) arithmetic around the kernels. Every backend's
// entry points share these so that errors and numerics match across them.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace resnet_fast {

// float for half/bfloat16/float, double for double.
at::ScalarType acc_type_of(const at::Tensor& input);

// Checks every argument of a BN forward before anything is touched: ranks,
// channel counts, dtypes, devices, the eval-mode running stats and the
// "more than 1 value per channel" rule of training.
void check_bn_forward(const at::Tensor& input, const std::optional<at::Tensor>& residual,
                      const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                      const std::optional<at::Tensor>& running_mean,
                      const std::optional<at::Tensor>& running_var, bool training);

// Checks a BN backward's tensors against its input.
void check_bn_backward(const at::Tensor& grad_out, const at::Tensor& input,
                       const std::optional<at::Tensor>& residual, const at::Tensor& save_mean,
                       const at::Tensor& save_invstd);

// Per-channel coefficients of out = (x - mean) * scale + bias, acc type, [C].
struct ChannelAffine {
  at::Tensor mean, invstd, scale, bias;
};

// Batch statistics (training, from mean and biased var) or running stats
// (eval), combined with the optional affine parameters.
ChannelAffine channel_affine(const at::Tensor& mean, const at::Tensor& invstd,
                             const std::optional<at::Tensor>& weight,
                             const std::optional<at::Tensor>& bias);

// 1 / sqrt(var + eps) in acc type.
at::Tensor invstd_from_var(const at::Tensor& var, double eps);

// running = (1 - momentum) * running + momentum * batch, with the unbiased
// variance, in the running tensors' own dtype. `count` = N * H * W > 1.
void update_running_stats(const std::optional<at::Tensor>& running_mean,
                          const std::optional<at::Tensor>& running_var, const at::Tensor& mean,
                          const at::Tensor& var, double momentum, int64_t count);

// A gradient for an optional parameter, in that parameter's dtype (acc type
// when the parameter is absent; autograd then drops it).
at::Tensor param_grad(const at::Tensor& grad_acc, const std::optional<at::Tensor>& param);

}  // namespace resnet_fast
