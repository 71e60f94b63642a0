#include "formats/internal/pickle_object.h"

#include "absl/strings/str_cat.h"
#include "formats/internal/array.h"

namespace reprod::formats::internal {
namespace {

struct AllowedGlobal {
  const char* module;
  const char* name;
  Callable callable;
};

constexpr AllowedGlobal kAllowed[] = {
    {"numpy.core.multiarray", "_reconstruct", Callable::kReconstruct},
    {"numpy._core.multiarray", "_reconstruct", Callable::kReconstruct},
    {"numpy", "ndarray", Callable::kNdarray},
    {"numpy", "dtype", Callable::kDType},
    {"numpy.core.multiarray", "scalar", Callable::kScalar},
    {"numpy._core.multiarray", "scalar", Callable::kScalar},
    {"numpy.core.numeric", "_frombuffer", Callable::kFromBuffer},
    {"numpy._core.numeric", "_frombuffer", Callable::kFromBuffer},
    {"_codecs", "encode", Callable::kCodecsEncode},
    {"collections", "OrderedDict", Callable::kOrderedDict},
    {"builtins", "tuple", Callable::kTuple},
    {"__builtin__", "tuple", Callable::kTuple},
    {"builtins", "list", Callable::kList},
    {"__builtin__", "list", Callable::kList},
    {"builtins", "bytes", Callable::kBytes},
    {"__builtin__", "bytes", Callable::kBytes},
    {"builtins", "bytearray", Callable::kBytearray},
    {"__builtin__", "bytearray", Callable::kBytearray},
};

}  // namespace

const char* KindName(Kind k) {
  switch (k) {
    case Kind::kNone: return "None";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kBigInt: return "int outside int64";
    case Kind::kFloat: return "float";
    case Kind::kStr: return "str";
    case Kind::kBytes: return "bytes";
    case Kind::kList: return "list";
    case Kind::kTuple: return "tuple";
    case Kind::kDict: return "dict";
    case Kind::kSet: return "set";
    case Kind::kGlobal: return "global";
    case Kind::kDType: return "numpy.dtype";
    case Kind::kArray: return "numpy.ndarray";
    case Kind::kExternal: return "external object";
  }
  return "?";
}

std::optional<Callable> FindAllowedGlobal(std::string_view module, std::string_view name) {
  for (const AllowedGlobal& g : kAllowed) {
    if (module == g.module && name == g.name) return g.callable;
  }
  return std::nullopt;
}

std::string NpDType::Descr() const {
  const char order = (byteorder == '=' ? (itemsize > 1 ? '<' : '|') : byteorder);
  return absl::StrCat(std::string(1, order), std::string(1, kind), itemsize);
}

std::optional<DType> NpDType::ToDType() const {
  if (structured || itemsize <= 0 || itemsize > 8) return std::nullopt;
  return DTypeFromNpyTypeCode(absl::StrCat(std::string(1, kind), itemsize));
}

}  // namespace reprod::formats::internal
