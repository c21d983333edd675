// From at::Tensor to the plain structs of the CUDA kernels, shared by the
// torch-facing entry points in this folder. Layout choices (which walk, which
// operands are copied first, how outputs are laid out) are the CPU
// backend's, from cpu/tensor_geometry.h: device-independent ATen code, so
// both backends and the fake kernels in resnet_fast/_ops.py agree.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>

#include <optional>

#include "../cpu/tensor_geometry.h"
#include "kernels/params.h"

namespace resnet_fast::cuda {

inline Dtype dtype_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return Dtype::kFloat;
    case at::kDouble: return Dtype::kDouble;
    case at::kHalf: return Dtype::kHalf;
    case at::kBFloat16: return Dtype::kBFloat16;
    default: TORCH_CHECK(false, "resnet_fast: unsupported dtype ", t);
  }
}

inline Strides strides_of(const at::Tensor& t) {  // t: [N, C, H, W]
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

inline Layout layout_of(cpu::Layout l) {
  return l == cpu::Layout::kRows ? Layout::kRows : Layout::kPlanar;
}

inline Geometry kernel_geometry(const at::Tensor& t, cpu::Layout l) {
  return {t.size(0), t.size(1), t.size(2), t.size(3), layout_of(l), dtype_of(t.scalar_type())};
}

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
