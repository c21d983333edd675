// CPU entry points of the fused BatchNorm ops: bn_act_* and bn_add_act_*.
// Checks, layout, the [C]-sized arithmetic, then the kernels of cpu_kernels().
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "../common/checks.h"
#include "bn_passes.h"
#include "channel_math.h"
#include "cpu_kernels.h"
#include "../common/tensor_geometry.h"

namespace resnet_fast::cpu {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

bool has(const OptTensor& t) { return t.has_value() && t->defined(); }

// Returns (out, save_mean, save_invstd): [C] float64 mean and acc-type invstd,
// of the batch in training, of the running statistics in eval.
std::tuple<Tensor, Tensor, Tensor> bn_forward(const Tensor& input_, const OptTensor& residual_,
                                              const OptTensor& weight, const OptTensor& bias,
                                              const OptTensor& running_mean,
                                              const OptTensor& running_var, bool training,
                                              double momentum, double eps, bool relu) {
  check_bn_forward(input_, residual_, weight, bias, running_mean, running_var, training, momentum,
                   eps);
  Tensor input = input_;
  Tensor residual = has(residual_) ? *residual_ : Tensor();
  const auto acc = acc_type_of(input);
  const int64_t C = input.size(1), count = input.numel() / std::max<int64_t>(C, 1);
  const Layout layout = harmonize_layout(input, {&residual});
  Tensor out = empty_for(input, layout);

  Tensor mean, var;
  if (training) {
    mean = at::zeros({C}, input.options().dtype(at::kDouble));
    var = at::zeros({C}, input.options().dtype(at::kDouble));  // stay zero for an empty batch
    if (count > 0) {
      run_stats(input, layout, mean, var);
      update_running_stats(running_mean, running_var, mean, var, momentum, count);
    }
  } else {
    // A copy: outputs must not alias inputs.
    mean = running_mean->to(at::kDouble, /*non_blocking=*/false, /*copy=*/true).contiguous();
    var = running_var->to(at::kDouble).contiguous();
  }
  const Tensor invstd = invstd_from_var(var, eps, acc);
  if (input.numel() > 0) {
    run_apply(input, residual, layout, channel_affine(mean, invstd, weight, bias), out, relu);
  }
  return {out, mean, invstd};
}

// Returns (grad_input, grad_residual or undefined, grad_weight, grad_bias).
std::tuple<Tensor, Tensor, Tensor, Tensor> bn_backward(
    const Tensor& grad_out_, const Tensor& input_, const OptTensor& residual_,
    const OptTensor& weight, const OptTensor& bias, const Tensor& save_mean,
    const Tensor& save_invstd, bool training, bool relu) {
  check_bn_backward(grad_out_, input_, residual_, weight, bias, save_mean, save_invstd);
  Tensor input = input_, grad_out = grad_out_;
  Tensor residual = has(residual_) ? *residual_ : Tensor();
  const int64_t C = input.size(1), count = input.numel() / std::max<int64_t>(C, 1);
  const Layout layout = harmonize_layout(input, {&grad_out, &residual});
  const ChannelAffine ca =
      channel_affine(save_mean.contiguous(), save_invstd.contiguous(), weight, bias);
  Tensor grad_input = empty_for(input, layout);
  Tensor grad_residual = residual.defined() ? empty_for(input, layout) : Tensor();
  Tensor sum_g = at::zeros_like(ca.invstd), sum_gx = at::zeros_like(ca.invstd);
  if (input.numel() == 0) {
    auto [grad_weight, grad_bias] = param_grads(ca, sum_g, sum_gx, weight, bias);
    return {grad_input, grad_residual, grad_weight, grad_bias};
  }

  run_backward_reduce(grad_out, input, residual, layout, ca, sum_g, sum_gx, grad_residual, relu);

  const GradInputCoefs k = grad_input_coefs(ca, sum_g, sum_gx, training, count);
  const bool mask_from_x = relu && !residual.defined();
  const Tensor& gsrc = residual.defined() ? grad_residual : grad_out;
  run_backward_apply(gsrc, input, layout, ca, k, grad_input, mask_from_x);
  auto [grad_weight, grad_bias] = param_grads(ca, sum_g, sum_gx, weight, bias);
  return {grad_input, grad_residual, grad_weight, grad_bias};
}

std::tuple<Tensor, Tensor, Tensor> bn_act_fwd_cpu(const Tensor& input, const OptTensor& weight,
                                                  const OptTensor& bias,
                                                  const OptTensor& running_mean,
                                                  const OptTensor& running_var, bool training,
                                                  double momentum, double eps, bool relu) {
  return bn_forward(input, std::nullopt, weight, bias, running_mean, running_var, training,
                    momentum, eps, relu);
}

std::tuple<Tensor, Tensor, Tensor> bn_add_act_fwd_cpu(
    const Tensor& input, const Tensor& residual, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& running_mean, const OptTensor& running_var, bool training, double momentum,
    double eps, bool relu) {
  return bn_forward(input, residual, weight, bias, running_mean, running_var, training, momentum,
                    eps, relu);
}

std::tuple<Tensor, Tensor, Tensor> bn_act_bwd_cpu(const Tensor& grad_out, const Tensor& input,
                                                  const OptTensor& weight, const OptTensor& bias,
                                                  const Tensor& save_mean,
                                                  const Tensor& save_invstd, bool training,
                                                  bool relu) {
  auto [gi, gr, gw, gb] =
      bn_backward(grad_out, input, std::nullopt, weight, bias, save_mean, save_invstd, training, relu);
  return {gi, gw, gb};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> bn_add_act_bwd_cpu(
    const Tensor& grad_out, const Tensor& input, const Tensor& residual, const OptTensor& weight,
    const OptTensor& bias, const Tensor& save_mean, const Tensor& save_invstd, bool training,
    bool relu) {
  return bn_backward(grad_out, input, residual, weight, bias, save_mean, save_invstd, training,
                     relu);
}

}  // namespace

TORCH_LIBRARY_IMPL(resnet_fast, CPU, m) {
  m.impl("bn_act_fwd", &bn_act_fwd_cpu);
  m.impl("bn_act_bwd", &bn_act_bwd_cpu);
  m.impl("bn_add_act_fwd", &bn_add_act_fwd_cpu);
  m.impl("bn_add_act_bwd", &bn_add_act_bwd_cpu);
}

}  // namespace resnet_fast::cpu
