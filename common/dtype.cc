#include "common/dtype.h"

#include <array>

namespace reprod {
namespace {
constexpr std::array<std::string_view, kNumDTypes> kNames = {
    "bool",  "int8",    "uint8",    "int16",   "int32",
    "int64", "float16", "bfloat16", "float32", "float64",
    "uint16", "uint32", "uint64"};
}  // namespace

std::string_view DTypeName(DType t) {
  const auto i = static_cast<size_t>(t);
  return i < kNames.size() ? kNames[i] : std::string_view("invalid");
}

std::optional<DType> DTypeFromName(std::string_view name) {
  for (size_t i = 0; i < kNames.size(); ++i) {
    if (kNames[i] == name) return static_cast<DType>(i);
  }
  return std::nullopt;
}

}  // namespace reprod
