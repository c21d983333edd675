// CPU entry points of the BN stage ops (bn_stats, bn_apply, bn_act_bwd_reduce,
// bn_add_act_bwd_reduce, bn_bwd_apply): the passes of bn_act_* / bn_add_act_*
// as separate ops, so that a caller can combine statistics and gradient sums
// across processes between them (resnet_fast.distributed). They run the same
// kernels as the fused ops; only the [C]-sized glue differs.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <utility>

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

// Returns (mean, var): [C] float64, var biased; zeros for an empty batch.
std::tuple<Tensor, Tensor> bn_stats_cpu(const Tensor& input_) {
  check_bn_input(input_);
  Tensor input = input_;
  const int64_t C = input.size(1);
  Tensor mean = at::zeros({C}, input.options().dtype(at::kDouble));
  Tensor var = at::zeros({C}, input.options().dtype(at::kDouble));
  if (input.numel() == 0) return {mean, var};
  const Layout layout = harmonize_layout(input, {});
  run_stats(input, layout, mean, var);
  return {mean, var};
}

// out = act((input - mean) * invstd * weight + bias [+ residual]).
Tensor bn_apply_cpu(const Tensor& input_, const OptTensor& residual_, const OptTensor& weight,
                    const OptTensor& bias, const Tensor& mean, const Tensor& invstd, bool relu) {
  check_bn_input(input_);
  if (has(residual_)) check_same_as(*residual_, "residual", input_, "input");
  check_affine_and_stats(input_, weight, bias, mean, "mean", invstd, "invstd");
  Tensor input = input_;
  Tensor residual = has(residual_) ? *residual_ : Tensor();
  const Layout layout = harmonize_layout(input, {&residual});
  Tensor out = empty_for(input, layout);
  if (input.numel() == 0) return out;
  run_apply(input, residual, layout,
            channel_affine(mean.contiguous(), invstd.contiguous(), weight, bias), out, relu);
  return out;
}

// Returns (sum_g, sum_gx, grad_residual or undefined): with g = grad_out *
// [pre > 0] under relu, sum_g = sum g and sum_gx = sum g * (input - mean) over
// (N, H, W), [C] acc type; grad_residual = g when there is a residual.
std::tuple<Tensor, Tensor, Tensor> bwd_reduce(const Tensor& grad_out_, const Tensor& input_,
                                              const OptTensor& residual_, const OptTensor& weight,
                                              const OptTensor& bias, const Tensor& mean,
                                              const Tensor& invstd, bool relu) {
  check_bn_input(input_);
  check_same_as(grad_out_, "grad_out", input_, "input");
  if (has(residual_)) check_same_as(*residual_, "residual", input_, "input");
  check_affine_and_stats(input_, weight, bias, mean, "mean", invstd, "invstd");
  Tensor input = input_, grad_out = grad_out_;
  Tensor residual = has(residual_) ? *residual_ : Tensor();
  const Layout layout = harmonize_layout(input, {&grad_out, &residual});
  const ChannelAffine ca = channel_affine(mean.contiguous(), invstd.contiguous(), weight, bias);
  Tensor sum_g = at::zeros_like(ca.invstd), sum_gx = at::zeros_like(ca.invstd);
  Tensor grad_residual = residual.defined() ? empty_for(input, layout) : Tensor();
  if (input.numel() == 0) return {sum_g, sum_gx, grad_residual};
  run_backward_reduce(grad_out, input, residual, layout, ca, sum_g, sum_gx, grad_residual, relu);
  return {sum_g, sum_gx, grad_residual};
}

std::tuple<Tensor, Tensor> bn_act_bwd_reduce_cpu(const Tensor& grad_out, const Tensor& input,
                                                 const OptTensor& weight, const OptTensor& bias,
                                                 const Tensor& mean, const Tensor& invstd,
                                                 bool relu) {
  auto [sum_g, sum_gx, unused] =
      bwd_reduce(grad_out, input, std::nullopt, weight, bias, mean, invstd, relu);
  return {sum_g, sum_gx};
}

std::tuple<Tensor, Tensor, Tensor> bn_add_act_bwd_reduce_cpu(
    const Tensor& grad_out, const Tensor& input, const Tensor& residual, const OptTensor& weight,
    const OptTensor& bias, const Tensor& mean, const Tensor& invstd, bool relu) {
  return bwd_reduce(grad_out, input, residual, weight, bias, mean, invstd, relu);
}

// grad_input = scale * (g - mean_g - (input - mean) * invstd^2 * mean_gx),
// scale = weight * invstd, where g = grad * [pre > 0] when relu_mask (the
// mask recomputed from input as in the forward) and g = grad otherwise (grad
// already masked: the grad_residual of bn_add_act_bwd_reduce). mean_g and
// mean_gx are sum_g and sum_gx over the whole batch divided by its count.
Tensor bn_bwd_apply_cpu(const Tensor& grad_, const Tensor& input_, const OptTensor& weight,
                        const OptTensor& bias, const Tensor& mean, const Tensor& invstd,
                        const Tensor& mean_g, const Tensor& mean_gx, bool relu_mask) {
  check_bn_input(input_);
  check_same_as(grad_, "grad", input_, "input");
  check_affine_and_stats(input_, weight, bias, mean, "mean", invstd, "invstd");
  const auto acc = acc_type_of(input_);
  check_channel_stat(mean_g, "mean_g", input_, acc);
  check_channel_stat(mean_gx, "mean_gx", input_, acc);
  Tensor input = input_, grad = grad_;
  const Layout layout = harmonize_layout(input, {&grad});
  Tensor grad_input = empty_for(input, layout);
  if (input.numel() == 0) return grad_input;
  const ChannelAffine ca = channel_affine(mean.contiguous(), invstd.contiguous(), weight, bias);
  // The coefficients divide the sums by the count; given means, the count is 1.
  const GradInputCoefs k =
      grad_input_coefs(ca, mean_g.contiguous(), mean_gx.contiguous(), /*training=*/true, 1);
  run_backward_apply(grad, input, layout, ca, k, grad_input, relu_mask);
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(resnet_fast, CPU, m) {
  m.impl("bn_stats", &bn_stats_cpu);
  m.impl("bn_apply", &bn_apply_cpu);
  m.impl("bn_act_bwd_reduce", &bn_act_bwd_reduce_cpu);
  m.impl("bn_add_act_bwd_reduce", &bn_add_act_bwd_reduce_cpu);
  m.impl("bn_bwd_apply", &bn_bwd_apply_cpu);
}

}  // namespace resnet_fast::cpu
