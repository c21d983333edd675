// The CPU kernels, written once over at::vec and compiled once per ISA by
// capability_*.cpp (which define RF_KERNEL_NS and ATen's CPU_CAPABILITY).
//
// Passes over memory (one pass = one read or write of an activation):
//   training forward   bn_stats (read x) + bn_apply (read x [+ r], write y)
//                      = 3 passes (4 with a residual); eager BN + [add +] ReLU
//                      takes 5 (8 with a residual).
//   training backward  bn_backward_reduce (read dy, x [+ r], write dr when
//                      there is a residual) + bn_backward_apply (read dy or dr,
//                      x; write dx) = 5 passes (7 with a residual); eager takes
//                      8. The ReLU mask is recomputed from x (and r), never
//                      stored.
//
// Statistics are stable for inputs with a large mean: each block (a few
// hundred values per channel) is reduced in one pass to shifted sums of
// x - x0, x0 the block's first value, so that the fp32 sums stay small; the
// blocks are combined in fp64 with Chan's parallel update.
//
// Reductions write one partial result per channel (the params' splits = 1):
// the threads merge their own parts here, and the CPU finalize
// (csrc/cpu/bn_kernels_cpu.cpp) turns the partials into [C] outputs with the
// per-channel steps the CUDA finalize kernels run.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>

#include "../../common/channel_math.h"
#include "../../common/static_switch.h"
#include "indexing.h"
#include "isa_kernels.h"
#include "vec_io.h"
#include "taps_impl.h"
#include "winograd_impl.h"

namespace resnet_fast::cpu::RF_KERNEL_NS {

// Heap array local to this ISA build (no std containers: their inline code
// would be shared, by the linker, with the other builds).
template <typename E>
struct Buffer {
  E* p;
  explicit Buffer(int64_t n) : p(new E[static_cast<size_t>(std::max<int64_t>(n, 1))]()) {}
  ~Buffer() { delete[] p; }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  E& operator[](int64_t i) { return p[i]; }
};

inline PlanarShape planar_shape(const Geometry& g, std::initializer_list<const Strides*> ops) {
  bool dense = true;
  for (const Strides* s : ops)
    if (s != nullptr) dense = dense && PlanarShape::dense_hw(g, *s);
  return dense ? PlanarShape{1, g.H * g.W} : PlanarShape{g.H, g.W};
}

// Index of the per-thread partial-result slot of the calling pool thread.
inline int64_t thread_slot(int64_t threads) {
  const int64_t tid = at::get_thread_num();
  TORCH_CHECK(tid >= 0 && tid < threads, "resnet_fast: thread ", tid, " outside the pool of ", threads);
  return tid;
}

// ---------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------

// Rows of a channels_last block reduced into fp32 partials before they are
// added into fp64: at most this many terms per fp32 accumulator lane.
constexpr int64_t kBlockRows = 256;

// Shifted sums of one block of one channel vector: with d = x - shift,
// s1 = sum d and s2 = sum d^2. The shift (the block's first value) keeps the
// fp32 sums small for inputs with a large mean; blocks are short enough
// (kBlockRows terms per lane) for fp32 accumulation.
template <typename V>
struct ShiftedSums {
  V s1{0}, s2{0};
  void add(const V& d) {
    s1 += d;
    s2 = at::vec::fmadd(d, d, s2);
  }
};

// Channel c's partial result, [3][1][C] (count, mean, M2).
inline void store_moments(double* partials, int64_t C, int64_t c, const Moments& m) {
  partials[c] = m.count;
  partials[C + c] = m.mean;
  partials[2 * C + c] = m.m2;
}

// Merges one block of n values, given as shifted sums, into `m` (fp64).
inline void merge_shifted(Moments& m, double n, double shift, double s1, double s2) {
  const double mean = s1 / n;
  merge_moments(m, n, shift + mean, std::max(s2 - s1 * mean, 0.0));
}

template <typename T>
void stats_planar(const StatsParams& p) {
  using acc_t = typename Io<T>::acc_t;
  using V = typename Io<T>::V;
  constexpr int64_t K = Io<T>::kStep;
  // Lines are cut into blocks of kBlockLen values (kBlockLen / (2K) terms per
  // accumulator lane).
  constexpr int64_t kBlockLen = 8192;
  const Geometry& g = p.g;
  const T* x = static_cast<const T*>(p.x);
  const PlanarShape shape = planar_shape(g, {&p.sx});
  at::parallel_for(0, g.C, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      Moments m{};
      for (int64_t n = 0; n < g.N; ++n) {
        for (int64_t h = 0; h < shape.lines_per_nc; ++h) {
          const T* line = x + planar_offset(p.sx, n, c, h);
          for (int64_t s = 0; s < shape.line_len; s += kBlockLen) {
            const int64_t len = std::min(kBlockLen, shape.line_len - s);
            const T* block = line + s;
            const V shift(lane0(load_n(block, 1)));
            ShiftedSums<V> a, b;  // two chains for instruction-level parallelism
            int64_t j = 0;
            for (; j + 2 * K <= len; j += 2 * K) {
              a.add(Io<T>::load(block + j) - shift);
              b.add(Io<T>::load(block + j + K) - shift);
            }
            for (; j < len; j += K) {
              const int64_t k = std::min(K, len - j);
              a.add(first_n(load_n(block + j, k) - shift, k));
            }
            merge_shifted(m, static_cast<double>(len), lane0(shift), hsum(a.s1 + b.s1),
                          hsum(a.s2 + b.s2));
          }
        }
      }
      store_moments(p.partials, g.C, c, m);
    }
  });
}

