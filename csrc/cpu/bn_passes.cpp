#include "bn_passes.h"

#include "cpu_kernels.h"
#include "../common/tensor_geometry.h"

namespace resnet_fast::cpu {
namespace {

const void* data_or_null(const at::Tensor& t) { return t.defined() ? t.const_data_ptr() : nullptr; }
Strides strides_or_none(const at::Tensor& t) { return t.defined() ? strides_of(t) : Strides{}; }

}  // namespace

void run_stats(const at::Tensor& input, Layout layout, at::Tensor& mean, at::Tensor& var) {
  StatsParams p{geometry_of(input, layout), input.const_data_ptr(), strides_of(input),
                mean.mutable_data_ptr<double>(), var.mutable_data_ptr<double>()};
  kernels().bn_stats(p);
}

void run_apply(const at::Tensor& input, const at::Tensor& residual, Layout layout,
               const ChannelAffine& affine, at::Tensor& out, bool relu) {
  ApplyParams p{geometry_of(input, layout),
                input.const_data_ptr(),
                strides_of(input),
                data_or_null(residual),
                strides_or_none(residual),
                affine.mean_hi.const_data_ptr(),
                affine.mean_lo.const_data_ptr(),
                affine.scale.const_data_ptr(),
                affine.bias.const_data_ptr(),
                out.mutable_data_ptr(),
                strides_of(out),
                relu};
  kernels().bn_apply(p);
}

void run_backward_reduce(const at::Tensor& grad_out, const at::Tensor& input,
                         const at::Tensor& residual, Layout layout, const ChannelAffine& affine,
                         at::Tensor& sum_g, at::Tensor& sum_gx, at::Tensor& grad_residual,
                         bool relu) {
  BackwardReduceParams p{geometry_of(input, layout),
                         grad_out.const_data_ptr(),
                         strides_of(grad_out),
                         input.const_data_ptr(),
                         strides_of(input),
                         data_or_null(residual),
                         strides_or_none(residual),
                         affine.mean_hi.const_data_ptr(),
                         affine.mean_lo.const_data_ptr(),
                         affine.scale.const_data_ptr(),
                         affine.bias.const_data_ptr(),
                         sum_g.mutable_data_ptr(),
                         sum_gx.mutable_data_ptr(),
                         grad_residual.defined() ? grad_residual.mutable_data_ptr() : nullptr,
                         strides_or_none(grad_residual),
                         relu};
  kernels().bn_backward_reduce(p);
}

void run_backward_apply(const at::Tensor& grad, const at::Tensor& input, Layout layout,
                        const ChannelAffine& affine, const GradInputCoefs& coefs,
                        at::Tensor& grad_input, bool relu_mask) {
  BackwardApplyParams p{geometry_of(input, layout),
                        grad.const_data_ptr(),
                        strides_of(grad),
                        input.const_data_ptr(),
                        strides_of(input),
                        affine.mean_hi.const_data_ptr(),
                        affine.mean_lo.const_data_ptr(),
                        affine.scale.const_data_ptr(),
                        affine.bias.const_data_ptr(),
                        coefs.a.const_data_ptr(),
                        coefs.b.const_data_ptr(),
                        coefs.d.const_data_ptr(),
                        grad_input.mutable_data_ptr(),
                        strides_of(grad_input),
                        relu_mask};
  kernels().bn_backward_apply(p);
}

}  // namespace resnet_fast::cpu
