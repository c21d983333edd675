// Host code of the fused BatchNorm ops, bn_act_* and bn_add_act_*, on every
// device: checks, device guard, layout, allocation, then the device's kernel
// table (kernels_for.h). Also the reduction steps the stage ops share
// (bn_steps.h).
//
// Kernel calls per op:
//   forward, training: stats, finalize_forward, apply
//   forward, eval:     finalize_forward, apply
//   backward:          backward_reduce, finalize_backward, backward_apply
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

using at::Tensor;
using OptTensor = std::optional<Tensor>;

Partials statistics_partials(const BnKernels& k, const Tensor& input, const Geometry& g) {
  StatsParams p{g, input.const_data_ptr(), strides_of(input), nullptr};
  const ReductionPlan plan = k.plan_stats(p);
  Partials out{at::empty({3 * plan.splits * g.C}, input.options().dtype(at::kDouble)),
               plan.splits};
  p.partials = out.data.mutable_data_ptr<double>();
  check_kernel(k.stats(p, plan), "bn_stats");
  return out;
}

SavedStats saved_stats(const Tensor& save_mean, const Tensor& save_invstd, const OptTensor& weight,
                       const OptTensor& bias) {
  return {save_mean.const_data_ptr<double>(), save_invstd.const_data_ptr(),
          channel_vector(weight), channel_vector(bias)};
}

Partials backward_partials(const BnKernels& k, const Geometry& g, const Tensor& grad_out,
                           const Tensor& input, const Tensor& residual, const SavedStats& saved,
                           bool relu, Tensor& grad_residual) {
  BackwardReduceParams p{g,
                         grad_out.const_data_ptr(),
                         strides_of(grad_out),
                         input.const_data_ptr(),
                         strides_of(input),
                         data_or_null(residual),
                         strides_or_none(residual),
                         saved,
                         relu,
                         nullptr,
                         grad_residual.defined() ? grad_residual.mutable_data_ptr() : nullptr,
                         strides_or_none(grad_residual)};
  const ReductionPlan plan = k.plan_backward_reduce(p);
  Partials out{at::empty({2 * plan.splits * g.C}, input.options().dtype(at::kDouble)),
               plan.splits};
  p.partials = out.data.mutable_data_ptr<double>();
  check_kernel(k.backward_reduce(p, plan), "bn_backward_reduce");
  return out;
}

void run_apply(const BnKernels& k, const Geometry& g, const Tensor& input, const Tensor& residual,
               const Tensor& coefs, Tensor& out, bool relu) {
  const ApplyParams p{g,
                      input.const_data_ptr(),
                      strides_of(input),
                      data_or_null(residual),
                      strides_or_none(residual),
                      coefs.const_data_ptr(),
                      out.mutable_data_ptr(),
                      strides_of(out),
                      relu};
  check_kernel(k.apply(p), "bn_apply");
}

void run_backward_apply(const BnKernels& k, const Geometry& g, const Tensor& gsrc,
                        const Tensor& input, const Tensor& coefs, Tensor& grad_input,
                        bool mask_from_x) {
  const BackwardApplyParams p{g,
                              gsrc.const_data_ptr(),
                              strides_of(gsrc),
                              input.const_data_ptr(),
                              strides_of(input),
                              coefs.const_data_ptr(),
                              grad_input.mutable_data_ptr(),
                              strides_of(grad_input),
                              mask_from_x};
  check_kernel(k.backward_apply(p), "bn_backward_apply");
}

