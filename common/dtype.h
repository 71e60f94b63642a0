// File: common/dtype.h
//
// DType: the element types reprod understands, with their sizes and names.
// Names follow numpy ("float32", "bfloat16", "bool", ...). Thread-safe: pure
// functions over an enum.
#ifndef REPROD_COMMON_DTYPE_H_
#define REPROD_COMMON_DTYPE_H_

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
};

inline constexpr int kNumDTypes = 10;

// Size of one element in bytes.
constexpr size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kBool:
    case DType::kInt8:
    case DType::kUInt8:
      return 1;
    case DType::kInt16:
    case DType::kFloat16:
    case DType::kBFloat16:
      return 2;
    case DType::kInt32:
    case DType::kFloat32:
      return 4;
    case DType::kInt64:
    case DType::kFloat64:
      return 8;
  }
  return 0;
}

constexpr bool IsFloating(DType t) {
  return t == DType::kFloat16 || t == DType::kBFloat16 ||
         t == DType::kFloat32 || t == DType::kFloat64;
}

// numpy-style name: "bool", "int8", "uint8", ..., "bfloat16", "float64".
std::string_view DTypeName(DType t);

// Inverse of DTypeName; nullopt for unknown names.
std::optional<DType> DTypeFromName(std::string_view name);

}  // namespace reprod

#endif  // REPROD_COMMON_DTYPE_H_
