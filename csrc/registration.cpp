// Every schema of the resnet_fast operator library, and the Python module
// that exposes build information. Ops never go through pybind11: importing
// resnet_fast._C runs the static registrations below and the kernels'
// (cpu/register_cpu.cpp, cuda/register_cuda.cpp).
#include <Python.h>
#include <pybind11/pybind11.h>
#include <torch/library.h>
#include <torch/version.h>

#include "autograd.h"
#include "cpu/isa_choice.h"

// clang-format off
TORCH_LIBRARY(resnet_fast, m) {
  // out = act(batch_norm(input)); returns (out, save_mean, save_invstd): [C]
  // float64 mean and float (double for double input) invstd, of the batch in
  // training, of the running statistics in eval. Running stats are updated in
  // place in training.
  m.def("bn_act_fwd(Tensor input, Tensor? weight, Tensor? bias, Tensor(a!)? running_mean, "
        "Tensor(b!)? running_var, bool training, float momentum, float eps, bool relu) "
        "-> (Tensor, Tensor, Tensor)");
  // Returns (grad_input, grad_weight, grad_bias); the ReLU mask is recomputed
  // from input.
  m.def("bn_act_bwd(Tensor grad_out, Tensor input, Tensor? weight, Tensor? bias, "
        "Tensor save_mean, Tensor save_invstd, bool training, bool relu) "
        "-> (Tensor, Tensor, Tensor)");
  // out = act(batch_norm(input) + residual).
  m.def("bn_add_act_fwd(Tensor input, Tensor residual, Tensor? weight, Tensor? bias, "
        "Tensor(a!)? running_mean, Tensor(b!)? running_var, bool training, float momentum, "
        "float eps, bool relu) -> (Tensor, Tensor, Tensor)");
  // Returns (grad_input, grad_residual, grad_weight, grad_bias).
  m.def("bn_add_act_bwd(Tensor grad_out, Tensor input, Tensor residual, Tensor? weight, "
        "Tensor? bias, Tensor save_mean, Tensor save_invstd, bool training, bool relu) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
  // out = relu(input + other).
  m.def("add_relu_fwd(Tensor input, Tensor other) -> Tensor");
  // grad = grad_out * (output > 0): the gradient of both summands.
  m.def("add_relu_bwd(Tensor grad_out, Tensor output) -> Tensor");

  // The passes of bn_act_* / bn_add_act_* as separate ops, for statistics and
  // gradient sums combined across processes in between (synchronized BN,
  // resnet_fast.distributed). Not differentiable themselves.
  // Batch statistics: (mean, var), [C] float64, var biased; zeros when empty.
  m.def("bn_stats(Tensor input) -> (Tensor, Tensor)");
  // out = act((input - mean) * invstd * weight + bias [+ residual]) with given
  // statistics: mean [C] float64, invstd [C] float (double for double input).
  m.def("bn_apply(Tensor input, Tensor? residual, Tensor? weight, Tensor? bias, Tensor mean, "
        "Tensor invstd, bool relu) -> Tensor");
  // (sum_g, sum_gx): [C] sums over (N, H, W) of g and g * (input - mean),
  // g = grad_out * [pre-activation > 0] under relu; float (double for double).
  m.def("bn_act_bwd_reduce(Tensor grad_out, Tensor input, Tensor? weight, Tensor? bias, "
        "Tensor mean, Tensor invstd, bool relu) -> (Tensor, Tensor)");
  // (sum_g, sum_gx, grad_residual = g), g with the residual in the mask.
  m.def("bn_add_act_bwd_reduce(Tensor grad_out, Tensor input, Tensor residual, Tensor? weight, "
        "Tensor? bias, Tensor mean, Tensor invstd, bool relu) -> (Tensor, Tensor, Tensor)");
  // grad_input = weight * invstd * (g - mean_g - (input - mean) * invstd^2 * mean_gx),
  // mean_g / mean_gx: the sums over the whole (all-process) batch / its count;
  // g = grad * [pre-activation > 0] when relu_mask, else grad.
  m.def("bn_bwd_apply(Tensor grad, Tensor input, Tensor? weight, Tensor? bias, Tensor mean, "
        "Tensor invstd, Tensor mean_g, Tensor mean_gx, bool relu_mask) -> Tensor");

  // The Winograd F(4x4, 3x3) convolution, a CPU algorithm (no GPU kernels:
  // cuDNN picks Winograd on its own). No gradient: its callers (eval-mode
  // folded convolutions, the lean blocks' autograd nodes) differentiate
  // around it.
  // weight [C_out, C_in, 3, 3] -> [36, C_in, C_out], the transformed kernels.
  m.def("winograd_weight(Tensor weight) -> Tensor");
  // act(conv2d(input, weight, bias, stride=1, padding=1) [+ residual]) with
  // weight_tiles = winograd_weight(weight); input, residual and the output
  // are dense channels_last, float32 or float64.
  m.def("winograd_conv3x3(Tensor input, Tensor weight_tiles, Tensor? bias, Tensor? residual, "
        "bool relu) -> Tensor");
  // A 3x3 (padding 1) or 1x1 convolution of stride 1 or 2 tap by tap, a CPU
  // algorithm likewise without a gradient: one matrix product per kernel
  // tap over the pixel pairs inside the image.
  // weight_taps = taps_weight(weight).
  m.def("taps_conv(Tensor input, Tensor weight_taps, Tensor? bias, Tensor? residual, "
        "bool relu, int stride=1) -> Tensor");
  // weight [C_out, C_in, k, k] -> weight_taps [k * k, C_in, C_out], or with
  // `turned` the taps of the input gradient's convolution, [k * k, C_out, C_in].
  m.def("taps_weight(Tensor weight, bool turned=False) -> Tensor");
  // Its weight gradient, [C_out, C_in, k, k] (channels_last or contiguous):
  // per tap, the sum over the pixel pairs of input^T grad (grad: [N, C_out,
  // H_out, W_out]).
  m.def("taps_weight_grad(Tensor input, Tensor grad, int ksize, int stride=1, "
        "bool channels_last=False) -> Tensor");
}
// clang-format on

namespace {

pybind11::dict build_info() {
  pybind11::dict info;
  pybind11::list backends;
  backends.append("cpu");
#ifdef RESNET_FAST_WITH_CUDA
  backends.append("cuda");
#endif
  info["backends"] = backends;
#ifdef RESNET_FAST_CUDA_ARCHS
  info["cuda_archs"] = RESNET_FAST_CUDA_ARCHS;
#else
  info["cuda_archs"] = "";
#endif
  info["torch_version"] = TORCH_VERSION;
  info["cpu_capabilities_compiled"] = resnet_fast::cpu::compiled_capabilities();
  info["cpu_capability"] = resnet_fast::cpu::isa_kernels().name;
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "resnet_fast native library: ops are registered in torch.ops.resnet_fast";
  m.def("build_info", &build_info,
        "Backends, CUDA architectures, CPU ISA builds and the torch version this was built with.");
  m.def("register_autograd", &resnet_fast::register_autograd, pybind11::arg("namespace"),
        "Registers the autograd of bn_act_fwd, bn_add_act_fwd and add_relu_fwd for the ops of "
        "a namespace (once per namespace).");
}
