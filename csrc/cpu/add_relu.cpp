// CPU entry points of add_relu_fwd / add_relu_bwd: one pass each over dense
// storage shared by both operands.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <limits>

#include "cpu_kernels.h"
#include "tensor_geometry.h"

namespace resnet_fast::cpu {
namespace {

using at::Tensor;

bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

void check_pair(const Tensor& a, const char* a_name, const Tensor& b, const char* b_name) {
  TORCH_CHECK(is_supported_float(a.scalar_type()), a_name,
              " must be float32, float64, float16 or bfloat16, got ", a.scalar_type());
  TORCH_CHECK(b.sizes() == a.sizes(), b_name, " must have the shape of ", a_name, " ", a.sizes(),
              ", got ", b.sizes());
  TORCH_CHECK(b.scalar_type() == a.scalar_type(), b_name, " must have the dtype of ", a_name, " (",
              a.scalar_type(), "), got ", b.scalar_type());
  TORCH_CHECK(b.device() == a.device(), b_name, " must be on the device of ", a_name, " (",
              a.device(), "), got ", b.device());
}

// The operands are walked element by element: `primary` keeps its layout
// when it is dense; the other is brought to the same strides (a copy, warned
// once when it is a dense tensor in another memory format).
Tensor dense_like(const Tensor& t, const Tensor& primary) {
  if (t.strides() == primary.strides()) return t;
  // Broadcast tensors (a gradient of .sum()) are materialized without a word.
  if (t.is_non_overlapping_and_dense())
    TORCH_WARN_ONCE("resnet_fast: add_relu operands with different strides (", t.strides(), " vs ",
                    primary.strides(), ") are copied to one layout first");
  Tensor copy = at::empty_like(primary);  // dense primary: exactly its strides
  copy.copy_(t);
  return copy;
}

Tensor dense(const Tensor& t) {
  return t.is_non_overlapping_and_dense() ? t : t.contiguous(t.suggest_memory_format());
}

Tensor empty_output(const Tensor& like) {
  Tensor out = at::empty_like(like);  // dense `like`: exactly its strides
  if (poison_outputs()) out.fill_(std::numeric_limits<double>::quiet_NaN());
  return out;
}

Tensor add_relu_fwd_cpu(const Tensor& input, const Tensor& other) {
  check_pair(input, "input", other, "other");
  const Tensor a = dense(input);
  const Tensor b = dense_like(other, a);
  Tensor out = empty_output(a);
  if (a.numel() == 0) return out;
  AddReluParams p{dtype_of(a), a.numel(), a.const_data_ptr(), b.const_data_ptr(), out.mutable_data_ptr()};
  kernels().add_relu(p);
  return out;
}

Tensor add_relu_bwd_cpu(const Tensor& grad_out, const Tensor& output) {
  check_pair(output, "output", grad_out, "grad_out");
  const Tensor out = dense(output);
  const Tensor dy = dense_like(grad_out, out);
  Tensor grad = empty_output(out);
  if (out.numel() == 0) return grad;
  ReluBackwardParams p{dtype_of(out), out.numel(), dy.const_data_ptr(), out.const_data_ptr(),
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
