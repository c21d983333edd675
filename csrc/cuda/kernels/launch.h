// Host launch functions of the CUDA kernels: what the CUDA kernel table
// (csrc/cuda/bn_kernels_cuda.cpp) calls. Each returns the launch's
// cudaError_t (the last error after the launch), for the caller to check.
//
// A reduction is planned first (plan_*: block shape, grid, and how many
// partial results per channel the caller allocates), then launched with that
// plan unchanged.
#pragma once

#include <cuda_runtime.h>

#include "../../common/kernel_params.h"

namespace resnet_fast::cuda {

// Forward, training: per-block statistics, then the finalize.
ReductionPlan plan_bn_stats(const StatsParams& p);
cudaError_t launch_bn_stats(const StatsParams& p, const ReductionPlan& plan, cudaStream_t stream);

cudaError_t launch_bn_finalize_forward(const FinalizeForwardParams& p, cudaStream_t stream);

cudaError_t launch_bn_apply(const ApplyParams& p, cudaStream_t stream);

// Backward: reductions (+ grad_residual), finalize, grad_input.
ReductionPlan plan_bn_backward_reduce(const BackwardReduceParams& p);
cudaError_t launch_bn_backward_reduce(const BackwardReduceParams& p, const ReductionPlan& plan,
                                      cudaStream_t stream);

cudaError_t launch_bn_finalize_backward(const FinalizeBackwardParams& p, cudaStream_t stream);

cudaError_t launch_bn_backward_apply(const BackwardApplyParams& p, cudaStream_t stream);

// The stage ops: apply coefficients from given statistics.
cudaError_t launch_bn_given_coefs(const GivenCoefsParams& p, cudaStream_t stream);

cudaError_t launch_add_relu(const AddReluParams& p, cudaStream_t stream);
cudaError_t launch_relu_backward(const ReluBackwardParams& p, cudaStream_t stream);

}  // namespace resnet_fast::cuda
