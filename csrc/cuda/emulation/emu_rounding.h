// Conversions between binary64 and the 16-bit float formats (fp16, bf16) with
// the GPU's rounding: round to nearest, ties to even, straight from the
// double (a float input is first widened, which is exact, so float and double
// inputs are rounded once). Subnormal results are rounded at their own
// quantum, overflow gives infinity, and every NaN the canonical 0x7fff, which
// is what cvt.rn.f16/bf16 produce. Integer arithmetic only: no dependence on
// the FPU's rounding mode or on -ffast-math.
#pragma once

#include <cstdint>
#include <cstring>

namespace resnet_fast::emulation::detail {

template <int kMantBits, int kExpBits>
inline std::uint16_t narrow_from_double(double d) {
  constexpr int kBias = (1 << (kExpBits - 1)) - 1;
  constexpr int kMinExp = 1 - kBias;  // of the smallest normal
  constexpr std::uint32_t kInf = ((1u << kExpBits) - 1u) << kMantBits;
  std::uint64_t bits;
  std::memcpy(&bits, &d, sizeof bits);
  const std::uint32_t sign = static_cast<std::uint32_t>(bits >> 63) << 15;
  const int biased = static_cast<int>((bits >> 52) & 0x7ff);
  const std::uint64_t frac = bits & ((std::uint64_t(1) << 52) - 1);
  if (biased == 0x7ff) return frac != 0 ? std::uint16_t(0x7fff) : std::uint16_t(sign | kInf);
  if (biased == 0 && frac == 0) return static_cast<std::uint16_t>(sign);
  // |d| = sig * 2^e2 exactly, sig < 2^53.
  const std::uint64_t sig = biased != 0 ? frac | (std::uint64_t(1) << 52) : frac;
  const int e2 = (biased != 0 ? biased : 1) - 1075;
  const int top = 63 - __builtin_clzll(sig);  // |d| is in [2^(e2+top), 2^(e2+top+1))
  const int exp = e2 + top;
  // The quantum (unit in the last place) of the target format at |d|.
  const int quantum = (exp > kMinExp ? exp : kMinExp) - kMantBits;
  const int shift = quantum - e2;  // > 0: a double carries more bits than the target
  std::uint64_t r;
  if (shift <= 0) {
    r = sig << -shift;  // exact (does not happen for these formats)
  } else if (shift > 63) {
    r = 0;  // below half the smallest subnormal
  } else {
    r = sig >> shift;
    const std::uint64_t rest = sig & ((std::uint64_t(1) << shift) - 1);
    const std::uint64_t half = std::uint64_t(1) << (shift - 1);
    if (rest > half || (rest == half && (r & 1))) ++r;  // ties to even
  }
  // r * 2^quantum, r < 2^(kMantBits+1). Normal: field = exponent + bias and
  // the implicit bit of r carries into it; subnormal (quantum at the
  // minimum): the field is 0 and r is the mantissa. A carry out of the
  // mantissa (r == 2^(kMantBits+1)) moves to the next binade, or infinity.
  const std::uint64_t enc =
      (static_cast<std::uint64_t>(quantum + kMantBits + kBias - 1) << kMantBits) + r;
  if (enc >= kInf) return static_cast<std::uint16_t>(sign | kInf);
  return static_cast<std::uint16_t>(sign | enc);
}

// Exact widening of an fp16 value (NaN payloads kept).
inline float half_bits_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ffu;
  std::uint32_t out;
  if (exp == 0x1f) {
    out = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {
    out = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  } else if (mant == 0) {
    out = sign;
  } else {  // subnormal: mant * 2^-24, a normal float
    const int top = 31 - __builtin_clz(mant);  // 0..9
    out = sign | (static_cast<std::uint32_t>(top - 24 + 127) << 23) |
          ((mant << (23 - top)) & 0x7fffffu);
  }
  float f;
  std::memcpy(&f, &out, sizeof f);
  return f;
}

// Exact widening of a bf16 value: its bits are a float's upper half.
inline float bf16_bits_to_float(std::uint16_t b) {
  const std::uint32_t out = static_cast<std::uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &out, sizeof f);
  return f;
}

}  // namespace resnet_fast::emulation::detail
