// One device's kernels of the BN and add-ReLU ops, as a table of functions
// over the params of kernel_params.h: what the host code of csrc/ops/ calls,
// whatever the device. The tables:
//   cpu::bn_kernels()   csrc/cpu/bn_kernels_cpu.cpp    the CPU (per-ISA kernels)
//   cuda::bn_kernels()  csrc/cuda/bn_kernels_cuda.cpp  the CUDA launchers on the
//                       current stream (CUDA builds, and the CUDA-on-CPU
//                       emulation of the test-only library)
// Which one runs a tensor is kernels_for(input) (csrc/ops/kernels_for.h).
//
// Every entry returns nullptr on success, else a message saying what failed
// (valid until the next call on the same thread), which the host code turns
// into an error in one way for every device. A reduction is planned first
// (how many partial results per channel the caller allocates), then run with
// that plan unchanged.
#pragma once

#include "kernel_params.h"

namespace resnet_fast {

using KernelError = const char*;  // nullptr: success

struct BnKernels {
  const char* name;
  // Training forward: statistics partials [3][splits][C], then the finalize.
  ReductionPlan (*plan_stats)(const StatsParams&);
  KernelError (*stats)(const StatsParams&, const ReductionPlan&);
  KernelError (*finalize_forward)(const FinalizeForwardParams&);
  KernelError (*apply)(const ApplyParams&);
  // Backward: sums partials [2][splits][C] (+ grad_residual), finalize,
  // grad-input.
  ReductionPlan (*plan_backward_reduce)(const BackwardReduceParams&);
  KernelError (*backward_reduce)(const BackwardReduceParams&, const ReductionPlan&);
  KernelError (*finalize_backward)(const FinalizeBackwardParams&);
  KernelError (*backward_apply)(const BackwardApplyParams&);
  // The stage ops: coefficient tables from given statistics.
  KernelError (*given_coefs)(const GivenCoefsParams&);
  KernelError (*add_relu)(const AddReluParams&);
  KernelError (*relu_backward)(const ReluBackwardParams&);
};

namespace cpu {
const BnKernels& bn_kernels();
}  // namespace cpu

namespace cuda {
const BnKernels& bn_kernels();
}  // namespace cuda

}  // namespace resnet_fast
