// Register-blocked matrix products on one thread, for the CPU convolutions
// that are sums of [rows x C] by [C x K] products (row_products;
// winograd_impl.h: one per transform element; taps_impl.h: one per kernel
// tap), and for sums over pairs of rows, [C x pairs] by [pairs x K]
// (pair_products; taps_impl.h's weight gradient). Both run the one block
// kernel, block_sum. Included from kernels_impl.h's ISA builds, inside
// RF_KERNEL_NS.
//
// Rows are addressed through functions and pointer tables, so that a
// product can read its rows from anywhere (tiles of a buffer, pixels of an
// image shifted by a tap) and add into rows anywhere, without copies.
#pragma once

#include <algorithm>
#include <cstdint>

#include "vec_io.h"

namespace resnet_fast::cpu::RF_KERNEL_NS {

// c_row(r)[0 : kVecs * L] (+)= sum over d < depth of a_at(r, d) * b_row(d)[0 : kVecs * L]
// for the kRows rows r (L lanes per vector; the sum taken from zero, then
// added to c's values where `accumulate`), or with kTail (and kVecs == 1)
// only the first `width` < L columns. The kRows x kVecs accumulators stay in
// registers: each step along `depth` loads kVecs vectors of b's row and
// broadcasts kRows scalars of a.
template <typename T, int kRows, int kVecs, bool kTail, typename AAt, typename BRow, typename CRow>
inline void block_sum(const AAt& a_at, const BRow& b_row, const CRow& c_row, int64_t depth, int64_t width,
                      bool accumulate) {
  using V = at::vec::Vectorized<T>;
  constexpr int64_t L = V::size();
  V acc[kRows][kVecs];
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < kVecs; ++v) acc[r][v] = V(T(0));
  for (int64_t d = 0; d < depth; ++d) {
    const T* brow = b_row(d);
    V bv[kVecs];
    for (int v = 0; v < kVecs; ++v) bv[v] = kTail ? load_n(brow, width) : V::loadu(brow + v * L);
    for (int r = 0; r < kRows; ++r) {
      const V av(a_at(r, d));
      for (int v = 0; v < kVecs; ++v) acc[r][v] = at::vec::fmadd(av, bv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < kVecs; ++v) {
      T* cr = c_row(r);
      if constexpr (kTail)
        store_n(cr, accumulate ? acc[r][v] + load_n(cr, width) : acc[r][v], width);
      else
        (accumulate ? acc[r][v] + V::loadu(cr + v * L) : acc[r][v]).store(cr + v * L);
    }
}

// c[r] (+)= a[r][0 : depth] b[0 : depth] for kRows rows r (b's rows ldb apart).
template <typename T, int kRows, int kVecs, bool kTail>
inline void product_block(const T* const* a, const T* b, int64_t ldb, T* const* c, int64_t depth,
                          int64_t width, bool accumulate) {
  block_sum<T, kRows, kVecs, kTail>([&](int r, int64_t d) { return a[r][d]; },
                                    [&](int64_t d) { return b + d * ldb; }, [&](int r) { return c[r]; }, depth,
                                    width, accumulate);
}

// A product_block of `rows` <= kMaxRows rows.
template <typename T, int kVecs, bool kTail, int kMaxRows>
inline void product_rows(int64_t rows, const T* const* a, const T* b, int64_t ldb, T* const* c,
                         int64_t depth, int64_t width, bool accumulate) {
  if constexpr (kMaxRows > 0) {
    if (rows == kMaxRows)
      return product_block<T, kMaxRows, kVecs, kTail>(a, b, ldb, c, depth, width, accumulate);
    product_rows<T, kVecs, kTail, kMaxRows - 1>(rows, a, b, ldb, c, depth, width, accumulate);
  }
}

// c[i][0 : width] (+)= a[i][0 : depth] b[0 : depth][0 : width] for the rows
// i < rows, with a[i] = a_row(i), c[i] = c_row(i) (each `width` apart in
// c's row; added to c's values where `accumulate`).
//
// Blocks of 6 rows by kVecs vectors of columns: 4 vectors where a vector
// holds 64 bytes (6 x 4 accumulators + 4 + 1 operands: 29 of AVX-512's 32
// registers), 2 otherwise (15 of AVX2's 16). The sum over `depth` runs in
// blocks of 64, each summed from zero and then added to the previous blocks'
// sum: a panel of b (64 x 64 values, 16 KB in float32) stays in the L1 cache
// for every row block, and no accumulator sums more than 64 terms (one
// accumulator over 512 terms rounds about 1.7x more than the blocked sum:
// measured on random 64 x 512 by 512 x 256 products). Each output's
// arithmetic depends on `depth` only, not on `rows` or on where the block
// lies, so the split of the work never changes a bit.
template <typename T, typename ARow, typename CRow>
void row_products(int64_t rows, const ARow& a_row, const CRow& c_row, const T* b, int64_t ldb,
                  int64_t depth, int64_t width, bool accumulate) {
  using V = at::vec::Vectorized<T>;
  constexpr int64_t L = V::size();
  constexpr int kVecs = L * sizeof(T) >= 64 ? 4 : 2;
  constexpr int kRows = 6;
  constexpr int64_t kDepth = 64;
  const T* a[kRows];
  T* c[kRows];
  // Columns j .. j + cols of every row, for the depth block d0 .. d0 + 64.
  const auto columns = [&](int64_t j, int64_t cols, int64_t d0) {
    const int64_t part = std::min(kDepth, depth - d0);
    const bool add = accumulate || d0 > 0;
    for (int64_t i = 0; i < rows; i += kRows) {
      const int64_t n = std::min<int64_t>(kRows, rows - i);
      for (int64_t r = 0; r < n; ++r) {
        a[r] = a_row(i + r) + d0;
        c[r] = c_row(i + r) + j;
      }
      const T* bj = b + d0 * ldb + j;
      if (cols == kVecs * L)
        product_rows<T, kVecs, false, kRows>(n, a, bj, ldb, c, part, cols, add);
      else if (cols == L)
        product_rows<T, 1, false, kRows>(n, a, bj, ldb, c, part, cols, add);
      else
        product_rows<T, 1, true, kRows>(n, a, bj, ldb, c, part, cols, add);
    }
  };
  // (d0 = 0 runs even where depth = 0: it writes the zero products.)
  int64_t j = 0;
  for (; j + kVecs * L <= width; j += kVecs * L)
    for (int64_t d0 = 0; d0 == 0 || d0 < depth; d0 += kDepth) columns(j, kVecs * L, d0);
  for (; j < width; j += L)
    for (int64_t d0 = 0; d0 == 0 || d0 < depth; d0 += kDepth) columns(j, std::min(L, width - j), d0);
}

// c[r * ldc] (+)= sum over d < depth of a[d][ai + r] * b[d][bj : ...] for
// kRows rows r: the transposed form of product_block, for sums over pairs of
// rows (a[d] and b[d] point into two matrices' rows).
template <typename T, int kRows, int kVecs, bool kTail>
inline void pair_block(const T* const* a, int64_t ai, const T* const* b, int64_t bj, T* c, int64_t ldc,
                       int64_t depth, int64_t width, bool accumulate) {
  block_sum<T, kRows, kVecs, kTail>([&](int r, int64_t d) { return a[d][ai + r]; },
                                    [&](int64_t d) { return b[d] + bj; }, [&](int r) { return c + r * ldc; },
                                    depth, width, accumulate);
}

template <typename T, int kVecs, bool kTail, int kMaxRows>
inline void pair_rows(int64_t rows, const T* const* a, int64_t ai, const T* const* b, int64_t bj, T* c,
                      int64_t ldc, int64_t depth, int64_t width, bool accumulate) {
  if constexpr (kMaxRows > 0) {
    if (rows == kMaxRows)
      return pair_block<T, kMaxRows, kVecs, kTail>(a, ai, b, bj, c, ldc, depth, width, accumulate);
    pair_rows<T, kVecs, kTail, kMaxRows - 1>(rows, a, ai, b, bj, c, ldc, depth, width, accumulate);
  }
}

// c[i][0 : width] = sum over d < depth of a[d][i] * b[d][0 : width] for the
// rows i < rows (c's rows ldc apart): a sum over `depth` pairs of rows, the
// transposed form of row_products, blocked and rounded the same way (blocks
// of 64 pairs, each summed from zero and then added).
template <typename T>
void pair_products(int64_t rows, int64_t width, int64_t depth, const T* const* a, const T* const* b, T* c,
                   int64_t ldc) {
  using V = at::vec::Vectorized<T>;
  constexpr int64_t L = V::size();
  constexpr int kVecs = L * sizeof(T) >= 64 ? 4 : 2;
  constexpr int kRows = 6;
  constexpr int64_t kDepth = 64;
  const auto columns = [&](int64_t j, int64_t cols, int64_t d0) {
    const int64_t part = std::min(kDepth, depth - d0);
    for (int64_t i = 0; i < rows; i += kRows) {
      const int64_t n = std::min<int64_t>(kRows, rows - i);
      T* ci = c + i * ldc + j;
      if (cols == kVecs * L)
        pair_rows<T, kVecs, false, kRows>(n, a + d0, i, b + d0, j, ci, ldc, part, cols, d0 > 0);
      else if (cols == L)
        pair_rows<T, 1, false, kRows>(n, a + d0, i, b + d0, j, ci, ldc, part, cols, d0 > 0);
      else
        pair_rows<T, 1, true, kRows>(n, a + d0, i, b + d0, j, ci, ldc, part, cols, d0 > 0);
    }
  };
  // (d0 = 0 runs even where depth = 0: it writes the zero sums.)
  int64_t j = 0;
  for (; j + kVecs * L <= width; j += kVecs * L)
    for (int64_t d0 = 0; d0 == 0 || d0 < depth; d0 += kDepth) columns(j, kVecs * L, d0);
  for (; j < width; j += L)
    for (int64_t d0 = 0; d0 == 0 || d0 < depth; d0 += kDepth) columns(j, std::min(L, width - j), d0);
}

}  // namespace resnet_fast::cpu::RF_KERNEL_NS
