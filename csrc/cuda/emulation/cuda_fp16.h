// __half of the CUDA-on-CPU emulation: storage and conversions only. Torch
// builds the kernels with __CUDA_NO_HALF_OPERATORS__ and
// __CUDA_NO_HALF_CONVERSIONS__, so the kernels use neither operators nor
// implicit conversions, and neither exists here (a kernel that starts to use
// one fails to build through the shim as it would under torch).
#pragma once

#include <cstdint>

#include "emu_qualifiers.h"
#include "emu_rounding.h"

struct __half_raw {
  unsigned short x;
};

struct alignas(2) __half {
  unsigned short __x;  // the fp16 bits, as CUDA names them

  __half() = default;
  constexpr __half(__half_raw raw) : __x(raw.x) {}
  constexpr operator __half_raw() const { return __half_raw{__x}; }
};

inline __half __ushort_as_half(unsigned short bits) { return __half(__half_raw{bits}); }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }

inline float __half2float(__half h) {
  return resnet_fast::emulation::detail::half_bits_to_float(h.__x);
}
inline __half __float2half_rn(float f) {
  return __ushort_as_half(
      resnet_fast::emulation::detail::narrow_from_double<10, 5>(static_cast<double>(f)));
}
inline __half __float2half(float f) { return __float2half_rn(f); }
// Rounded once, from the double (not through float, which could round twice).
inline __half __double2half(double d) {
  return __ushort_as_half(resnet_fast::emulation::detail::narrow_from_double<10, 5>(d));
}
