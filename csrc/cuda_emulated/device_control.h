// What the test-only library's Python module controls and reads of the
// emulated CUDA device (device_control.cpp). No torch and no CUDA types: the
// torch-facing library.cpp includes this, never the emulation's headers.
#pragma once

#include <string>
#include <vector>

namespace resnet_fast::cuda_emulated {

// The fake device's size (csrc/cuda/emulation: resnet_fast::emulation::
// set_device); both >= 1, checked by the caller.
void set_device(int sm_count, int blocks_per_sm);

struct DeviceSize {
  int sm_count, blocks_per_sm;
};
DeviceSize device();

// A launch run or rejected in this process.
struct LaunchShape {
  std::string kernel, caller;
  unsigned grid[3], block[3];
};

// The last launches, oldest first (at most the emulation's kRecentLaunches).
std::vector<LaunchShape> recent_launches();

}  // namespace resnet_fast::cuda_emulated
