// The CUDA runtime API the launchers call (errors, streams, device queries),
// answered by a fake device whose size the test sets at run time.
#pragma once

#include <cstddef>

// CUDA's numeric values, so that a test printing a code reads as on a GPU.
enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
};
using cudaError = cudaError_t;

enum cudaDeviceAttr : int {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrWarpSize = 10,
  cudaDevAttrMultiProcessorCount = 16,
};

// Launches are synchronous: a stream is only carried along.
using cudaStream_t = struct CUstream_st*;

cudaError_t cudaGetLastError();   // returns the last launch error and clears it
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorName(cudaError_t error);
const char* cudaGetErrorString(cudaError_t error);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

namespace resnet_fast::emulation {

// Makes the fake device `sm_count` multiprocessors with room for
// `blocks_per_sm` resident blocks of any kernel (what the occupancy query
// answers). Each distinct setting gets its own device index from
// cudaGetDevice, because the launchers cache the SM count per device index
// (sm_count() in kernels/device_common.cuh): a new size must look like a new
// device. At most 64 distinct settings per process (that cache's size).
// Default: 2 SMs x 2 blocks, small enough that the reductions run one block
// per channel; an H100 is 132 x 16 (reductions split over many blocks).
void set_device(int sm_count, int blocks_per_sm);

struct DeviceSetting {
  int sm_count, blocks_per_sm;
};
DeviceSetting device_setting();

namespace detail {
void set_last_error(cudaError_t error);
cudaError_t occupancy(int* blocks, int block_size);
}  // namespace detail

}  // namespace resnet_fast::emulation

// The kernel itself does not matter: the fake device answers the same for
// every kernel.
template <typename Kernel>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, Kernel, int block_size,
                                                          std::size_t dynamic_smem) {
  if (dynamic_smem != 0) return cudaErrorInvalidValue;  // the kernels use none
  return resnet_fast::emulation::detail::occupancy(blocks, block_size);
}
