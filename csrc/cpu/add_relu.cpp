// CPU entry points of add_relu_fwd / add_relu_bwd: one pass each over dense
// storage shared by both operands.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common/checks.h"
#include "cpu_kernels.h"
#include "../common/tensor_geometry.h"

namespace resnet_fast::cpu {
namespace {

using at::Tensor;

Tensor add_relu_fwd_cpu(const Tensor& input, const Tensor& other) {
  check_elementwise_pair(input, "input", other, "other");
  const Tensor a = dense_operand(input);
  const Tensor b = dense_like(other, a);
  Tensor out = empty_dense_like(a);
  if (a.numel() == 0) return out;
  AddReluParams p{dtype_of(a.scalar_type()), a.numel(), a.const_data_ptr(), b.const_data_ptr(), out.mutable_data_ptr()};
  kernels().add_relu(p);
  return out;
}

Tensor add_relu_bwd_cpu(const Tensor& grad_out, const Tensor& output) {
  check_elementwise_pair(output, "output", grad_out, "grad_out");
  const Tensor out = dense_operand(output);
  const Tensor dy = dense_like(grad_out, out);
  Tensor grad = empty_dense_like(out);
  if (out.numel() == 0) return grad;
  ReluBackwardParams p{dtype_of(out.scalar_type()), out.numel(), dy.const_data_ptr(), out.const_data_ptr(),
                       grad.mutable_data_ptr()};
  kernels().relu_backward(p);
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(resnet_fast, CPU, m) {
  m.impl("add_relu_fwd", &add_relu_fwd_cpu);
  m.impl("add_relu_bwd", &add_relu_bwd_cpu);
}

}  // namespace resnet_fast::cpu
