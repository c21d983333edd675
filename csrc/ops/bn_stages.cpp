// Host code of the BN stage ops (bn_stats, bn_apply, bn_act_bwd_reduce,
// bn_add_act_bwd_reduce, bn_bwd_apply) on every device: the passes of
// bn_act_* / bn_add_act_* (bn_fused.cpp) as separate ops, so that a caller
// can combine statistics and gradient sums across processes between them
// (resnet_fast.distributed). They run the fused ops' kernels; only the
// [C]-sized steps between them differ: the statistics or the sums are
// written out instead of consumed, and the apply coefficients come from the
// statistics the caller gives.
//
// Kernel calls per op:
//   bn_stats:          stats, finalize_forward (statistics only)
//   bn_apply:          given_coefs, apply
//   bn_*_bwd_reduce:   backward_reduce, finalize_backward (sums only)
//   bn_bwd_apply:      given_coefs, backward_apply
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>

#include "../common/checks.h"
#include "../common/tensor_geometry.h"
#include "bn_steps.h"
#include "kernels_for.h"
#include "op_families.h"

namespace resnet_fast {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

// Returns (mean, var): [C] float64, var biased; zeros for an empty batch.
std::tuple<Tensor, Tensor> bn_stats(const Tensor& input_) {
  check_bn_input(input_);
  const c10::OptionalDeviceGuard guard(input_.device());
  const BnKernels& k = kernels_for(input_);
  Tensor input = input_;  // [N, C, H, W]
  const int64_t C = input.size(1), count = input.numel() / std::max<int64_t>(C, 1);
  Tensor mean = at::zeros({C}, input.options().dtype(at::kDouble));
  Tensor var = at::zeros({C}, input.options().dtype(at::kDouble));
  if (input.numel() == 0) return {mean, var};
  const Layout layout = harmonize_layout(input, {});
  const Partials stats = statistics_partials(k, input, geometry_of(input, layout));

  FinalizeForwardParams fp{};
  fp.C = C;
  fp.training = true;
  fp.partials = stats.get();
  fp.splits = stats.splits;
  fp.count = count;
  fp.acc_double = acc_type_of(input) == at::kDouble;
  fp.save_mean = mean.mutable_data_ptr<double>();
  fp.batch_var = var.mutable_data_ptr<double>();
  check_kernel(k.finalize_forward(fp), "bn_finalize_forward");
  return {mean, var};
}

// The apply coefficients of the given statistics: [4][C] acc type, or [7][C]
// with the grad-input rows when mean_g and mean_gx are defined.
Tensor given_coefs(const BnKernels& k, const Tensor& input, const SavedStats& saved,
                   const Tensor& mean_g, const Tensor& mean_gx) {
  const int64_t C = input.size(1);
  const auto acc = acc_type_of(input);
  const bool grad = mean_g.defined();
  Tensor coefs = at::empty({grad ? kGradCoefRows : kApplyCoefRows, C}, input.options().dtype(acc));
  const GivenCoefsParams p{C,
                           acc == at::kDouble,
                           saved,
                           grad ? mean_g.const_data_ptr() : nullptr,
                           grad ? mean_gx.const_data_ptr() : nullptr,
                           coefs.mutable_data_ptr()};
  check_kernel(k.given_coefs(p), "bn_given_coefs");
  return coefs;
}

// out = act((input - mean) * invstd * weight + bias [+ residual]).
Tensor bn_apply(const Tensor& input_, const OptTensor& residual_, const OptTensor& weight,
                const OptTensor& bias, const Tensor& mean_, const Tensor& invstd_, bool relu) {
  check_bn_input(input_);
  if (has(residual_)) check_same_as(*residual_, "residual", input_, "input");
  check_affine_and_stats(input_, weight, bias, mean_, "mean", invstd_, "invstd");
  const c10::OptionalDeviceGuard guard(input_.device());
  const BnKernels& k = kernels_for(input_);
  Tensor input = input_;  // [N, C, H, W]
  Tensor residual = has(residual_) ? *residual_ : Tensor();
  const Layout layout = harmonize_layout(input, {&residual});
  Tensor out = empty_for(input, layout);
  if (input.numel() == 0) return out;
  const Tensor mean = mean_.contiguous(), invstd = invstd_.contiguous();
  const Tensor coefs =
      given_coefs(k, input, saved_stats(mean, invstd, weight, bias), Tensor(), Tensor());
  run_apply(k, geometry_of(input, layout), input, residual, coefs, out, relu);
  return out;
}

// Returns (sum_g, sum_gx, grad_residual or undefined): with g = grad_out *
// [pre > 0] under relu, sum_g = sum g and sum_gx = sum g * (input - mean) over
// (N, H, W), [C] acc type; grad_residual = g when there is a residual.
std::tuple<Tensor, Tensor, Tensor> bwd_reduce(const Tensor& grad_out_, const Tensor& input_,
                                              const OptTensor& residual_, const OptTensor& weight,
                                              const OptTensor& bias, const Tensor& mean_,
                                              const Tensor& invstd_, bool relu) {
  check_bn_input(input_);
  check_same_as(grad_out_, "grad_out", input_, "input");
  if (has(residual_)) check_same_as(*residual_, "residual", input_, "input");
  check_affine_and_stats(input_, weight, bias, mean_, "mean", invstd_, "invstd");
  const c10::OptionalDeviceGuard guard(input_.device());
  const BnKernels& k = kernels_for(input_);
  Tensor input = input_, grad_out = grad_out_;  // [N, C, H, W]
  Tensor residual = has(residual_) ? *residual_ : Tensor();
  const Layout layout = harmonize_layout(input, {&grad_out, &residual});
  const int64_t C = input.size(1);
  const auto acc = acc_type_of(input);
  Tensor sum_g = at::zeros({C}, input.options().dtype(acc));
  Tensor sum_gx = at::zeros({C}, input.options().dtype(acc));
  Tensor grad_residual = residual.defined() ? empty_for(input, layout) : Tensor();
  if (input.numel() == 0) return {sum_g, sum_gx, grad_residual};
  const Tensor mean = mean_.contiguous(), invstd = invstd_.contiguous();
  const SavedStats saved = saved_stats(mean, invstd, weight, bias);
  const Partials sums = backward_partials(k, geometry_of(input, layout), grad_out, input, residual,
                                          saved, relu, grad_residual);

  FinalizeBackwardParams fp{};
  fp.C = C;
  fp.training = true;
  fp.partials = sums.get();
  fp.splits = sums.splits;
  fp.acc_double = acc == at::kDouble;
  fp.sum_g = sum_g.mutable_data_ptr();
  fp.sum_gx = sum_gx.mutable_data_ptr();
  check_kernel(k.finalize_backward(fp), "bn_finalize_backward");
  return {sum_g, sum_gx, grad_residual};
}

std::tuple<Tensor, Tensor> bn_act_bwd_reduce(const Tensor& grad_out, const Tensor& input,
                                             const OptTensor& weight, const OptTensor& bias,
                                             const Tensor& mean, const Tensor& invstd, bool relu) {
  auto [sum_g, sum_gx, unused] =
      bwd_reduce(grad_out, input, std::nullopt, weight, bias, mean, invstd, relu);
  return {sum_g, sum_gx};
}

std::tuple<Tensor, Tensor, Tensor> bn_add_act_bwd_reduce(
    const Tensor& grad_out, const Tensor& input, const Tensor& residual, const OptTensor& weight,
    const OptTensor& bias, const Tensor& mean, const Tensor& invstd, bool relu) {
  return bwd_reduce(grad_out, input, residual, weight, bias, mean, invstd, relu);
}

// grad_input = scale * (g - mean_g - (input - mean) * invstd^2 * mean_gx),
// scale = weight * invstd, where g = grad * [pre > 0] when relu_mask (the
// mask recomputed from input as in the forward) and g = grad otherwise (grad
// already masked: the grad_residual of bn_add_act_bwd_reduce). mean_g and
// mean_gx are sum_g and sum_gx over the whole batch divided by its count.
Tensor bn_bwd_apply(const Tensor& grad_, const Tensor& input_, const OptTensor& weight,
                    const OptTensor& bias, const Tensor& mean_, const Tensor& invstd_,
                    const Tensor& mean_g, const Tensor& mean_gx, bool relu_mask) {
  check_bn_input(input_);
  check_same_as(grad_, "grad", input_, "input");
  check_affine_and_stats(input_, weight, bias, mean_, "mean", invstd_, "invstd");
  const auto acc = acc_type_of(input_);
  check_channel_stat(mean_g, "mean_g", input_, acc);
  check_channel_stat(mean_gx, "mean_gx", input_, acc);
  const c10::OptionalDeviceGuard guard(input_.device());
  const BnKernels& k = kernels_for(input_);
  Tensor input = input_, grad = grad_;  // [N, C, H, W]
  const Layout layout = harmonize_layout(input, {&grad});
  Tensor grad_input = empty_for(input, layout);
  if (input.numel() == 0) return grad_input;
  const Tensor mean = mean_.contiguous(), invstd = invstd_.contiguous();
  const Tensor coefs = given_coefs(k, input, saved_stats(mean, invstd, weight, bias),
                                   mean_g.contiguous(), mean_gx.contiguous());
  run_backward_apply(k, geometry_of(input, layout), grad, input, coefs, grad_input, relu_mask);
  return grad_input;
}

}  // namespace

void register_bn_stages(torch::Library& m) {
  m.impl("bn_stats", &bn_stats);
  m.impl("bn_apply", &bn_apply);
  m.impl("bn_act_bwd_reduce", &bn_act_bwd_reduce);
  m.impl("bn_add_act_bwd_reduce", &bn_add_act_bwd_reduce);
  m.impl("bn_bwd_apply", &bn_bwd_apply);
}

}  // namespace resnet_fast