// Whether a channels_last reduction over `rows` rows of C channels splits
// its work by channel groups rather than by blocks of rows: when there are
// too few rows to give every thread a block (the small feature maps of a
// ResNet's last stages, e.g. [16, 2048, 2, 2]: 64 rows), splitting by rows
// would leave all but one thread idle.
inline bool split_by_channels(int64_t rows, int64_t C, int64_t K, int64_t threads) {
  return threads > 1 && rows < threads * kBlockRows && C >= 2 * K;
}

// Channel groups of a channels_last row handed to one task: K-lane vectors,
// at least 64 channels (a cache line of fp32 or more), so that a task's
// slice of each row is read in full lines.
inline int64_t channel_grain(int64_t K) { return std::max<int64_t>(1, 64 / K); }

// stats_rows_tile's work with the accumulators `acc` (one per vector of
// the row; NV > 0: a row of exactly NV vectors, `acc` in registers).
template <typename T, int NV>
void stats_rows_blocks(const StatsParams& p, const RowIndex& row, int64_t r0, int64_t r1,
                       int64_t j0, int64_t j1, double& count, double* mean, double* m2,
                       ShiftedSums<typename Io<T>::V>* acc) {
  using acc_t = typename Io<T>::acc_t;
  using V = typename Io<T>::V;
  constexpr int64_t K = Io<T>::kStep;
  const int64_t width = row_len<NV, K>(j1 - j0), padded = (width + K - 1) / K * K;
  const T* x = static_cast<const T*>(p.x) + j0;
  Buffer<acc_t> shift(padded), s1(padded), s2(padded);
  for (int64_t b0 = r0; b0 < r1; b0 += kBlockRows) {
    const int64_t b1 = std::min(r1, b0 + kBlockRows), nb = b1 - b0;
    const T* first = x + row(b0);
    for (int64_t j = 0; j < width; j += K) {
      load_n(first + j, std::min(K, width - j)).store(shift.p + j);
      acc[j / K] = ShiftedSums<V>{};
    }
    const auto shifts = row_coefs<NV>(shift.p);
    // Row by row: every lane's chain advances once per row, and rows are
    // read front to back (long channel vectors stream well this way).
    for (int64_t r = b0; r < b1; ++r) {
      const T* xr = x + row(r);
      for (int64_t j = 0; j < width; j += K) {
        const int64_t k = std::min(K, width - j);
        acc[j / K].add(load_n(xr + j, k) - shifts.at(j, K));
      }
    }
    for (int64_t j = 0; j < width; j += K) {
      acc[j / K].s1.store(s1.p + j);
      acc[j / K].s2.store(s2.p + j);
    }
    for (int64_t c = 0; c < width; ++c) {
      Moments m{count, mean[j0 + c], m2[j0 + c]};
      merge_shifted(m, static_cast<double>(nb), shift[c], s1[c], s2[c]);
      mean[j0 + c] = m.mean;
      m2[j0 + c] = m.m2;
    }
    count += nb;
  }
}

