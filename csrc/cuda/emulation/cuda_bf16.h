// __nv_bfloat16 of the CUDA-on-CPU emulation: storage and conversions only
// (torch builds the kernels with __CUDA_NO_BFLOAT16_CONVERSIONS__; see
// cuda_fp16.h).
#pragma once

#include <cstdint>

#include "cuda_fp16.h"  // as CUDA's cuda_bf16.h, which includes it
#include "emu_qualifiers.h"
#include "emu_rounding.h"

struct __nv_bfloat16_raw {
  unsigned short x;
};

struct alignas(2) __nv_bfloat16 {
  unsigned short __x;  // the upper half of a float's bits

  __nv_bfloat16() = default;
  constexpr __nv_bfloat16(__nv_bfloat16_raw raw) : __x(raw.x) {}
  constexpr operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }
};

inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short bits) {
  return __nv_bfloat16(__nv_bfloat16_raw{bits});
}
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.__x; }

inline float __bfloat162float(__nv_bfloat16 b) {
  return resnet_fast::emulation::detail::bf16_bits_to_float(b.__x);
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  return __ushort_as_bfloat16(
      resnet_fast::emulation::detail::narrow_from_double<7, 8>(static_cast<double>(f)));
}
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
// Rounded once, from the double (not through float, which could round twice).
inline __nv_bfloat16 __double2bfloat16(double d) {
  return __ushort_as_bfloat16(resnet_fast::emulation::detail::narrow_from_double<7, 8>(d));
}
