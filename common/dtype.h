// File: common/dtype.h
//
// DType: the element types reprod understands, with their sizes and names.
// Names follow numpy ("float32", "bfloat16", "bool", ...). Thread-safe: pure
// functions over an enum.
//
// Every element of every dtype is compared as a double (docs/design.md §Diff
// semantics). That is exact for all of them except int64 and uint64 values
// beyond 2^53, which round to the nearest double, as numpy's astype(float64)
// does: two uint64 values that differ only below double precision (say
// 2^64 - 1 and 2^64 - 2) compare equal. This is the design, not an accident
// of the kernels; common/element.h holds the conversion.
#ifndef REPROD_COMMON_DTYPE_H_
#define REPROD_COMMON_DTYPE_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace reprod {

// reprod::DType
// Every tensor element type docs/design.md §Diff semantics lists. Values are stable
// (they may be persisted); new types are appended.
enum class DType : uint8_t {
  kBool = 0,
  kInt8 = 1,
  kUInt8 = 2,
  kInt16 = 3,
  kInt32 = 4,
  kInt64 = 5,
  kFloat16 = 6,
  kBFloat16 = 7,
  kFloat32 = 8,
  kFloat64 = 9,
  kUInt16 = 10,
  kUInt32 = 11,
  kUInt64 = 12,
};

inline constexpr int kNumDTypes = 13;

// Every DType, in value order (for loops over all of them).
constexpr std::array<DType, kNumDTypes> AllDTypes() {
  std::array<DType, kNumDTypes> all{};
  for (int i = 0; i < kNumDTypes; ++i) all[static_cast<size_t>(i)] = static_cast<DType>(i);
  return all;
}

// Size of one element in bytes.
constexpr size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kBool:
    case DType::kInt8:
    case DType::kUInt8:
      return 1;
    case DType::kInt16:
    case DType::kUInt16:
    case DType::kFloat16:
    case DType::kBFloat16:
      return 2;
    case DType::kInt32:
    case DType::kUInt32:
    case DType::kFloat32:
      return 4;
    case DType::kInt64:
    case DType::kUInt64:
    case DType::kFloat64:
      return 8;
  }
  return 0;
}

constexpr bool IsFloating(DType t) {
  return t == DType::kFloat16 || t == DType::kBFloat16 ||
         t == DType::kFloat32 || t == DType::kFloat64;
}

// numpy-style name: "bool", "int8", "uint8", ..., "bfloat16", "float64",
// "uint16", "uint32", "uint64"; "invalid" for values outside the enum.
std::string_view DTypeName(DType t);

// Inverse of DTypeName; nullopt for unknown names.
std::optional<DType> DTypeFromName(std::string_view name);

}  // namespace reprod

#endif  // REPROD_COMMON_DTYPE_H_