// Accumulates rows [r0, r1) of channels [j0, j1) (j0 a multiple of K) into
// (count, mean[c], m2[c]), in blocks of kBlockRows rows.
template <typename T>
void stats_rows_tile(const StatsParams& p, const RowIndex& row, int64_t r0, int64_t r1,
                     int64_t j0, int64_t j1, double& count, double* mean, double* m2) {
  with_row_vectors<Io<T>::kStep>(j1 - j0, [&](auto nv) {
    constexpr int NV = decltype(nv)::value;
    if constexpr (NV == 0) {
      Buffer<ShiftedSums<typename Io<T>::V>> acc((j1 - j0 + Io<T>::kStep - 1) / Io<T>::kStep);
      stats_rows_blocks<T, NV>(p, row, r0, r1, j0, j1, count, mean, m2, acc.p);
    } else {
      ShiftedSums<typename Io<T>::V> acc[NV];  // in registers: a row is NV vectors
      stats_rows_blocks<T, NV>(p, row, r0, r1, j0, j1, count, mean, m2, acc);
    }
  });
}

template <typename T>
void stats_rows(const StatsParams& p) {
  constexpr int64_t K = Io<T>::kStep;
  const Geometry& g = p.g;
  const int64_t C = g.C, rows = g.N * g.H * g.W;
  const RowIndex row(g, p.sx);

  // One (count, mean[C], M2[C]) slot per thread, merged at the end.
  const int64_t threads = at::get_num_threads();
  Buffer<double> slot_count(threads), slot_mean(threads * C), slot_m2(threads * C);

  if (split_by_channels(rows, C, K, threads)) {
    // Every task owns whole channels: slot 0 holds them all.
    const int64_t groups = (C + K - 1) / K;
    at::parallel_for(0, groups, channel_grain(K), [&](int64_t g0, int64_t g1) {
      double count = 0;
      stats_rows_tile<T>(p, row, 0, rows, g0 * K, std::min(C, g1 * K), count, slot_mean.p,
                         slot_m2.p);
    });
    slot_count[0] = static_cast<double>(rows);
  } else {
    at::parallel_for(0, rows, kBlockRows, [&](int64_t r0, int64_t r1) {
      const int64_t tid = thread_slot(threads);
      stats_rows_tile<T>(p, row, r0, r1, 0, C, slot_count[tid], slot_mean.p + tid * C,
                         slot_m2.p + tid * C);
    });
  }

  for (int64_t c = 0; c < C; ++c) {
    Moments m{};
    for (int64_t t = 0; t < threads; ++t)
      merge_moments(m, slot_count[t], slot_mean[t * C + c], slot_m2[t * C + c]);
    store_moments(p.partials, C, c, m);
  }
}

// ---------------------------------------------------------------------------
// Normalize + affine [+ residual] [+ ReLU]
// ---------------------------------------------------------------------------

// The forward pre-activation; the backward recomputes it through this same
// function so that its ReLU mask is bit-identical to the forward's.
// `centered` is x - mean.
template <typename T, bool kResidual, typename Coef>
inline typename Io<T>::V pre_activation(const typename Io<T>::V& centered, const T* r, int64_t j,
                                        int64_t k, const Coef& scale, const Coef& bias) {
  auto pre = at::vec::fmadd(centered, scale.at(j, k), bias.at(j, k));
  if constexpr (kResidual) pre = pre + load_n(r + j, k);
  return pre;
}

// x - mean, with the mean split in hi and lo parts (see params.h).
template <typename V, typename Coef>
inline V centered_value(const V& xv, int64_t j, int64_t k, const Coef& mean, const Coef& mean_lo) {
  return (xv - mean.at(j, k)) - mean_lo.at(j, k);
}

template <typename T, bool kResidual, bool kRelu, typename Coef>
inline void apply_segment(const T* x, const T* r, T* out, int64_t len, const Coef& mean,
                          const Coef& mean_lo, const Coef& scale, const Coef& bias) {
  using V = typename Io<T>::V;
  constexpr int64_t K = Io<T>::kStep;
  for (int64_t j = 0; j < len; j += K) {
    const int64_t k = std::min(K, len - j);
    const V centered = centered_value(load_n(x + j, k), j, k, mean, mean_lo);
    V y = pre_activation<T, kResidual>(centered, r, j, k, scale, bias);
    if constexpr (kRelu) y = at::vec::maximum(y, V(0));
    store_n(out + j, y, k);
  }
}

