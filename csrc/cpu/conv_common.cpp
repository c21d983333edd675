// The CPU convolution ops' shared operand checks (conv_common.h).
#include "conv_common.h"

#include <limits>

#include "../common/tensor_geometry.h"

namespace resnet_fast::cpu {

using at::Tensor;

void check_wide_float(const Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "resnet_fast: ", name, " must be a CPU tensor; got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, "resnet_fast: ", name,
              " must be float32 or float64 (the CPU convolution ops have no reduced-precision build); got ",
              t.scalar_type());
}

void check_channels_last(const Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 4, "resnet_fast: ", name, " must be [N, C, H, W]; got ", t.dim(), " dims");
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast), "resnet_fast: ", name,
              " must be dense channels_last (x.contiguous(memory_format=torch.channels_last)); got strides ",
              t.strides());
}

ConvOperands check_conv_operands(const Tensor& input, const Tensor& weight, const char* name, int64_t parts,
                                 const char* made_by, const std::optional<Tensor>& bias,
                                 const std::optional<Tensor>& residual, int64_t stride) {
  TORCH_CHECK(stride == 1 || stride == 2, "resnet_fast: stride must be 1 or 2; got ", stride);
  check_wide_float(input, "input");
  check_channels_last(input, "input");
  const int64_t N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  check_wide_float(weight, name);
  TORCH_CHECK(weight.dim() == 3 && weight.size(0) == parts && weight.size(1) == C, "resnet_fast: ", name,
              " must be [", parts, ", C_in, C_out] (", made_by, ") with C_in = ", C, "; got ", weight.sizes());
  TORCH_CHECK(weight.is_contiguous(), "resnet_fast: ", name, " must be contiguous");
  TORCH_CHECK(weight.scalar_type() == input.scalar_type(), "resnet_fast: ", name, " dtype ", weight.scalar_type(),
              " differs from input dtype ", input.scalar_type());
  const int64_t K = weight.size(2);
  const int64_t Ho = (H + stride - 1) / stride, Wo = (W + stride - 1) / stride;  // ceil(H / stride)
  if (has(bias)) {
    check_wide_float(*bias, "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == K && bias->scalar_type() == input.scalar_type(),
                "resnet_fast: bias must be [", K, "] of dtype ", input.scalar_type(), "; got ", bias->sizes(),
                " ", bias->scalar_type());
  }
  if (has(residual)) {
    check_wide_float(*residual, "residual");
    check_channels_last(*residual, "residual");
    TORCH_CHECK(residual->sizes() == at::IntArrayRef({N, K, Ho, Wo}) &&
                    residual->scalar_type() == input.scalar_type(),
                "resnet_fast: residual must be [", N, ", ", K, ", ", Ho, ", ", Wo, "] of dtype ",
                input.scalar_type(), "; got ", residual->sizes(), " ", residual->scalar_type());
  }
  return {N, C, H, W, K, Ho, Wo};
}

Tensor conv_output(const Tensor& input, const ConvOperands& sizes) {
  Tensor out = at::empty({sizes.N, sizes.K, sizes.Ho, sizes.Wo},
                         input.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (poison_outputs()) out.fill_(std::numeric_limits<double>::quiet_NaN());
  return out;
}

}  // namespace resnet_fast::cpu
