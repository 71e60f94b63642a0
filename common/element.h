// File: common/element.h
//
// The one place that knows, for every DType, the C++ type its elements are
// stored as and how one element becomes a double; everything that reads
// elements (the cpu and CUDA diff kernels, tensor summaries, test fakes)
// asks here, so a new dtype is one line in each table below.
//
//   double v = LoadElementAsDouble(view.dtype, view.data, i);   // slow path
//   double w = LoadElement<DType::kUInt16>(bytes, i);           // hot loops
//   auto fn = VisitDType(d, [](auto tag) { return &Kernel<decltype(tag)::value>; });
//
// Conversions (exact unless said): bool is 0 or 1 (any non-zero byte is
// true); integers are exact up to 2^53, int64 and uint64 beyond that round
// to nearest, as numpy's astype(float64) does (see common/dtype.h);
// float16 and bfloat16 decode exactly (common/half.h).
//
// Data is packed little-endian (common/tensor.h). LoadElement reads through
// memcpy, so the array need not be aligned (tensors borrowed from a pickle
// may start at any byte). ToDouble and VisitDType also compile for CUDA
// device code (REPROD_HOST_DEVICE); LoadElement and LoadElementAsDouble are
// host only (device code loads aligned elements itself).
//
// Thread-safety: pure functions.
#ifndef REPROD_COMMON_ELEMENT_H_
#define REPROD_COMMON_ELEMENT_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common/dtype.h"
#include "common/half.h"

namespace reprod {

// Storage type of each DType.
template <DType D> struct DTypeStorage;
template <> struct DTypeStorage<DType::kBool> { using type = uint8_t; };
template <> struct DTypeStorage<DType::kInt8> { using type = int8_t; };
template <> struct DTypeStorage<DType::kUInt8> { using type = uint8_t; };
template <> struct DTypeStorage<DType::kInt16> { using type = int16_t; };
template <> struct DTypeStorage<DType::kInt32> { using type = int32_t; };
template <> struct DTypeStorage<DType::kInt64> { using type = int64_t; };
template <> struct DTypeStorage<DType::kFloat16> { using type = uint16_t; };
template <> struct DTypeStorage<DType::kBFloat16> { using type = uint16_t; };
template <> struct DTypeStorage<DType::kFloat32> { using type = float; };
template <> struct DTypeStorage<DType::kFloat64> { using type = double; };
template <> struct DTypeStorage<DType::kUInt16> { using type = uint16_t; };
template <> struct DTypeStorage<DType::kUInt32> { using type = uint32_t; };
template <> struct DTypeStorage<DType::kUInt64> { using type = uint64_t; };

template <DType D>
using StorageT = typename DTypeStorage<D>::type;

// One stored element of dtype D as a double (see the file comment).
template <DType D>
REPROD_HOST_DEVICE inline double ToDouble(StorageT<D> v) {
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

// Calls f(std::integral_constant<DType, d>{}) for the runtime dtype `d` and
// returns its result; the value-initialised result (0, nullptr) for values
// outside the enum. The one switch over every DType: dispatch tables are
// built with it instead of switches of their own.
#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
template <typename F>
REPROD_HOST_DEVICE inline decltype(auto) VisitDType(DType d, F&& f) {
  using std::integral_constant;
  switch (d) {
    case DType::kBool: return f(integral_constant<DType, DType::kBool>{});
    case DType::kInt8: return f(integral_constant<DType, DType::kInt8>{});
    case DType::kUInt8: return f(integral_constant<DType, DType::kUInt8>{});
    case DType::kInt16: return f(integral_constant<DType, DType::kInt16>{});
    case DType::kInt32: return f(integral_constant<DType, DType::kInt32>{});
    case DType::kInt64: return f(integral_constant<DType, DType::kInt64>{});
    case DType::kFloat16: return f(integral_constant<DType, DType::kFloat16>{});
    case DType::kBFloat16: return f(integral_constant<DType, DType::kBFloat16>{});
    case DType::kFloat32: return f(integral_constant<DType, DType::kFloat32>{});
    case DType::kFloat64: return f(integral_constant<DType, DType::kFloat64>{});
    case DType::kUInt16: return f(integral_constant<DType, DType::kUInt16>{});
    case DType::kUInt32: return f(integral_constant<DType, DType::kUInt32>{});
    case DType::kUInt64: return f(integral_constant<DType, DType::kUInt64>{});
  }
  using Result = decltype(f(integral_constant<DType, DType::kBool>{}));
  return Result();
}

// Element i of `p` (a packed array of D, any alignment) as a double.
template <DType D>
inline double LoadElement(const unsigned char* p, int64_t i) {
  StorageT<D> v;
  std::memcpy(&v, p + static_cast<size_t>(i) * sizeof(v), sizeof(v));
  return ToDouble<D>(v);
}

// Runtime-dtype LoadElement (slow paths and tests); 0 for an invalid dtype.
inline double LoadElementAsDouble(DType d, const void* data, int64_t i) {
  const auto* p = static_cast<const unsigned char*>(data);
  return VisitDType(d, [p, i](auto tag) { return LoadElement<decltype(tag)::value>(p, i); });
}

}  // namespace reprod

#endif  // REPROD_COMMON_ELEMENT_H_
