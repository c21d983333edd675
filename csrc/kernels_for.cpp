// resnet_fast._C's kernel table per device (ops/kernels_for.h): the CPU
// kernels for CPU tensors, the CUDA kernels for CUDA tensors in CUDA builds.
#include "ops/kernels_for.h"

namespace resnet_fast {

const BnKernels& kernels_for(const at::Tensor& input) {
#ifdef RESNET_FAST_WITH_CUDA
  if (input.is_cuda()) return cuda::bn_kernels();
#endif
  TORCH_CHECK(input.is_cpu(), "resnet_fast: no kernels for tensors on ", input.device());
  return cpu::bn_kernels();
}

}  // namespace resnet_fast
