// File: kernels/cpu/internal/element_load.h
//
// Scalar element loads: element i of a packed little-endian array of DType D,
// converted exactly to double. Loads go through memcpy, so the data need not
// be aligned (tensors borrowed from a pickle may start at any byte); the
// compiler turns them into plain (unaligned) loads.
//
// Conversions: bool is 0 or 1 (any non-zero byte is true); integers convert
// exactly up to 2^53 (int64 beyond that rounds to nearest, as numpy's
// astype(float64) does); float16/bfloat16 decode exactly (common/half.h).
//
// Thread-safety: pure functions.
#ifndef REPROD_KERNELS_CPU_INTERNAL_ELEMENT_LOAD_H_
#define REPROD_KERNELS_CPU_INTERNAL_ELEMENT_LOAD_H_

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common/dtype.h"
#include "common/half.h"

namespace reprod::kernels::internal {

// Storage type of each DType.
template <DType D> struct Storage;
template <> struct Storage<DType::kBool> { using type = uint8_t; };
template <> struct Storage<DType::kInt8> { using type = int8_t; };
template <> struct Storage<DType::kUInt8> { using type = uint8_t; };
template <> struct Storage<DType::kInt16> { using type = int16_t; };
template <> struct Storage<DType::kInt32> { using type = int32_t; };
template <> struct Storage<DType::kInt64> { using type = int64_t; };
template <> struct Storage<DType::kFloat16> { using type = uint16_t; };
template <> struct Storage<DType::kBFloat16> { using type = uint16_t; };
template <> struct Storage<DType::kFloat32> { using type = float; };
template <> struct Storage<DType::kFloat64> { using type = double; };

template <DType D>
using StorageT = typename Storage<D>::type;

// Element i of `p` (an array of D) as a double.
template <DType D>
inline double LoadElement(const unsigned char* p, int64_t i) {
  StorageT<D> v;
  std::memcpy(&v, p + static_cast<size_t>(i) * sizeof(v), sizeof(v));
  if constexpr (D == DType::kBool) {
    return v != 0 ? 1.0 : 0.0;
  } else if constexpr (D == DType::kFloat16) {
    return static_cast<double>(Float16ToFloat(v));
  } else if constexpr (D == DType::kBFloat16) {
    return static_cast<double>(BFloat16ToFloat(v));
  } else {
    return static_cast<double>(v);
  }
}

// Runtime-dtype version of LoadElement (slow paths and tests).
inline double LoadElementAsDouble(DType d, const void* data, int64_t i) {
  const auto* p = static_cast<const unsigned char*>(data);
  switch (d) {
    case DType::kBool: return LoadElement<DType::kBool>(p, i);
    case DType::kInt8: return LoadElement<DType::kInt8>(p, i);
    case DType::kUInt8: return LoadElement<DType::kUInt8>(p, i);
    case DType::kInt16: return LoadElement<DType::kInt16>(p, i);
    case DType::kInt32: return LoadElement<DType::kInt32>(p, i);
    case DType::kInt64: return LoadElement<DType::kInt64>(p, i);
    case DType::kFloat16: return LoadElement<DType::kFloat16>(p, i);
    case DType::kBFloat16: return LoadElement<DType::kBFloat16>(p, i);
    case DType::kFloat32: return LoadElement<DType::kFloat32>(p, i);
    case DType::kFloat64: return LoadElement<DType::kFloat64>(p, i);
  }
  return 0.0;
}

}  // namespace reprod::kernels::internal

#endif  // REPROD_KERNELS_CPU_INTERNAL_ELEMENT_LOAD_H_
