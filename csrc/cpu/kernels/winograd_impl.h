// Winograd F(4x4, 3x3) convolution tiles for one ISA build (included from
// kernels_impl.h, inside nothing: it opens RF_KERNEL_NS itself).
//
// A 3x3 convolution of a 6x6 patch d gives a 4x4 tile y = A^T [(G g G^T) .
// (B^T d B)] A, with 36 multiplications per input channel instead of 144: the
// elementwise product over the 36 elements, summed over input channels, is
// one matrix product per element (winograd_products_impl, with
// row_products.h). The matrices come from the Toom-Cook construction with the
// interpolation points 0, 1, -1, 2, -1/2 and infinity (exact rationals;
// checked exactly in tests/test_conv_algorithms.py through float64
// results), which round about 2.5x less in float32 than the common 0, +-1,
// +-2. Measured on the ResNet-18 stages (64 to 512 channels), the largest
// float32 error is 1.0e-6 to 2.1e-6 of the largest output; oneDNN's direct
// convolution: 0.8e-6 to 2.2e-6 (benchmarks/conv_algorithms.py).
//
//   B^T = | 1  3/2   -2  -3/2    1  0 |   G = |     1     0     0 |
//         | 0   -1 -5/2  -1/2    1  0 |       |  -1/3  -1/3  -1/3 |
//         | 0    1  1/2  -5/2    1  0 |       |   1/3  -1/3   1/3 |
//         | 0 -1/2   -1   1/2    1  0 |       |  1/15  2/15  4/15 |
//         | 0    2   -1    -2    1  0 |       |-16/15  8/15 -4/15 |
//         | 0    1  3/2    -2 -3/2  1 |       |     0     0     1 |
//
//   A^T = | 1  1  1  1     1  0 |
//         | 0  1 -1  2  -1/2  0 |
//         | 0  1  1  4   1/4  0 |
//         | 0  1 -1  8  -1/8  1 |
#pragma once

#include <algorithm>
#include <cstdint>

#include "../../common/static_switch.h"
#include "row_products.h"
#include "vec_io.h"
#include "winograd_params.h"