namespace {

// Returns (out, save_mean, save_invstd): [C] float64 mean and acc-type invstd,
// of the batch in training, of the running statistics in eval.
std::tuple<Tensor, Tensor, Tensor> bn_forward(const Tensor& input_, const OptTensor& residual_,
                                              const OptTensor& weight, const OptTensor& bias,
                                              const OptTensor& running_mean,
                                              const OptTensor& running_var, bool training,
                                              double momentum, double eps, bool relu) {
  check_bn_forward(input_, residual_, weight, bias, running_mean, running_var, training, momentum,
                   eps);
  const c10::OptionalDeviceGuard guard(input_.device());
  const BnKernels& k = kernels_for(input_);
  Tensor input = input_;  // [N, C, H, W]
  Tensor residual = has(residual_) ? *residual_ : Tensor();
  const Layout layout = harmonize_layout(input, {&residual});
  Tensor out = empty_for(input, layout);

  const int64_t C = input.size(1), count = input.numel() / std::max<int64_t>(C, 1);
  const auto acc = acc_type_of(input);
  Tensor save_mean = at::empty({C}, input.options().dtype(at::kDouble));
  Tensor save_invstd = at::empty({C}, input.options().dtype(acc));
  Tensor coefs = at::empty({kApplyCoefRows, C}, input.options().dtype(acc));
  if (C == 0) return {out, save_mean, save_invstd};
  const Geometry geom = geometry_of(input, layout);
  const Partials stats = training && count > 0 ? statistics_partials(k, input, geom) : Partials{};

  FinalizeForwardParams fp{};
  fp.C = C;
  fp.training = training;
  fp.partials = stats.get();
  fp.splits = stats.splits;
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
  check_kernel(k.finalize_forward(fp), "bn_finalize_forward");
  if (training && count > 0 && has(running_mean)) {
    // Written by a kernel, not by an ATen op: tell autograd and caches
    // (Tensor._version) that the buffers changed.
    running_mean->unsafeGetTensorImpl()->bump_version();
    running_var->unsafeGetTensorImpl()->bump_version();
  }

  if (input.numel() > 0) run_apply(k, geom, input, residual, coefs, out, relu);
  return {out, save_mean, save_invstd};
}

// Returns (grad_input, grad_residual or undefined, grad_weight, grad_bias).
std::tuple<Tensor, Tensor, Tensor, Tensor> bn_backward(
    const Tensor& grad_out_, const Tensor& input_, const OptTensor& residual_,
    const OptTensor& weight, const OptTensor& bias, const Tensor& save_mean_,
    const Tensor& save_invstd_, bool training, bool relu) {
  check_bn_backward(grad_out_, input_, residual_, weight, bias, save_mean_, save_invstd_);
  const c10::OptionalDeviceGuard guard(input_.device());
  const BnKernels& k = kernels_for(input_);
  Tensor input = input_, grad_out = grad_out_;  // [N, C, H, W]
  Tensor residual = has(residual_) ? *residual_ : Tensor();
  const Tensor save_mean = save_mean_.contiguous(), save_invstd = save_invstd_.contiguous();
  const Layout layout = harmonize_layout(input, {&grad_out, &residual});

  const int64_t C = input.size(1), count = input.numel() / std::max<int64_t>(C, 1);
  const auto acc = acc_type_of(input);
  Tensor grad_input = empty_for(input, layout);
  Tensor grad_residual = residual.defined() ? empty_for(input, layout) : Tensor();
  // Each in its parameter's dtype (acc type when absent; autograd drops it).
  const auto dtype_of_param = [&](const OptTensor& t) { return has(t) ? t->scalar_type() : acc; };
  Tensor grad_weight = at::empty({C}, input.options().dtype(dtype_of_param(weight)));
  Tensor grad_bias = at::empty({C}, input.options().dtype(dtype_of_param(bias)));
  if (C == 0) return {grad_input, grad_residual, grad_weight, grad_bias};
  const Geometry geom = geometry_of(input, layout);
  const SavedStats saved = saved_stats(save_mean, save_invstd, weight, bias);
  const Partials sums = input.numel() > 0 ? backward_partials(k, geom, grad_out, input, residual,
                                                              saved, relu, grad_residual)
                                          : Partials{};

  Tensor coefs = at::empty({kGradCoefRows, C}, input.options().dtype(acc));
  FinalizeBackwardParams fp{};
  fp.C = C;
  fp.training = training;
  fp.partials = sums.get();
  fp.splits = sums.splits;
  fp.saved = saved;
  fp.count = count;
  fp.acc_double = acc == at::kDouble;
  fp.grad_weight = grad_weight.mutable_data_ptr();
  fp.grad_weight_dtype = dtype_of(grad_weight.scalar_type());
  fp.grad_bias = grad_bias.mutable_data_ptr();
  fp.grad_bias_dtype = dtype_of(grad_bias.scalar_type());
  fp.coefs = coefs.mutable_data_ptr();
  check_kernel(k.finalize_backward(fp), "bn_finalize_backward");

  if (input.numel() > 0) {
    // With a residual the reduce pass wrote g = dy * mask into grad_residual:
    // the grad-input reads it instead of dy, and needs no mask.
    const Tensor& gsrc = residual.defined() ? grad_residual : grad_out;
    run_backward_apply(k, geom, gsrc, input, coefs, grad_input, relu && !residual.defined());
  }
  return {grad_input, grad_residual, grad_weight, grad_bias};
}

std::tuple<Tensor, Tensor, Tensor> bn_act_fwd(const Tensor& input, const OptTensor& weight,
                                              const OptTensor& bias, const OptTensor& running_mean,
                                              const OptTensor& running_var, bool training,
                                              double momentum, double eps, bool relu) {
  return bn_forward(input, std::nullopt, weight, bias, running_mean, running_var, training,
                    momentum, eps, relu);
}

std::tuple<Tensor, Tensor, Tensor> bn_add_act_fwd(const Tensor& input, const Tensor& residual,
                                                  const OptTensor& weight, const OptTensor& bias,
                                                  const OptTensor& running_mean,
                                                  const OptTensor& running_var, bool training,
                                                  double momentum, double eps, bool relu) {
  return bn_forward(input, residual, weight, bias, running_mean, running_var, training, momentum,
                    eps, relu);
}

std::tuple<Tensor, Tensor, Tensor> bn_act_bwd(const Tensor& grad_out, const Tensor& input,
                                              const OptTensor& weight, const OptTensor& bias,
                                              const Tensor& save_mean, const Tensor& save_invstd,
                                              bool training, bool relu) {
  auto [gi, gr, gw, gb] = bn_backward(grad_out, input, std::nullopt, weight, bias, save_mean,
                                      save_invstd, training, relu);
  return {gi, gw, gb};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> bn_add_act_bwd(
    const Tensor& grad_out, const Tensor& input, const Tensor& residual, const OptTensor& weight,
    const OptTensor& bias, const Tensor& save_mean, const Tensor& save_invstd, bool training,
    bool relu) {
  return bn_backward(grad_out, input, residual, weight, bias, save_mean, save_invstd, training,
                     relu);
}

}  // namespace

void register_bn_fused(torch::Library& m) {
  m.impl("bn_act_fwd", &bn_act_fwd);
  m.impl("bn_act_bwd", &bn_act_bwd);
  m.impl("bn_add_act_fwd", &bn_add_act_fwd);
  m.impl("bn_add_act_bwd", &bn_add_act_bwd);
}

}  // namespace resnet_fast
