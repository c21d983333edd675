// The CUDA kernel table (common/bn_kernels.h): the launchers of
// kernels/launch.h on the current stream, each launch's error turned into a
// message. Torch-free, so that the same file is compiled into the test-only
// library against the CUDA-on-CPU emulation's runtime (csrc/cuda/emulation/),
// where the same launchers run the same kernels on the CPU.
#include <cuda_runtime.h>

#include "../common/bn_kernels.h"
#include "current_stream.h"
#include "kernels/launch.h"

namespace resnet_fast::cuda {
namespace {

// The launchers answer cudaErrorInvalidValue or
// cudaErrorInvalidConfiguration for tensors too large for their 32-bit index
// divisions or for the grid's limits (kernels/device_common.cuh, kFits32)
// before they launch anything.
KernelError error_of(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return nullptr;
    case cudaErrorInvalidValue:
      return "tensor too large for the CUDA kernels (cudaErrorInvalidValue: an index past 32 bits)";
    case cudaErrorInvalidConfiguration:
      return "tensor too large for the CUDA kernels (cudaErrorInvalidConfiguration: a grid past "
             "its limits)";
    default: return cudaGetErrorString(error);
  }
}

KernelError stats(const StatsParams& p, const ReductionPlan& plan) {
  return error_of(launch_bn_stats(p, plan, current_stream()));
}

KernelError finalize_forward(const FinalizeForwardParams& p) {
  return error_of(launch_bn_finalize_forward(p, current_stream()));
}

KernelError apply(const ApplyParams& p) { return error_of(launch_bn_apply(p, current_stream())); }

KernelError backward_reduce(const BackwardReduceParams& p, const ReductionPlan& plan) {
  return error_of(launch_bn_backward_reduce(p, plan, current_stream()));
}

KernelError finalize_backward(const FinalizeBackwardParams& p) {
  return error_of(launch_bn_finalize_backward(p, current_stream()));
}

KernelError backward_apply(const BackwardApplyParams& p) {
  return error_of(launch_bn_backward_apply(p, current_stream()));
}

KernelError given_coefs(const GivenCoefsParams& p) {
  return error_of(launch_bn_given_coefs(p, current_stream()));
}

KernelError add_relu(const AddReluParams& p) {
  return error_of(launch_add_relu(p, current_stream()));
}

KernelError relu_backward(const ReluBackwardParams& p) {
  return error_of(launch_relu_backward(p, current_stream()));
}

const BnKernels kTable{"cuda",
                       plan_bn_stats,
                       stats,
                       finalize_forward,
                       apply,
                       plan_bn_backward_reduce,
                       backward_reduce,
                       finalize_backward,
                       backward_apply,
                       given_coefs,
                       add_relu,
                       relu_backward};

}  // namespace

const BnKernels& bn_kernels() { return kTable; }

}  // namespace resnet_fast::cuda