namespace resnet_fast::cpu::RF_KERNEL_NS {

constexpr int64_t kWinoTile = 4;   // output tile side
constexpr int64_t kWinoPatch = 6;  // input patch side: tile + kernel - 1

inline int64_t wino_tiles(int64_t size) { return (size + kWinoTile - 1) / kWinoTile; }

// o = B^T d along one axis; d and o step by `sd` / `so` elements.
template <typename V>
inline void input_1d(const V* d, int64_t sd, V* o, int64_t so) {
  using S = typename V::value_type;
  const V d0 = d[0], d1 = d[sd], d2 = d[2 * sd], d3 = d[3 * sd], d4 = d[4 * sd], d5 = d[5 * sd];
  const V d13 = d1 - d3, d42 = d4 - d2;
  o[0] = (d0 + d4) - V(S(2)) * d2 + V(S(1.5)) * d13;
  o[so] = d4 - d1 - V(S(2.5)) * d2 - V(S(0.5)) * d3;
  o[2 * so] = d4 + d1 + V(S(0.5)) * d2 - V(S(2.5)) * d3;
  o[3 * so] = d42 - V(S(0.5)) * d13;
  o[4 * so] = d42 + V(S(2)) * d13;
  o[5 * so] = (d1 + d5) - V(S(2)) * d3 + V(S(1.5)) * (d2 - d4);
}

// o = A^T m along one axis (6 in, 4 out).
template <typename V>
inline void output_1d(const V* m, int64_t sm, V* o, int64_t so) {
  using S = typename V::value_type;
  const V m0 = m[0], m1 = m[sm], m2 = m[2 * sm], m3 = m[3 * sm], m4 = m[4 * sm], m5 = m[5 * sm];
  const V sum12 = m1 + m2, diff12 = m1 - m2;
  o[0] = m0 + sum12 + (m3 + m4);
  o[so] = diff12 + V(S(2)) * m3 - V(S(0.5)) * m4;
  o[2 * so] = sum12 + V(S(4)) * m3 + V(S(0.25)) * m4;
  o[3 * so] = diff12 + V(S(8)) * m3 - V(S(0.125)) * m4 + m5;
}

// Where tile t (ordered by image, tile row, tile column) lies: image n, and
// the output pixel (y, x) at its top-left corner.
struct TilePlace {
  int64_t n, y, x;
  TilePlace(int64_t t, int64_t H, int64_t W) {
    const int64_t th = wino_tiles(H), tw = wino_tiles(W);
    n = t / (th * tw);
    y = t / tw % th * kWinoTile;
    x = t % tw * kWinoTile;
  }
};

template <typename T>
void winograd_input_impl(const WinogradInputParams& p) {
  using V = at::vec::Vectorized<T>;
  constexpr int64_t kStep = V::size();
  const T* x = static_cast<const T*>(p.x);
  T* tiles = static_cast<T*>(p.tiles);
  V d[kWinoPatch * kWinoPatch], rows[kWinoPatch * kWinoPatch], v[kWinoPatch * kWinoPatch];
  for (int64_t i = 0; i < p.count; ++i) {
    const TilePlace place(p.first + i, p.H, p.W);
    for (int64_t c = 0; c < p.C; c += kStep) {
      const int64_t nc = std::min(kStep, p.C - c);
      // The 6x6 patch around the tile (padding 1: zeros outside the image).
      for (int64_t r = 0; r < kWinoPatch; ++r) {
        const int64_t y = place.y - 1 + r;
        for (int64_t s = 0; s < kWinoPatch; ++s) {
          const int64_t xx = place.x - 1 + s;
          const bool inside = y >= 0 && y < p.H && xx >= 0 && xx < p.W;
          d[r * kWinoPatch + s] =
              inside ? load_n(x + ((place.n * p.H + y) * p.W + xx) * p.C + c, nc) : V(T(0));
        }
      }
      for (int64_t s = 0; s < kWinoPatch; ++s) input_1d(d + s, kWinoPatch, rows + s, kWinoPatch);
      for (int64_t r = 0; r < kWinoPatch; ++r) input_1d(rows + r * kWinoPatch, 1, v + r * kWinoPatch, 1);
      for (int64_t e = 0; e < kWinoPatch * kWinoPatch; ++e)
        store_n(tiles + (e * p.count + i) * p.C + c, v[e], nc);
    }
  }
}

// The 36 matrix products of a chunk of tiles (row_products.h: rows are
// tiles, columns output channels, the sum runs over input channels).
template <typename T>
void winograd_products_impl(const WinogradProductParams& p) {
  const T* tiles = static_cast<const T*>(p.tiles);
  const T* weight = static_cast<const T*>(p.weight_tiles);
  T* products = static_cast<T*>(p.products);
  for (int64_t e = 0; e < kWinoPatch * kWinoPatch; ++e) {
    const T* a = tiles + e * p.count * p.C;
    T* c = products + e * p.count * p.Kb;
    row_products<T>(
        p.count, [&](int64_t i) { return a + i * p.C; }, [&](int64_t i) { return c + i * p.Kb; },
        weight + e * p.C * p.K + p.k0, p.K, p.C, p.Kb, /*accumulate=*/false);
  }
}

template <typename T, bool kResidual, bool kRelu>
void winograd_output_rows(const WinogradOutputParams& p) {
  using V = at::vec::Vectorized<T>;
  constexpr int64_t kStep = V::size();
  const T* products = static_cast<const T*>(p.products);
  const T* bias = static_cast<const T*>(p.bias);
  const T* residual = static_cast<const T*>(p.residual);
  T* out = static_cast<T*>(p.out);
  V m[kWinoPatch * kWinoPatch], cols[kWinoTile * kWinoPatch], y[kWinoTile * kWinoTile];
  for (int64_t i = 0; i < p.count; ++i) {
    const TilePlace place(p.first + i, p.H, p.W);
    const int64_t rows_in = std::min(kWinoTile, p.H - place.y);  // the tile cropped to the image
    const int64_t cols_in = std::min(kWinoTile, p.W - place.x);
    for (int64_t j = 0; j < p.Kb; j += kStep) {
      const int64_t nk = std::min(kStep, p.Kb - j), k = p.k0 + j;
      for (int64_t e = 0; e < kWinoPatch * kWinoPatch; ++e)
        m[e] = load_n(products + (e * p.count + i) * p.Kb + j, nk);
      for (int64_t s = 0; s < kWinoPatch; ++s) output_1d(m + s, kWinoPatch, cols + s, kWinoPatch);
      for (int64_t r = 0; r < kWinoTile; ++r) output_1d(cols + r * kWinoPatch, 1, y + r * kWinoTile, 1);
      const V b = bias != nullptr ? load_n(bias + k, nk) : V(T(0));
      for (int64_t r = 0; r < rows_in; ++r) {
        for (int64_t s = 0; s < cols_in; ++s) {
          const int64_t at_px = ((place.n * p.H + place.y + r) * p.W + place.x + s) * p.K + k;
          store_output<T, kResidual, kRelu>(out + at_px, kResidual ? residual + at_px : nullptr,
                                            y[r * kWinoTile + s] + b, nk);
        }
      }
    }
  }
}

template <typename T>
void winograd_output_impl(const WinogradOutputParams& p) {
  with_flags(p.residual != nullptr, p.relu, [&](auto res, auto relu) {
    winograd_output_rows<T, decltype(res)::value, decltype(relu)::value>(p);
  });
}

}  // namespace resnet_fast::cpu::RF_KERNEL_NS
