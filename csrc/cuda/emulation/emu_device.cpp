// The fake device and the runtime API's error state (see emu_runtime_api.h).
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <vector>

#include "cuda_runtime.h"

namespace resnet_fast::emulation {
namespace {

constexpr int kMaxDevices = 64;  // sm_count()'s cache in kernels/device_common.cuh

struct State {
  std::mutex mutex;
  std::vector<DeviceSetting> devices{{2, 2}};  // index = the reported device
  int current = 0;
  cudaError_t last_error = cudaSuccess;
};

State& state() {
  static State s;
  return s;
}

}  // namespace

void set_device(int sm_count, int blocks_per_sm) {
  if (sm_count < 1 || blocks_per_sm < 1) {
    std::fprintf(stderr, "resnet_fast CUDA emulation: set_device(%d, %d): both must be >= 1\n",
                 sm_count, blocks_per_sm);
    std::abort();
  }
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  for (int i = 0; i < static_cast<int>(s.devices.size()); ++i) {
    if (s.devices[i].sm_count == sm_count && s.devices[i].blocks_per_sm == blocks_per_sm) {
      s.current = i;
      return;
    }
  }
  if (static_cast<int>(s.devices.size()) == kMaxDevices) {
    std::fprintf(stderr,
                 "resnet_fast CUDA emulation: more than %d distinct device settings: the "
                 "launchers' SM-count cache has %d slots\n",
                 kMaxDevices, kMaxDevices);
    std::abort();
  }
  s.devices.push_back({sm_count, blocks_per_sm});
  s.current = static_cast<int>(s.devices.size()) - 1;
}

DeviceSetting device_setting() {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  return s.devices[s.current];
}

namespace detail {

void set_last_error(cudaError_t error) {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  s.last_error = error;
}

cudaError_t occupancy(int* blocks, int block_size) {
  if (blocks == nullptr || block_size < 1 || block_size > 1024) return cudaErrorInvalidValue;
  *blocks = device_setting().blocks_per_sm;
  return cudaSuccess;
}

}  // namespace detail
}  // namespace resnet_fast::emulation

using resnet_fast::emulation::state;

cudaError_t cudaGetLastError() {
  auto& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  const cudaError_t e = s.last_error;
  s.last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() {
  auto& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  return s.last_error;
}

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
  }
  return "unknown error";
}

cudaError_t cudaGetDevice(int* device) {
  if (device == nullptr) return cudaErrorInvalidValue;
  auto& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  *device = s.current;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (value == nullptr) return cudaErrorInvalidValue;
  auto& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  if (device < 0 || device >= static_cast<int>(s.devices.size())) return cudaErrorInvalidDevice;
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; return cudaSuccess;
    case cudaDevAttrWarpSize: *value = 32; return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *value = s.devices[device].sm_count; return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}
