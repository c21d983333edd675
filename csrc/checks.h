// Device-independent argument checks of the fused ops. Every backend's entry
// points share them, so errors match across backends.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace resnet_fast {

// float32, float64, float16 or bfloat16.
bool is_supported_float(at::ScalarType t);

// `t` has the shape, dtype and device of `ref` (messages name both).
void check_same_as(const at::Tensor& t, const char* name, const at::Tensor& ref,
                   const char* ref_name);

// float for half/bfloat16/float, double for double.
at::ScalarType acc_type_of(const at::Tensor& input);

// input is [N, C, H, W] of a supported float dtype.
void check_bn_input(const at::Tensor& input);

// t is a [C] (C = input.size(1)) tensor of `dtype` on input's device.
void check_channel_stat(const at::Tensor& t, const char* name, const at::Tensor& input,
                        at::ScalarType dtype);

// weight, bias: [C] or absent, any supported float dtype; mean: [C] float64;
// invstd: [C] acc type (float, double for double input).
void check_affine_and_stats(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                            const std::optional<at::Tensor>& bias, const at::Tensor& mean,
                            const char* mean_name, const at::Tensor& invstd,
                            const char* invstd_name);

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

}  // namespace resnet_fast
