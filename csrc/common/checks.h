// Device-independent argument checks of the fused ops, one function per
// contract. The host code of every device shares them (csrc/ops/; the Python
// side of the same contracts, for fake kernels and the Python-declared
// backends, is resnet_fast/_ops/checks.py), so errors match across backends. They run before
// anything is written: an op that refuses leaves the running statistics as
// they were.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace resnet_fast {

// Whether an optional tensor argument is given (present and defined).
bool has(const std::optional<at::Tensor>& t);

// float32, float64, float16 or bfloat16.
bool is_supported_float(at::ScalarType t);

// float for half/bfloat16/float, double for double.
at::ScalarType acc_type_of(const at::Tensor& input);

// `t` (named `name`) has a supported float dtype.
void check_float(const at::Tensor& t, const char* name);

// `t` has the shape, dtype and device of `ref` (messages name both).
void check_same_as(const at::Tensor& t, const char* name, const at::Tensor& ref,
                   const char* ref_name);

// input is [N, C, H, W] of a supported float dtype.
void check_bn_input(const at::Tensor& input);

// An optional [C] vector (C = input.size(1)) of any supported float dtype on
// input's device: weight, bias, running statistics.
void check_channel_vector(const std::optional<at::Tensor>& t, const char* name,
                          const at::Tensor& input);

// t is a [C] (C = input.size(1)) tensor of exactly `dtype` on input's device:
// the statistics the ops save and exchange (float64 mean, acc-type invstd).
void check_channel_stat(const at::Tensor& t, const char* name, const at::Tensor& input,
                        at::ScalarType dtype);

// A finite, non-negative scalar (eps, momentum).
void check_finite_nonneg(const char* name, double value);

// running_mean / running_var: given together, required in evaluation mode,
// [C] float vectors; in training, where they are written, neither may
// overlap itself (an expanded view), the other, or any tensor the op reads
// (input, residual, weight, bias): the kernels would read values they have
// just overwritten.
void check_running_stats(const at::Tensor& input, const std::optional<at::Tensor>& residual,
                         const std::optional<at::Tensor>& weight,
                         const std::optional<at::Tensor>& bias,
                         const std::optional<at::Tensor>& running_mean,
                         const std::optional<at::Tensor>& running_var, bool training);

// weight, bias: [C] or absent, any supported float dtype; mean: [C] float64;
// invstd: [C] acc type (float, double for double input).
void check_affine_and_stats(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                            const std::optional<at::Tensor>& bias, const at::Tensor& mean,
                            const char* mean_name, const at::Tensor& invstd,
                            const char* invstd_name);

// Checks every argument of a BN forward before anything is touched: ranks,
// channel counts, dtypes, devices, eps and momentum, the running stats (see
// check_running_stats) and the "more than 1 value per channel" rule of
// training.
void check_bn_forward(const at::Tensor& input, const std::optional<at::Tensor>& residual,
                      const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                      const std::optional<at::Tensor>& running_mean,
                      const std::optional<at::Tensor>& running_var, bool training,
                      double momentum, double eps);

// Checks every argument of a BN backward against its input: grad_out and
// residual like input, weight and bias [C] vectors, save_mean [C] float64,
// save_invstd [C] acc type.
void check_bn_backward(const at::Tensor& grad_out, const at::Tensor& input,
                       const std::optional<at::Tensor>& residual,
                       const std::optional<at::Tensor>& weight,
                       const std::optional<at::Tensor>& bias, const at::Tensor& save_mean,
                       const at::Tensor& save_invstd);

// An elementwise pair (add_relu): `primary` of a supported float dtype (any
// rank), `other` of its shape, dtype and device.
void check_elementwise_pair(const at::Tensor& primary, const char* primary_name,
                            const at::Tensor& other, const char* other_name);

}  // namespace resnet_fast