template <typename T, bool kResidual, bool kRelu>
void apply_impl(const ApplyParams& p, const AffineRows& coefs) {
  using acc_t = typename Io<T>::acc_t;
  const Geometry& g = p.g;
  const T* x = static_cast<const T*>(p.x);
  const T* r = static_cast<const T*>(p.residual);
  T* out = static_cast<T*>(p.out);
  const acc_t* mean = static_cast<const acc_t*>(coefs.mean_hi);
  const acc_t* mean_lo = static_cast<const acc_t*>(coefs.mean_lo);
  const acc_t* scale = static_cast<const acc_t*>(coefs.scale);
  const acc_t* bias = static_cast<const acc_t*>(coefs.shift);
  if (g.layout == Layout::kRows) {
    constexpr int64_t K = Io<T>::kStep;
    const RowIndex ix(g, p.sx), ir(g, p.sr), io(g, p.so);
    const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(g.C, 1));
    with_row_vectors<K>(g.C, [&](auto nv) {
      constexpr int NV = decltype(nv)::value;
      at::parallel_for(0, g.N * g.H * g.W, grain, [&](int64_t r0, int64_t r1) {
        const auto mu = row_coefs<NV>(mean), lo = row_coefs<NV>(mean_lo);
        const auto sc = row_coefs<NV>(scale), bi = row_coefs<NV>(bias);
        const int64_t len = row_len<NV, K>(g.C);
        for (int64_t row = r0; row < r1; ++row)
          apply_segment<T, kResidual, kRelu>(x + ix(row), kResidual ? r + ir(row) : nullptr,
                                             out + io(row), len, mu, lo, sc, bi);
      });
    });
    return;
  }
  const PlanarShape shape = planar_shape(g, {&p.sx, kResidual ? &p.sr : nullptr, &p.so});
  const int64_t lines = g.N * g.C * shape.lines_per_nc;
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(shape.line_len, 1));
  at::parallel_for(0, lines, grain, [&](int64_t l0, int64_t l1) {
    for (int64_t l = l0; l < l1; ++l) {
      const int64_t h = l % shape.lines_per_nc, nc = l / shape.lines_per_nc;
      const int64_t c = nc % g.C, n = nc / g.C;
      apply_segment<T, kResidual, kRelu>(
          x + planar_offset(p.sx, n, c, h), kResidual ? r + planar_offset(p.sr, n, c, h) : nullptr,
          out + planar_offset(p.so, n, c, h), shape.line_len, Broadcast<acc_t>(mean[c]),
          Broadcast<acc_t>(mean_lo[c]), Broadcast<acc_t>(scale[c]), Broadcast<acc_t>(bias[c]));
    }
  });
}

// ---------------------------------------------------------------------------
// Backward reductions (and grad_residual)
// ---------------------------------------------------------------------------

// g = dy * [pre > 0], with the forward's pre-activation recomputed from
// centered = x - mean.
template <typename T, bool kResidual, bool kRelu, typename Coef>
inline typename Io<T>::V masked_grad(const typename Io<T>::V& dy, const typename Io<T>::V& centered,
                                     const T* r, int64_t j, int64_t k, const Coef& scale,
                                     const Coef& bias) {
  using V = typename Io<T>::V;
  if constexpr (!kRelu) {
    return dy;
  } else {
    return V::blendv(V(0), dy, pre_activation<T, kResidual>(centered, r, j, k, scale, bias) > V(0));
  }
}

template <typename T, bool kResidual, bool kRelu, typename Coef, typename Acc>
inline void backward_reduce_segment(const T* dy, const T* x, const T* r, T* gr, int64_t len,
                                    const Coef& mean, const Coef& mean_lo, const Coef& scale,
                                    const Coef& bias, Acc& sum_g, Acc& sum_gx) {
  using V = typename Io<T>::V;
  constexpr int64_t K = Io<T>::kStep;
  for (int64_t j = 0; j < len; j += K) {
    const int64_t k = std::min(K, len - j);
    const V centered = centered_value(load_n(x + j, k), j, k, mean, mean_lo);
    const V gv = masked_grad<T, kResidual, kRelu>(load_n(dy + j, k), centered, r, j, k, scale, bias);
    if constexpr (kResidual) store_n(gr + j, gv, k);
    // Lanes past k are zero in gv (zero-padded dy), so they add nothing.
    sum_g.at(j) += gv;
    sum_gx.at(j) = at::vec::fmadd(gv, centered, sum_gx.at(j));
  }
}

