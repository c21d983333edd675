// The plain description of an [N, C, H, W] operand that every kernel takes,
// the CPU ones (compiled once per ISA) and the CUDA ones alike: its dtype, the
// walk the kernels take over it, its strides and sizes. No ATen and no CUDA
// headers, so that both kernel folders (and nvcc without torch) include it.
#pragma once

#include <cstdint>

namespace resnet_fast {

enum class Dtype : int { kFloat, kDouble, kHalf, kBFloat16 };

// How the kernels walk a [N, C, H, W] tensor (every operand of one call alike).
//   kPlanar: stride_w == 1; work is split into "lines" (n, c, h) of W
//            contiguous elements (merged into one line of H*W per (n, c) when
//            every operand is dense over H and W).
//   kRows:   stride_c == 1 (channels_last); work is split into rows (n, h, w)
//            of C contiguous channels.
enum class Layout : int { kPlanar, kRows };

// Strides in elements of one [N, C, H, W] operand.
struct Strides {
  int64_t n = 0, c = 0, h = 0, w = 0;
};

// Geometry shared by every operand of one kernel call. Each operand has its
// own strides but all belong to the same `layout` class.
struct Geometry {
  int64_t N = 0, C = 0, H = 0, W = 0;
  Layout layout = Layout::kPlanar;
  Dtype dtype = Dtype::kFloat;
};

}  // namespace resnet_fast
