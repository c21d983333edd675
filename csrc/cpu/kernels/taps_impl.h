// The tap-by-tap convolution for one ISA build (included from
// kernels_impl.h): one matrix product per kernel tap (nine for 3x3, one for
// 1x1), each over only the output pixels whose shifted input pixel lies
// inside the image. On small maps most pixels are borders (on a 2x2 map each
// output of a 3x3 convolution sees 4 of the 9 taps), so this does what the
// convolution needs and nothing for the padding, and reads the weight once:
// 9 C K values, where Winograd's transformed weight is 36 C K. Any stride: a
// tap of a strided convolution is the same product over a strided set of
// pixels.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../../common/static_switch.h"
#include "row_products.h"
#include "taps_params.h"
#include "vec_io.h"

namespace resnet_fast::cpu::RF_KERNEL_NS {

template <typename T, bool kResidual, bool kRelu>
void taps_epilogue(const TapsConvParams& p) {
  using V = at::vec::Vectorized<T>;
  constexpr int64_t kStep = V::size();
  const T* sums = static_cast<const T*>(p.sums);
  const T* bias = static_cast<const T*>(p.bias);
  const T* residual = static_cast<const T*>(p.residual);
  T* out = static_cast<T*>(p.out);
  for (int64_t i = 0; i < p.count; ++i) {
    const int64_t at_px = (p.first + i) * p.K + p.k0;
    for (int64_t j = 0; j < p.Kb; j += kStep) {
      const int64_t n = std::min(kStep, p.Kb - j);
      V v = load_n(sums + i * p.Kb + j, n);
      if (bias != nullptr) v = v + load_n(bias + p.k0 + j, n);
      const T* r = kResidual ? residual + at_px + j : nullptr;
      store_output<T, kResidual, kRelu>(out + at_px + j, r, v, n);
    }
  }
}

// The pixel pairs of a tap: for each output pixel (n, y, x), in order, whose
// input pixel for the tap lies inside the image, calls pair(input pixel,
// output pixel) with their indices in [N, H, W] and [N, Ho, Wo].
template <typename Pair>
inline void tap_pairs(int64_t N, int64_t H, int64_t W, int64_t ksize, int64_t stride, int64_t Ho, int64_t Wo,
                      int64_t tap, int64_t first, int64_t count, const Pair& pair) {
  const int64_t pad = ksize / 2, dy = tap / ksize - pad, dx = tap % ksize - pad;
  for (int64_t q = first; q < first + count; ++q) {
    const int64_t n = q / (Ho * Wo), y = q / Wo % Ho * stride + dy, x = q % Wo * stride + dx;
    if (y < 0 || y >= H || x < 0 || x >= W) continue;
    pair((n * H + y) * W + x, q);
  }
}

// Sums over the taps in the order dy, dx (each tap's product over the input
// channels summed from zero, then added), then bias, residual and ReLU: the
// same arithmetic for a pixel wherever it lies in the split of the work.
template <typename T>
void taps_conv_impl(const TapsConvParams& p) {
  const T* x = static_cast<const T*>(p.x);
  const T* weight = static_cast<const T*>(p.weight);
  T* sums = static_cast<T*>(p.sums);
  std::fill(sums, sums + p.count * p.Kb, T(0));
  std::vector<const T*> from(static_cast<size_t>(p.count));
  std::vector<int64_t> to(static_cast<size_t>(p.count));
  for (int64_t tap = 0; tap < p.ksize * p.ksize; ++tap) {
    int64_t rows = 0;
    tap_pairs(p.N, p.H, p.W, p.ksize, p.stride, p.Ho, p.Wo, tap, p.first, p.count, [&](int64_t in, int64_t out) {
      from[rows] = x + in * p.C;
      to[rows++] = out - p.first;
    });
    row_products<T>(
        rows, [&](int64_t r) { return from[r]; }, [&](int64_t r) { return sums + to[r] * p.Kb; },
        weight + tap * p.C * p.K + p.k0, p.K, p.C, p.Kb, /*accumulate=*/true);
  }
  with_flags(p.residual != nullptr, p.relu, [&](auto res, auto relu) {
    taps_epilogue<T, decltype(res)::value, decltype(relu)::value>(p);
  });
}

// One tap's weight gradient for a block of channels (TapsWeightGradParams):
// rows are input channels, columns output channels, the sum runs over the
// tap's pixel pairs (row_products.h's transposed form).
template <typename T>
void taps_weight_grad_impl(const TapsWeightGradParams& p) {
  const T* x = static_cast<const T*>(p.x);
  const T* grad = static_cast<const T*>(p.grad);
  std::vector<const T*> xs, gs;
  xs.reserve(static_cast<size_t>(p.N * p.Ho * p.Wo));
  gs.reserve(xs.capacity());
  tap_pairs(p.N, p.H, p.W, p.ksize, p.stride, p.Ho, p.Wo, p.tap, 0, p.N * p.Ho * p.Wo,
            [&](int64_t in, int64_t out) {
              xs.push_back(x + in * p.C + p.c0);
              gs.push_back(grad + out * p.K + p.k0);
            });
  pair_products<T>(p.Cb, p.Kb, static_cast<int64_t>(xs.size()), xs.data(), gs.data(), static_cast<T*>(p.sums),
                   p.ld);
}

}  // namespace resnet_fast::cpu::RF_KERNEL_NS