template <typename T, bool kResidual, bool kRelu>
void backward_reduce_impl(const BackwardReduceParams& p, const AffineRows& coefs) {
  using acc_t = typename Io<T>::acc_t;
  using V = typename Io<T>::V;
  constexpr int64_t K = Io<T>::kStep;
  const Geometry& g = p.g;
  const T* dy = static_cast<const T*>(p.dy);
  const T* x = static_cast<const T*>(p.x);
  const T* r = static_cast<const T*>(p.residual);
  T* gr = static_cast<T*>(p.grad_residual);
  const acc_t* mean = static_cast<const acc_t*>(coefs.mean_hi);
  const acc_t* mean_lo = static_cast<const acc_t*>(coefs.mean_lo);
  const acc_t* scale = static_cast<const acc_t*>(coefs.scale);
  const acc_t* bias = static_cast<const acc_t*>(coefs.shift);
  double* out_g = p.partials;         // [2][1][C]
  double* out_gx = p.partials + g.C;

  if (g.layout == Layout::kRows) {
    const int64_t C = g.C, rows = g.N * g.H * g.W;
    const RowIndex idy(g, p.sdy), ix(g, p.sx), ir(g, p.sr), igr(g, p.sgr);
    const int64_t threads = at::get_num_threads();
    // Block partial sums in acc_t, added into per-thread fp64 slots.
    Buffer<double> slot_g(threads * C), slot_gx(threads * C);
    // Rows [r0, r1) of channels [j0, j1), a row of NV vectors (NV = 0: any
    // width), accumulated in `ag` / `agx` and added into sg / sgx per block.
    auto tile_rows = [&](auto nv, int64_t r0, int64_t r1, int64_t j0, int64_t width, auto& ag,
                         auto& agx, double* sg, double* sgx) {
      constexpr int NV = decltype(nv)::value;
      const int64_t lanes = (width + K - 1) / K, len = row_len<NV, K>(width);
      const auto mu = row_coefs<NV>(mean + j0), lo = row_coefs<NV>(mean_lo + j0);
      const auto sc = row_coefs<NV>(scale + j0), bi = row_coefs<NV>(bias + j0);
      Buffer<acc_t> tmp(lanes * K);
      for (int64_t b0 = r0; b0 < r1; b0 += kBlockRows) {
        const int64_t b1 = std::min(r1, b0 + kBlockRows);
        for (int64_t l = 0; l < lanes; ++l) ag.at(l * K) = agx.at(l * K) = V(0);
        for (int64_t row = b0; row < b1; ++row)
          backward_reduce_segment<T, kResidual, kRelu>(
              dy + idy(row) + j0, x + ix(row) + j0, kResidual ? r + ir(row) + j0 : nullptr,
              kResidual ? gr + igr(row) + j0 : nullptr, len, mu, lo, sc, bi, ag, agx);
        for (int64_t l = 0; l < lanes; ++l) ag.at(l * K).store(tmp.p + l * K);
        for (int64_t c = 0; c < width; ++c) sg[j0 + c] += tmp[c];
        for (int64_t l = 0; l < lanes; ++l) agx.at(l * K).store(tmp.p + l * K);
        for (int64_t c = 0; c < width; ++c) sgx[j0 + c] += tmp[c];
      }
    };
    // Rows [r0, r1) of channels [j0, j1) (j0 a multiple of K) into sg / sgx.
    auto tile = [&](int64_t r0, int64_t r1, int64_t j0, int64_t j1, double* sg, double* sgx) {
      with_row_vectors<K>(j1 - j0, [&](auto nv) {
        constexpr int NV = decltype(nv)::value;
        if constexpr (NV == 0) {
          const int64_t lanes = (j1 - j0 + K - 1) / K;
          Buffer<V> acc_g(lanes), acc_gx(lanes);
          LaneAcc<acc_t> ag{acc_g.p}, agx{acc_gx.p};
          tile_rows(nv, r0, r1, j0, j1 - j0, ag, agx, sg, sgx);
        } else {
          RowAcc<acc_t, NV> ag, agx;
          tile_rows(nv, r0, r1, j0, j1 - j0, ag, agx, sg, sgx);
        }
      });
    };
    if (split_by_channels(rows, C, K, threads)) {  // whole channels per task, in slot 0
      at::parallel_for(0, (C + K - 1) / K, channel_grain(K), [&](int64_t g0, int64_t g1) {
        tile(0, rows, g0 * K, std::min(C, g1 * K), slot_g.p, slot_gx.p);
      });
    } else {
      at::parallel_for(0, rows, kBlockRows, [&](int64_t r0, int64_t r1) {
        const int64_t tid = thread_slot(threads);
        tile(r0, r1, 0, C, slot_g.p + tid * C, slot_gx.p + tid * C);
      });
    }
    for (int64_t c = 0; c < C; ++c) {
      double sg = 0, sgx = 0;
      for (int64_t t = 0; t < threads; ++t) {
        sg += slot_g[t * C + c];
        sgx += slot_gx[t * C + c];
      }
      out_g[c] = sg;
      out_gx[c] = sgx;
    }
    return;
  }

  const PlanarShape shape =
      planar_shape(g, {&p.sdy, &p.sx, kResidual ? &p.sr : nullptr, kResidual ? &p.sgr : nullptr});
  at::parallel_for(0, g.C, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const Broadcast<acc_t> mu(mean[c]), lo(mean_lo[c]), sc(scale[c]), bi(bias[c]);
      double sg = 0, sgx = 0;
      for (int64_t n = 0; n < g.N; ++n) {
        for (int64_t h = 0; h < shape.lines_per_nc; ++h) {
          SingleAcc<acc_t> ag, agx;
          backward_reduce_segment<T, kResidual, kRelu>(
              dy + planar_offset(p.sdy, n, c, h), x + planar_offset(p.sx, n, c, h),
              kResidual ? r + planar_offset(p.sr, n, c, h) : nullptr,
              kResidual ? gr + planar_offset(p.sgr, n, c, h) : nullptr, shape.line_len, mu, lo,
              sc, bi, ag, agx);
          sg += hsum(ag.v);
          sgx += hsum(agx.v);
        }
      }
      out_g[c] = sg;
      out_gx[c] = sgx;
    }
  });
}

