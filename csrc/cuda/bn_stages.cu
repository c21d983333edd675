// CUDA entry points of the BN stage ops (bn_stats, bn_apply,
// bn_act_bwd_reduce, bn_add_act_bwd_reduce, bn_bwd_apply): the passes of
// bn_act_* / bn_add_act_* (bn_act.cu) as separate ops, with the contract of
// the CPU ones (cpu/bn_stages.cpp). They launch the fused ops' kernels; only
// the [C]-sized steps between them differ: the statistics or the sums are
// written out instead of consumed, and the apply coefficients come from the
// statistics the caller gives.
//
// Launches per call:
//   bn_stats:          bn_stats, bn_finalize_forward (statistics only)
//   bn_apply:          bn_given_coefs, bn_apply
//   bn_*_bwd_reduce:   bn_backward_reduce, bn_finalize_backward (sums only)
//   bn_bwd_apply:      bn_given_coefs, bn_backward_apply
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "../common/checks.h"
#include "cuda_utils.h"
#include "kernels/launch.h"

namespace resnet_fast::cuda {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

// Returns (mean, var): [C] float64, var biased; zeros for an empty batch.
std::tuple<Tensor, Tensor> bn_stats_cuda(const Tensor& input_) {
  check_bn_input(input_);
  const c10::cuda::CUDAGuard guard(input_.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  Tensor input = input_;  // [N, C, H, W]
  const int64_t C = input.size(1), count = input.numel() / std::max<int64_t>(C, 1);
  Tensor mean = at::zeros({C}, input.options().dtype(at::kDouble));
  Tensor var = at::zeros({C}, input.options().dtype(at::kDouble));
  if (input.numel() == 0) return {mean, var};
  const Layout layout = harmonize_layout(input, {});

  StatsParams sp{geometry_of(input, layout), input.const_data_ptr(), strides_of(input),
                 nullptr};
  const ReductionPlan plan = plan_bn_stats(sp);
  Tensor partials = at::empty({3 * plan.splits * C}, input.options().dtype(at::kDouble));
  sp.partials = partials.mutable_data_ptr<double>();
  RESNET_FAST_LAUNCH_CHECK(launch_bn_stats(sp, plan, stream));

  FinalizeForwardParams fp{};
  fp.C = C;
  fp.training = true;
  fp.partials = partials.const_data_ptr<double>();
  fp.splits = plan.splits;
  fp.count = count;
  fp.acc_double = acc_type_of(input) == at::kDouble;
  fp.save_mean = mean.mutable_data_ptr<double>();
  fp.batch_var = var.mutable_data_ptr<double>();
  RESNET_FAST_LAUNCH_CHECK(launch_bn_finalize_forward(fp, stream));
  return {mean, var};
}

// The apply coefficients of the given statistics: [4][C] acc type, or [7][C]
// with the grad-input ones when mean_g / mean_gx are given.
Tensor given_coefs(const Tensor& input, const SavedStats& saved, const Tensor& mean_g,
                   const Tensor& mean_gx, cudaStream_t stream) {
  const int64_t C = input.size(1);
  const auto acc = acc_type_of(input);
  const bool grad = mean_g.defined();
  Tensor coefs = at::empty({grad ? 7 : 4, C}, input.options().dtype(acc));
  GivenCoefsParams p{C,
                     acc == at::kDouble,
                     saved,
                     grad ? mean_g.const_data_ptr() : nullptr,
                     grad ? mean_gx.const_data_ptr() : nullptr,
                     coefs.mutable_data_ptr()};
  RESNET_FAST_LAUNCH_CHECK(launch_bn_given_coefs(p, stream));
  return coefs;
}

// out = act((input - mean) * invstd * weight + bias [+ residual]).
Tensor bn_apply_cuda(const Tensor& input_, const OptTensor& residual_, const OptTensor& weight,
                     const OptTensor& bias, const Tensor& mean_, const Tensor& invstd_,
                     bool relu) {
  check_bn_input(input_);
  if (has(residual_)) check_same_as(*residual_, "residual", input_, "input");
  check_affine_and_stats(input_, weight, bias, mean_, "mean", invstd_, "invstd");
  const c10::cuda::CUDAGuard guard(input_.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  Tensor input = input_;  // [N, C, H, W]
  Tensor residual = has(residual_) ? *residual_ : Tensor();
  const Layout layout = harmonize_layout(input, {&residual});
  Tensor out = empty_for(input, layout);
  if (input.numel() == 0) return out;
  const Tensor mean = mean_.contiguous(), invstd = invstd_.contiguous();
  const SavedStats saved{mean.const_data_ptr<double>(), invstd.const_data_ptr(),
                         channel_vector(weight), channel_vector(bias)};
  const Tensor coefs = given_coefs(input, saved, Tensor(), Tensor(), stream);
  ApplyParams ap{geometry_of(input, layout),
                 input.const_data_ptr(),
                 strides_of(input),
                 residual.defined() ? residual.const_data_ptr() : nullptr,
                 residual.defined() ? strides_of(residual) : Strides{},
                 coefs.const_data_ptr(),
                 out.mutable_data_ptr(),
                 strides_of(out),
                 relu};
  RESNET_FAST_LAUNCH_CHECK(launch_bn_apply(ap, stream));
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
  const c10::cuda::CUDAGuard guard(input_.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
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
  const SavedStats saved{mean.const_data_ptr<double>(), invstd.const_data_ptr(),
                         channel_vector(weight), channel_vector(bias)};

  BackwardReduceParams rp{geometry_of(input, layout),
                          grad_out.const_data_ptr(),
                          strides_of(grad_out),
                          input.const_data_ptr(),
                          strides_of(input),
                          residual.defined() ? residual.const_data_ptr() : nullptr,
                          residual.defined() ? strides_of(residual) : Strides{},
                          saved,
                          relu,
                          nullptr,
                          residual.defined() ? grad_residual.mutable_data_ptr() : nullptr,
                          residual.defined() ? strides_of(grad_residual) : Strides{}};
  const ReductionPlan plan = plan_bn_backward_reduce(rp);
  Tensor partials = at::empty({2 * plan.splits * C}, input.options().dtype(at::kDouble));
  rp.partials = partials.mutable_data_ptr<double>();
  RESNET_FAST_LAUNCH_CHECK(launch_bn_backward_reduce(rp, plan, stream));

  FinalizeBackwardParams fp{};
  fp.C = C;
  fp.training = true;
  fp.partials = partials.const_data_ptr<double>();
  fp.splits = plan.splits;
  fp.acc_double = acc == at::kDouble;
  fp.sum_g = sum_g.mutable_data_ptr();
  fp.sum_gx = sum_gx.mutable_data_ptr();
  RESNET_FAST_LAUNCH_CHECK(launch_bn_finalize_backward(fp, stream));
  return {sum_g, sum_gx, grad_residual};
}

std::tuple<Tensor, Tensor> bn_act_bwd_reduce_cuda(const Tensor& grad_out, const Tensor& input,
                                                  const OptTensor& weight, const OptTensor& bias,
                                                  const Tensor& mean, const Tensor& invstd,
                                                  bool relu) {
  auto [sum_g, sum_gx, unused] =
      bwd_reduce(grad_out, input, std::nullopt, weight, bias, mean, invstd, relu);
  return {sum_g, sum_gx};
}

std::tuple<Tensor, Tensor, Tensor> bn_add_act_bwd_reduce_cuda(
    const Tensor& grad_out, const Tensor& input, const Tensor& residual, const OptTensor& weight,
    const OptTensor& bias, const Tensor& mean, const Tensor& invstd, bool relu) {
  return bwd_reduce(grad_out, input, residual, weight, bias, mean, invstd, relu);
}

// grad_input = scale * (g - mean_g - (input - mean) * invstd^2 * mean_gx),
// scale = weight * invstd; g = grad * [pre > 0] when relu_mask, else grad
// (see cpu/bn_stages.cpp).
Tensor bn_bwd_apply_cuda(const Tensor& grad_, const Tensor& input_, const OptTensor& weight,
                         const OptTensor& bias, const Tensor& mean_, const Tensor& invstd_,
                         const Tensor& mean_g, const Tensor& mean_gx, bool relu_mask) {
  check_bn_input(input_);
  check_same_as(grad_, "grad", input_, "input");
  check_affine_and_stats(input_, weight, bias, mean_, "mean", invstd_, "invstd");
  const auto acc = acc_type_of(input_);
  check_channel_stat(mean_g, "mean_g", input_, acc);
  check_channel_stat(mean_gx, "mean_gx", input_, acc);
  const c10::cuda::CUDAGuard guard(input_.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  Tensor input = input_, grad = grad_;  // [N, C, H, W]
  const Layout layout = harmonize_layout(input, {&grad});
  Tensor grad_input = empty_for(input, layout);
  if (input.numel() == 0) return grad_input;
  const Tensor mean = mean_.contiguous(), invstd = invstd_.contiguous();
  const SavedStats saved{mean.const_data_ptr<double>(), invstd.const_data_ptr(),
                         channel_vector(weight), channel_vector(bias)};
  const Tensor coefs =
      given_coefs(input, saved, mean_g.contiguous(), mean_gx.contiguous(), stream);
  BackwardApplyParams ap{geometry_of(input, layout),
                         grad.const_data_ptr(),
                         strides_of(grad),
                         input.const_data_ptr(),
                         strides_of(input),
                         coefs.const_data_ptr(),
                         grad_input.mutable_data_ptr(),
                         strides_of(grad_input),
                         relu_mask};
  RESNET_FAST_LAUNCH_CHECK(launch_bn_backward_apply(ap, stream));
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(resnet_fast, CUDA, m) {
  m.impl("bn_stats", &bn_stats_cuda);
  m.impl("bn_apply", &bn_apply_cuda);
  m.impl("bn_act_bwd_reduce", &bn_act_bwd_reduce_cuda);
  m.impl("bn_add_act_bwd_reduce", &bn_add_act_bwd_reduce_cuda);
  m.impl("bn_bwd_apply", &bn_bwd_apply_cuda);
}

}  // namespace resnet_fast::cuda
