// Vector load/store in the accumulation type, with tails, for one ISA build.
// Included only from kernels_impl.h, inside namespace RF_KERNEL_NS.
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace resnet_fast::cpu::RF_KERNEL_NS {

using at::vec::Vectorized;

// Io<T>: T in memory, acc_t in registers (float for half/bfloat16).
template <typename T>
struct Io {
  using acc_t = T;
  using V = Vectorized<acc_t>;
  static constexpr int64_t kStep = V::size();
  static V load(const T* p) { return V::loadu(p); }
  static void store(T* p, const V& v) { v.store(p); }
};

template <typename T>
struct ReducedIo {
  using acc_t = float;
  using V = Vectorized<float>;
  static constexpr int64_t kStep = V::size();
  static V load(const T* p) {
    V v;
    at::vec::load_to_float(p, v);
    return v;
  }
  static void store(T* p, const V& v) {
    // The reduced vector holds 2 * kStep lanes; only the first kStep are ours.
    at::vec::convert_from_float<T>(v, v).store(p, kStep);
  }
};
template <>
struct Io<c10::Half> : ReducedIo<c10::Half> {};
template <>
struct Io<c10::BFloat16> : ReducedIo<c10::BFloat16> {};

// Loads n <= kStep elements; missing lanes are zero. Full vectors take the
// direct path; tails go through a small buffer so that every element, tail or
// not, is computed by the same vector arithmetic (the backward recomputes the
// forward's ReLU mask and must get bit-identical pre-activations).
template <typename T>
inline typename Io<T>::V load_n(const T* p, int64_t n) {
  if (n == Io<T>::kStep) return Io<T>::load(p);
  T buf[Io<T>::kStep] = {};
  std::copy(p, p + n, buf);
  return Io<T>::load(buf);
}

template <typename T>
inline void store_n(T* p, const typename Io<T>::V& v, int64_t n) {
  if (n == Io<T>::kStep) return Io<T>::store(p, v);
  T buf[Io<T>::kStep];
  Io<T>::store(buf, v);
  std::copy(buf, buf + n, p);
}

// A convolution's fused epilogue for n <= kStep output channels of one
// pixel, v holding the sums with the bias: + residual, ReLU, store.
template <typename T, bool kResidual, bool kRelu>
inline void store_output(T* out, const T* residual, typename Io<T>::V v, int64_t n) {
  if constexpr (kResidual) v = v + load_n(residual, n);
  if constexpr (kRelu) v = at::vec::maximum(v, typename Io<T>::V(T(0)));
  store_n(out, v, n);
}

// Keeps the first n lanes of v and zeroes the rest (tails of reductions).
template <typename V>
inline V first_n(const V& v, int64_t n) {
  if (n == V::size()) return v;
  return V::set(V(0), v, n);
}

template <typename V>
inline typename V::value_type lane0(const V& v) {
  typename V::value_type buf[V::size()];
  v.store(buf);
  return buf[0];
}

template <typename V>
inline typename V::value_type hsum(const V& v) {
  typename V::value_type buf[V::size()];
  v.store(buf);
  typename V::value_type s = 0;
  for (int64_t i = 0; i < V::size(); ++i) s += buf[i];
  return s;
}

// Per-channel coefficients along a segment: one value for a planar line, an
// array indexed by channel for a channels_last row.
template <typename acc_t>
struct Broadcast {
  Vectorized<acc_t> v;
  explicit Broadcast(acc_t x) : v(x) {}
  Vectorized<acc_t> at(int64_t, int64_t) const { return v; }
};

template <typename acc_t>
struct PerChannel {
  const acc_t* p;
  Vectorized<acc_t> at(int64_t j, int64_t n) const {
    return n == Vectorized<acc_t>::size() ? Vectorized<acc_t>::loadu(p + j)
                                          : Vectorized<acc_t>::loadu(p + j, n);
  }
};

// A channels_last row of exactly NV full vectors (small C: 16, 32 or 64
// float channels on AVX-512): its coefficients and accumulators are held in
// registers across rows. Reloading them from memory for every row of one to
// four vectors costs more than the row's arithmetic (measured: the apply
// pass at C = 16 took 2.8x the time of a copy). Same arithmetic as
// PerChannel / LaneAcc, lane for lane.
template <typename acc_t, int NV>
struct RowCoefs {
  Vectorized<acc_t> v[NV];
  explicit RowCoefs(const acc_t* p) {
    for (int i = 0; i < NV; ++i) v[i] = Vectorized<acc_t>::loadu(p + i * Vectorized<acc_t>::size());
  }
  Vectorized<acc_t> at(int64_t j, int64_t) const { return v[j / Vectorized<acc_t>::size()]; }
};

template <typename acc_t, int NV>
struct RowAcc {
  Vectorized<acc_t> v[NV];
  RowAcc() {
    for (int i = 0; i < NV; ++i) v[i] = Vectorized<acc_t>(acc_t(0));
  }
  Vectorized<acc_t>& at(int64_t j) { return v[j / Vectorized<acc_t>::size()]; }
};

// Calls f(std::integral_constant<int, NV>{}) with NV = width / K when a row
// of `width` channels is 1, 2 or 4 full vectors of K lanes, else with NV = 0
// (the general path, coefficients read from memory).
template <int64_t K, typename F>
inline void with_row_vectors(int64_t width, F&& f) {
  if (width == K) return f(std::integral_constant<int, 1>{});
  if (width == 2 * K) return f(std::integral_constant<int, 2>{});
  if (width == 4 * K) return f(std::integral_constant<int, 4>{});
  return f(std::integral_constant<int, 0>{});
}

// The coefficients of a row of NV vectors (NV = 0: any width, from memory).
template <int NV, typename acc_t>
inline auto row_coefs(const acc_t* p) {
  if constexpr (NV == 0) {
    return PerChannel<acc_t>{p};
  } else {
    return RowCoefs<acc_t, NV>(p);
  }
}

// A row's length in elements: a constant when NV > 0, so that the loops over
// its vectors unroll and their coefficients stay in registers.
template <int NV, int64_t K>
inline int64_t row_len(int64_t width) {
  return NV > 0 ? NV * K : width;
}

// Accumulators along a segment: one vector for a planar line (every lane is
// the same channel), one vector per channel block for a channels_last row.
template <typename acc_t>
struct SingleAcc {
  Vectorized<acc_t> v{acc_t(0)};
  Vectorized<acc_t>& at(int64_t) { return v; }
};

template <typename acc_t>
struct LaneAcc {
  Vectorized<acc_t>* v;  // [ceil(C / kStep)]
  Vectorized<acc_t>& at(int64_t j) { return v[j / Vectorized<acc_t>::size()]; }
};

}  // namespace resnet_fast::cpu::RF_KERNEL_NS