// ---------------------------------------------------------------------------
// Backward grad-input
// ---------------------------------------------------------------------------

template <typename T, bool kMaskFromX, typename Coef>
inline void backward_apply_segment(const T* gsrc, const T* x, T* dx, int64_t len, const Coef& mean,
                                   const Coef& mean_lo, const Coef& scale, const Coef& bias,
                                   const Coef& a, const Coef& b, const Coef& d) {
  using V = typename Io<T>::V;
  constexpr int64_t K = Io<T>::kStep;
  for (int64_t j = 0; j < len; j += K) {
    const int64_t k = std::min(K, len - j);
    const V centered = centered_value(load_n(x + j, k), j, k, mean, mean_lo);
    const V gv = masked_grad<T, false, kMaskFromX>(load_n(gsrc + j, k), centered, nullptr, j, k, scale, bias);
    store_n(dx + j, at::vec::fmadd(gv, a.at(j, k), at::vec::fmadd(centered, b.at(j, k), d.at(j, k))), k);
  }
}

template <typename T, bool kMaskFromX>
void backward_apply_impl(const BackwardApplyParams& p, const GradRows& coefs) {
  using acc_t = typename Io<T>::acc_t;
  const Geometry& g = p.g;
  const T* gsrc = static_cast<const T*>(p.gsrc);
  const T* x = static_cast<const T*>(p.x);
  T* dx = static_cast<T*>(p.dx);
  const acc_t* mean = static_cast<const acc_t*>(coefs.affine.mean_hi);
  const acc_t* mean_lo = static_cast<const acc_t*>(coefs.affine.mean_lo);
  const acc_t* scale = static_cast<const acc_t*>(coefs.affine.scale);
  const acc_t* bias = static_cast<const acc_t*>(coefs.affine.shift);
  const acc_t* a = static_cast<const acc_t*>(coefs.a);
  const acc_t* b = static_cast<const acc_t*>(coefs.b);
  const acc_t* d = static_cast<const acc_t*>(coefs.d);
  if (g.layout == Layout::kRows) {
    constexpr int64_t K = Io<T>::kStep;
    const RowIndex ig(g, p.sg), ix(g, p.sx), idx(g, p.sdx);
    const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(g.C, 1));
    with_row_vectors<K>(g.C, [&](auto nv) {
      constexpr int NV = decltype(nv)::value;
      at::parallel_for(0, g.N * g.H * g.W, grain, [&](int64_t r0, int64_t r1) {
        const auto mu = row_coefs<NV>(mean), lo = row_coefs<NV>(mean_lo);
        const auto sc = row_coefs<NV>(scale), bi = row_coefs<NV>(bias);
        const auto ca = row_coefs<NV>(a), cb = row_coefs<NV>(b), cd = row_coefs<NV>(d);
        const int64_t len = row_len<NV, K>(g.C);
        for (int64_t row = r0; row < r1; ++row)
          backward_apply_segment<T, kMaskFromX>(gsrc + ig(row), x + ix(row), dx + idx(row), len,
                                                mu, lo, sc, bi, ca, cb, cd);
      });
    });
    return;
  }
  const PlanarShape shape = planar_shape(g, {&p.sg, &p.sx, &p.sdx});
  const int64_t lines = g.N * g.C * shape.lines_per_nc;
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(shape.line_len, 1));
  at::parallel_for(0, lines, grain, [&](int64_t l0, int64_t l1) {
    for (int64_t l = l0; l < l1; ++l) {
      const int64_t h = l % shape.lines_per_nc, nc = l / shape.lines_per_nc;
      const int64_t c = nc % g.C, n = nc / g.C;
      backward_apply_segment<T, kMaskFromX>(
          gsrc + planar_offset(p.sg, n, c, h), x + planar_offset(p.sx, n, c, h),
          dx + planar_offset(p.sdx, n, c, h), shape.line_len, Broadcast<acc_t>(mean[c]),
          Broadcast<acc_t>(mean_lo[c]), Broadcast<acc_t>(kMaskFromX ? scale[c] : acc_t(0)),
          Broadcast<acc_t>(kMaskFromX ? bias[c] : acc_t(0)), Broadcast<acc_t>(a[c]),
          Broadcast<acc_t>(b[c]), Broadcast<acc_t>(d[c]));
    }
  });
}

