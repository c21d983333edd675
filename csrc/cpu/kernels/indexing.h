// Offsets of planar lines and channels_last rows of a [N, C, H, W] operand.
// Pure integer code, shared by every ISA build.
#pragma once

#include <cstdint>

#include "../../common/kernel_params.h"

namespace resnet_fast::cpu {

// Planar walk: lines (n, c, h) of W elements, merged into one line of H*W
// per (n, c) when every operand is dense over H and W.
struct PlanarShape {
  int64_t lines_per_nc;  // H, or 1 when merged
  int64_t line_len;      // W, or H*W when merged

  static bool dense_hw(const Geometry& g, const Strides& s) {
    return g.H == 1 || s.h == g.W;
  }
};

inline int64_t planar_offset(const Strides& s, int64_t n, int64_t c, int64_t h) {
  return n * s.n + c * s.c + h * s.h;
}

// Rows walk: row r = (n, h, w); uniform spacing turns the index math into a
// single multiply.
struct RowIndex {
  int64_t HW, W, sn, sh, sw;
  bool uniform;

  RowIndex(const Geometry& g, const Strides& s)
      : HW(g.H * g.W), W(g.W), sn(s.n), sh(s.h), sw(s.w),
        uniform((g.H == 1 || s.h == g.W * s.w) && (g.N == 1 || s.n == g.H * g.W * s.w)) {}

  int64_t operator()(int64_t r) const {
    if (uniform) return r * sw;
    const int64_t n = r / HW, hw = r % HW;
    return n * sn + (hw / W) * sh + (hw % W) * sw;
  }
};

}  // namespace resnet_fast::cpu
