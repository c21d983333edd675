// The CUDA build's stream: torch's current stream of the current device (the
// host code's device guard has made input's device current).
#include "current_stream.h"

#include <c10/cuda/CUDAStream.h>

namespace resnet_fast::cuda {

cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream(); }

}  // namespace resnet_fast::cuda