// ---------------------------------------------------------------------------
// add + ReLU over dense storage
// ---------------------------------------------------------------------------

template <typename T>
void add_relu_impl(const AddReluParams& p) {
  using V = typename Io<T>::V;
  constexpr int64_t K = Io<T>::kStep;
  const T* a = static_cast<const T*>(p.a);
  const T* b = static_cast<const T*>(p.b);
  T* out = static_cast<T*>(p.out);
  at::parallel_for(0, p.numel, 32768, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i += K) {
      const int64_t k = std::min(K, i1 - i);
      store_n(out + i, at::vec::maximum(load_n(a + i, k) + load_n(b + i, k), V(0)), k);
    }
  });
}

template <typename T>
void relu_backward_impl(const ReluBackwardParams& p) {
  using V = typename Io<T>::V;
  constexpr int64_t K = Io<T>::kStep;
  const T* dy = static_cast<const T*>(p.dy);
  const T* out = static_cast<const T*>(p.out);
  T* grad = static_cast<T*>(p.grad);
  at::parallel_for(0, p.numel, 32768, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i += K) {
      const int64_t k = std::min(K, i1 - i);
      store_n(grad + i, V::blendv(V(0), load_n(dy + i, k), load_n(out + i, k) > V(0)), k);
    }
  });
}

// ---------------------------------------------------------------------------
// Dtype and flag dispatch, and the table this ISA build exports
// ---------------------------------------------------------------------------

template <template <typename> class Fn, typename... Args>
void by_dtype(Dtype dtype, const Args&... args) {
  switch (dtype) {
    case Dtype::kFloat: return Fn<float>::run(args...);
    case Dtype::kDouble: return Fn<double>::run(args...);
    case Dtype::kHalf: return Fn<c10::Half>::run(args...);
    case Dtype::kBFloat16: return Fn<c10::BFloat16>::run(args...);
  }
}

// float and double only (the Winograd and tap-by-tap convolutions have no reduced-precision build).
template <template <typename> class Fn, typename P>
void by_wide_dtype(Dtype dtype, const P& p) {
  TORCH_CHECK(dtype == Dtype::kFloat || dtype == Dtype::kDouble,
              "resnet_fast: this kernel runs float32 and float64 only");
  dtype == Dtype::kFloat ? Fn<float>::run(p) : Fn<double>::run(p);
}

