// Host code of add_relu_fwd / add_relu_bwd on every device: one kernel call
// each over dense storage shared by both operands.
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include "../common/checks.h"
#include "../common/tensor_geometry.h"
#include "kernels_for.h"
#include "op_families.h"

namespace resnet_fast {
namespace {

using at::Tensor;

// out = relu(input + other).
Tensor add_relu_fwd(const Tensor& input, const Tensor& other) {
  check_elementwise_pair(input, "input", other, "other");
  const c10::OptionalDeviceGuard guard(input.device());
  const BnKernels& k = kernels_for(input);
  const Tensor a = dense_operand(input);
  const Tensor b = dense_like(other, a);
  Tensor out = empty_dense_like(a);
  if (a.numel() == 0) return out;
  const AddReluParams p{dtype_of(a.scalar_type()), a.numel(), a.const_data_ptr(),
                        b.const_data_ptr(), out.mutable_data_ptr()};
  check_kernel(k.add_relu(p), "add_relu");
  return out;
}

// grad = grad_out * (output > 0).
Tensor add_relu_bwd(const Tensor& grad_out, const Tensor& output) {
  check_elementwise_pair(output, "output", grad_out, "grad_out");
  const c10::OptionalDeviceGuard guard(output.device());
  const BnKernels& k = kernels_for(output);
  const Tensor out = dense_operand(output);
  const Tensor dy = dense_like(grad_out, out);
  Tensor grad = empty_dense_like(out);
  if (out.numel() == 0) return grad;
  const ReluBackwardParams p{dtype_of(out.scalar_type()), out.numel(), dy.const_data_ptr(),
                             out.const_data_ptr(), grad.mutable_data_ptr()};
  check_kernel(k.relu_backward(p), "relu_backward");
  return grad;
}

}  // namespace

void register_add_relu(torch::Library& m) {
  m.impl("add_relu_fwd", &add_relu_fwd);
  m.impl("add_relu_bwd", &add_relu_bwd);
}

}  // namespace resnet_fast
