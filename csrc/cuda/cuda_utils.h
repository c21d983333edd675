// From at::Tensor to the plain structs of the CUDA kernels, shared by the
// torch-facing entry points in this folder. Layout choices (which walk, which
// operands are copied first, how outputs are laid out), dtypes, strides and
// geometry come from common/tensor_geometry.h, which the CPU entry points use
// too, so both backends and the fake kernels in resnet_fast/_ops.py agree.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>

#include <optional>

#include "../common/tensor_geometry.h"
#include "kernels/params.h"

namespace resnet_fast::cuda {

inline bool has(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

inline ChannelVector channel_vector(const std::optional<at::Tensor>& t) {
  if (!has(t)) return {};
  return {t->const_data_ptr(), dtype_of(t->scalar_type()), t->stride(0)};
}

inline MutableChannelVector mutable_channel_vector(const std::optional<at::Tensor>& t) {
  if (!has(t)) return {};
  return {t->mutable_data_ptr(), dtype_of(t->scalar_type()), t->stride(0)};
}

// The launchers return cudaErrorInvalidValue for tensors too large for their
// 32-bit index divisions (kernels/device_common.cuh, kFits32).
#define RESNET_FAST_LAUNCH_CHECK(call)                                                       \
  do {                                                                                     \
    const cudaError_t rf_err = (call);                                                     \
    TORCH_CHECK(rf_err != cudaErrorInvalidValue && rf_err != cudaErrorInvalidConfiguration, \
                "resnet_fast: tensor too large for the CUDA kernels (", #call, ": ",         \
                cudaGetErrorString(rf_err), ")");                                          \
    C10_CUDA_CHECK(rf_err);                                                                \
  } while (0)

}  // namespace resnet_fast::cuda