template <typename T>
struct StatsFn {
  static void run(const StatsParams& p) {
    p.g.layout == Layout::kRows ? stats_rows<T>(p) : stats_planar<T>(p);
  }
};

template <typename T>
struct ApplyFn {
  static void run(const ApplyParams& p, const AffineRows& coefs) {
    with_flags(p.residual != nullptr, p.relu, [&](auto res, auto relu) {
      apply_impl<T, decltype(res)::value, decltype(relu)::value>(p, coefs);
    });
  }
};

template <typename T>
struct BackwardReduceFn {
  static void run(const BackwardReduceParams& p, const AffineRows& coefs) {
    with_flags(p.residual != nullptr, p.relu, [&](auto res, auto relu) {
      backward_reduce_impl<T, decltype(res)::value, decltype(relu)::value>(p, coefs);
    });
  }
};

template <typename T>
struct BackwardApplyFn {
  static void run(const BackwardApplyParams& p, const GradRows& coefs) {
    p.mask_from_x ? backward_apply_impl<T, true>(p, coefs)
                  : backward_apply_impl<T, false>(p, coefs);
  }
};

template <typename T>
struct AddReluFn {
  static void run(const AddReluParams& p) { add_relu_impl<T>(p); }
};

template <typename T>
struct ReluBackwardFn {
  static void run(const ReluBackwardParams& p) { relu_backward_impl<T>(p); }
};

template <typename T>
struct WinogradInputFn {
  static void run(const WinogradInputParams& p) { winograd_input_impl<T>(p); }
};

template <typename T>
struct WinogradProductFn {
  static void run(const WinogradProductParams& p) { winograd_products_impl<T>(p); }
};

template <typename T>
struct TapsConvFn {
  static void run(const TapsConvParams& p) { taps_conv_impl<T>(p); }
};

template <typename T>
struct TapsWeightGradFn {
  static void run(const TapsWeightGradParams& p) { taps_weight_grad_impl<T>(p); }
};

template <typename T>
struct WinogradOutputFn {
  static void run(const WinogradOutputParams& p) { winograd_output_impl<T>(p); }
};

inline void bn_stats(const StatsParams& p) { by_dtype<StatsFn>(p.g.dtype, p); }
inline void bn_apply(const ApplyParams& p, const AffineRows& coefs) {
  by_dtype<ApplyFn>(p.g.dtype, p, coefs);
}
inline void bn_backward_reduce(const BackwardReduceParams& p, const AffineRows& coefs) {
  by_dtype<BackwardReduceFn>(p.g.dtype, p, coefs);
}
inline void bn_backward_apply(const BackwardApplyParams& p, const GradRows& coefs) {
  by_dtype<BackwardApplyFn>(p.g.dtype, p, coefs);
}
inline void add_relu(const AddReluParams& p) { by_dtype<AddReluFn>(p.dtype, p); }
inline void relu_backward(const ReluBackwardParams& p) { by_dtype<ReluBackwardFn>(p.dtype, p); }
inline void winograd_input(const WinogradInputParams& p) { by_wide_dtype<WinogradInputFn>(p.dtype, p); }
inline void winograd_products(const WinogradProductParams& p) {
  by_wide_dtype<WinogradProductFn>(p.dtype, p);
}
inline void taps_conv(const TapsConvParams& p) { by_wide_dtype<TapsConvFn>(p.dtype, p); }
inline void taps_weight_grad(const TapsWeightGradParams& p) { by_wide_dtype<TapsWeightGradFn>(p.dtype, p); }
inline void winograd_output(const WinogradOutputParams& p) { by_wide_dtype<WinogradOutputFn>(p.dtype, p); }

}  // namespace resnet_fast::cpu::RF_KERNEL_NS

// Defines the table of this build; expands in capability_*.cpp.
#define RF_DEFINE_KERNEL_TABLE(getter, label)                                              \
  const resnet_fast::cpu::IsaKernels* resnet_fast::cpu::getter() {                         \
    namespace k = resnet_fast::cpu::RF_KERNEL_NS;                                          \
    static const IsaKernels table{label,            k::bn_stats,      k::bn_apply,         \
                                   k::bn_backward_reduce, k::bn_backward_apply,            \
                                   k::add_relu,     k::relu_backward,                      \
                                   k::winograd_input, k::winograd_products,               \
                                   k::winograd_output, k::taps_conv, k::taps_weight_grad}; \
    return &table;                                                                         \
  }
