// CUDA entry points of the fused BatchNorm ops: bn_act_* and bn_add_act_*.
// Checks, device guard, layout, then the launchers of kernels/ on the current
// stream, each launch checked.
//
// Launches per call:
//   forward, training: bn_stats, bn_finalize_forward, bn_apply
//   forward, eval:     bn_finalize_forward, bn_apply
//   backward:          bn_backward_reduce, bn_finalize_backward, bn_backward_apply
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

// Returns (out, save_mean, save_invstd): [C] float64 mean and acc-type invstd,
// of the batch in training, of the running statistics in eval.
std::tuple<Tensor, Tensor, Tensor> bn_forward(const Tensor& input_, const OptTensor& residual_,
                                              const OptTensor& weight, const OptTensor& bias,
                                              const OptTensor& running_mean,
                                              const OptTensor& running_var, bool training,
                                              double momentum, double eps, bool relu) {
  check_bn_forward(input_, residual_, weight, bias, running_mean, running_var, training, momentum,
                   eps);
  const c10::cuda::CUDAGuard guard(input_.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  Tensor input = input_;  // [N, C, H, W]
  Tensor residual = has(residual_) ? *residual_ : Tensor();
  const Layout layout = harmonize_layout(input, {&residual});
  Tensor out = empty_for(input, layout);

  const int64_t C = input.size(1), count = input.numel() / std::max<int64_t>(C, 1);
  const auto acc = acc_type_of(input);
  const auto channels = input.options().dtype(acc);
  Tensor save_mean = at::empty({C}, input.options().dtype(at::kDouble));
  Tensor save_invstd = at::empty({C}, channels);
  Tensor coefs = at::empty({4, C}, channels);  // mean_hi, mean_lo, scale, shift
  if (C == 0) return {out, save_mean, save_invstd};
  const Geometry geom = geometry_of(input, layout);

  Tensor partials;
  int splits = 0;
  if (training && count > 0) {
    StatsParams sp{geom, input.const_data_ptr(), strides_of(input), nullptr};
    const ReductionPlan plan = plan_bn_stats(sp);
    partials = at::empty({3 * plan.splits * C}, input.options().dtype(at::kDouble));
    sp.partials = partials.mutable_data_ptr<double>();
    RESNET_FAST_LAUNCH_CHECK(launch_bn_stats(sp, plan, stream));
    splits = plan.splits;
  }

  FinalizeForwardParams fp{};
  fp.C = C;
  fp.training = training;
  fp.partials = partials.defined() ? partials.const_data_ptr<double>() : nullptr;
  fp.splits = splits;
  fp.weight = channel_vector(weight);
  fp.bias = channel_vector(bias);
  fp.running_mean = mutable_channel_vector(running_mean);
  fp.running_var = mutable_channel_vector(running_var);
  fp.momentum = momentum;
  fp.eps = eps;
  fp.count = count;
  fp.acc_double = acc == at::kDouble;
  fp.save_mean = save_mean.mutable_data_ptr<double>();
  fp.save_invstd = save_invstd.mutable_data_ptr();
  fp.coefs = coefs.mutable_data_ptr();
  RESNET_FAST_LAUNCH_CHECK(launch_bn_finalize_forward(fp, stream));
  if (training && count > 0 && has(running_mean)) {
    // Written by a kernel, not by an ATen op: tell autograd and caches.
    running_mean->unsafeGetTensorImpl()->bump_version();
    running_var->unsafeGetTensorImpl()->bump_version();
  }

  if (input.numel() > 0) {
    ApplyParams ap{geom,
                   input.const_data_ptr(),
                   strides_of(input),
                   residual.defined() ? residual.const_data_ptr() : nullptr,
                   residual.defined() ? strides_of(residual) : Strides{},
                   coefs.const_data_ptr(),
                   out.mutable_data_ptr(),
                   strides_of(out),
                   relu};
    RESNET_FAST_LAUNCH_CHECK(launch_bn_apply(ap, stream));
  }
  return {out, save_mean, save_invstd};
}

// Returns (grad_input, grad_residual or undefined, grad_weight, grad_bias).
std::tuple<Tensor, Tensor, Tensor, Tensor> bn_backward(
    const Tensor& grad_out_, const Tensor& input_, const OptTensor& residual_,
    const OptTensor& weight, const OptTensor& bias, const Tensor& save_mean_,
    const Tensor& save_invstd_, bool training, bool relu) {
  check_bn_backward(grad_out_, input_, residual_, weight, bias, save_mean_, save_invstd_);
  const c10::cuda::CUDAGuard guard(input_.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  Tensor input = input_, grad_out = grad_out_;  // [N, C, H, W]
  Tensor residual = has(residual_) ? *residual_ : Tensor();
  const Tensor save_mean = save_mean_.contiguous(), save_invstd = save_invstd_.contiguous();
  const Layout layout = harmonize_layout(input, {&grad_out, &residual});

  const int64_t C = input.size(1), count = input.numel() / std::max<int64_t>(C, 1);
  const auto acc = acc_type_of(input);
  Tensor grad_input = empty_for(input, layout);
  Tensor grad_residual = residual.defined() ? empty_for(input, layout) : Tensor();
  Tensor grad_weight = at::empty({C}, input.options().dtype(has(weight) ? weight->scalar_type() : acc));
  Tensor grad_bias = at::empty({C}, input.options().dtype(has(bias) ? bias->scalar_type() : acc));
  if (C == 0) return {grad_input, grad_residual, grad_weight, grad_bias};
  const Geometry geom = geometry_of(input, layout);
  const SavedStats saved{save_mean.const_data_ptr<double>(), save_invstd.const_data_ptr(),
                         channel_vector(weight), channel_vector(bias)};

  Tensor partials;
  int splits = 0;
  if (input.numel() > 0) {
    BackwardReduceParams rp{geom,
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
    partials = at::empty({2 * plan.splits * C}, input.options().dtype(at::kDouble));
    rp.partials = partials.mutable_data_ptr<double>();
    RESNET_FAST_LAUNCH_CHECK(launch_bn_backward_reduce(rp, plan, stream));
    splits = plan.splits;
  }

  Tensor coefs = at::empty({7, C}, input.options().dtype(acc));
  FinalizeBackwardParams fp{};
  fp.C = C;
  fp.training = training;
  fp.partials = partials.defined() ? partials.const_data_ptr<double>() : nullptr;
  fp.splits = splits;
  fp.saved = saved;
  fp.count = count;
  fp.acc_double = acc == at::kDouble;
  fp.grad_weight = grad_weight.mutable_data_ptr();
  fp.grad_weight_dtype = dtype_of(grad_weight.scalar_type());
  fp.grad_bias = grad_bias.mutable_data_ptr();
  fp.grad_bias_dtype = dtype_of(grad_bias.scalar_type());
  fp.coefs = coefs.mutable_data_ptr();
  RESNET_FAST_LAUNCH_CHECK(launch_bn_finalize_backward(fp, stream));

  if (input.numel() > 0) {
    // With a residual the reduce pass wrote g = dy * mask into grad_residual:
    // the grad-input reads it instead of dy, and needs no mask.
    const Tensor& gsrc = residual.defined() ? grad_residual : grad_out;
    BackwardApplyParams ap{geom,
                           gsrc.const_data_ptr(),
                           strides_of(gsrc),
                           input.const_data_ptr(),
                           strides_of(input),
                           coefs.const_data_ptr(),
                           grad_input.mutable_data_ptr(),
                           strides_of(grad_input),
                           relu && !residual.defined()};
    RESNET_FAST_LAUNCH_CHECK(launch_bn_backward_apply(ap, stream));
  }
  return {grad_input, grad_residual, grad_weight, grad_bias};
}

std::tuple<Tensor, Tensor, Tensor> bn_act_fwd_cuda(const Tensor& input, const OptTensor& weight,
                                                   const OptTensor& bias,
                                                   const OptTensor& running_mean,
                                                   const OptTensor& running_var, bool training,
                                                   double momentum, double eps, bool relu) {
  return bn_forward(input, std::nullopt, weight, bias, running_mean, running_var, training,
                    momentum, eps, relu);
}

std::tuple<Tensor, Tensor, Tensor> bn_add_act_fwd_cuda(
    const Tensor& input, const Tensor& residual, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& running_mean, const OptTensor& running_var, bool training, double momentum,
    double eps, bool relu) {
  return bn_forward(input, residual, weight, bias, running_mean, running_var, training, momentum,
                    eps, relu);
}

std::tuple<Tensor, Tensor, Tensor> bn_act_bwd_cuda(const Tensor& grad_out, const Tensor& input,
                                                   const OptTensor& weight, const OptTensor& bias,
                                                   const Tensor& save_mean,
                                                   const Tensor& save_invstd, bool training,
                                                   bool relu) {
  auto [gi, gr, gw, gb] = bn_backward(grad_out, input, std::nullopt, weight, bias, save_mean,
                                      save_invstd, training, relu);
  return {gi, gw, gb};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> bn_add_act_bwd_cuda(
    const Tensor& grad_out, const Tensor& input, const Tensor& residual, const OptTensor& weight,
    const OptTensor& bias, const Tensor& save_mean, const Tensor& save_invstd, bool training,
    bool relu) {
  return bn_backward(grad_out, input, residual, weight, bias, save_mean, save_invstd, training,
                     relu);
}

}  // namespace

TORCH_LIBRARY_IMPL(resnet_fast, CUDA, m) {
  m.impl("bn_act_fwd", &bn_act_fwd_cuda);
  m.impl("bn_act_bwd", &bn_act_bwd_cuda);
  m.impl("bn_add_act_fwd", &bn_add_act_fwd_cuda);
  m.impl("bn_add_act_bwd", &bn_add_act_bwd_cuda);
}

}  // namespace resnet_fast::cuda
