// CUDA entry points of add_relu_fwd / add_relu_bwd: one launch each over
// dense storage shared by both operands (layouts as on the CPU).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common/checks.h"
#include "cuda_utils.h"
#include "kernels/launch.h"

namespace resnet_fast::cuda {
namespace {

using at::Tensor;

Tensor add_relu_fwd_cuda(const Tensor& input, const Tensor& other) {
  check_elementwise_pair(input, "input", other, "other");
  const c10::cuda::CUDAGuard guard(input.device());
  const Tensor a = dense_operand(input);
  const Tensor b = dense_like(other, a);
  Tensor out = empty_dense_like(a);
  if (a.numel() == 0) return out;
  const AddReluParams p{dtype_of(a.scalar_type()), a.numel(), a.const_data_ptr(),
                        b.const_data_ptr(), out.mutable_data_ptr()};
  RESNET_FAST_LAUNCH_CHECK(launch_add_relu(p, c10::cuda::getCurrentCUDAStream()));
  return out;
}

Tensor add_relu_bwd_cuda(const Tensor& grad_out, const Tensor& output) {
  check_elementwise_pair(output, "output", grad_out, "grad_out");
  const c10::cuda::CUDAGuard guard(output.device());
  const Tensor out = dense_operand(output);
  const Tensor dy = dense_like(grad_out, out);
  Tensor grad = empty_dense_like(out);
  if (out.numel() == 0) return grad;
  const ReluBackwardParams p{dtype_of(out.scalar_type()), out.numel(), dy.const_data_ptr(),
                             out.const_data_ptr(), grad.mutable_data_ptr()};
  RESNET_FAST_LAUNCH_CHECK(launch_relu_backward(p, c10::cuda::getCurrentCUDAStream()));
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(resnet_fast, CUDA, m) {
  m.impl("add_relu_fwd", &add_relu_fwd_cuda);
  m.impl("add_relu_bwd", &add_relu_bwd_cuda);
}

}  // namespace resnet_fast::cuda
