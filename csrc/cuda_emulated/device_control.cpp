// The emulated device of the test-only library: the CUDA stream (none: the
// emulation's launches are synchronous) and what the Python module reads and
// sets, over the emulation's runtime (csrc/cuda/emulation/).
#include "device_control.h"

#include <cuda_runtime.h>  // the emulation's (-I csrc/cuda/emulation)

#include "../cuda/current_stream.h"

namespace resnet_fast {

namespace cuda {
cudaStream_t current_stream() { return nullptr; }
}  // namespace cuda

namespace cuda_emulated {

void set_device(int sm_count, int blocks_per_sm) {
  emulation::set_device(sm_count, blocks_per_sm);
}

DeviceSize device() {
  const emulation::DeviceSetting s = emulation::device_setting();
  return {s.sm_count, s.blocks_per_sm};
}

std::vector<LaunchShape> recent_launches() {
  std::vector<LaunchShape> out;
  for (const emulation::LaunchRecord& r : emulation::recent_launches()) {
    out.push_back({r.kernel, r.caller, {r.grid.x, r.grid.y, r.grid.z},
                   {r.block.x, r.block.y, r.block.z}});
  }
  return out;
}

}  // namespace cuda_emulated
}  // namespace resnet_fast
