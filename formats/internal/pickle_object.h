// File: formats/internal/pickle_object.h
//
// The object model of the restricted unpickler (internal API): the Python
// values a pickle can build here (Obj), how numpy dtypes and arrays are
// modelled, and the allowlist of globals, each mapped to the pure C++ function
// that models it (the functions themselves are Unpickler members, see
// formats/internal/pickle_callables.cc).
//
// Objects live in the Unpickler's arena and point at each other with raw
// pointers; they are never freed before the Unpickler is.
//
// Thread-safety: plain data; the allowlist is immutable.
#ifndef REPROD_FORMATS_INTERNAL_PICKLE_OBJECT_H_
#define REPROD_FORMATS_INTERNAL_PICKLE_OBJECT_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/dtype.h"
#include "common/tensor.h"

namespace reprod::formats::internal {

enum class Kind : uint8_t {
  kNone,
  kBool,
  kInt,
  kBigInt,  // a Python int outside int64
  kFloat,
  kStr,
  kBytes,
  kList,
  kTuple,
  kDict,  // items hold k0, v0, k1, v1, ...
  kSet,
  kGlobal,
  kDType,
  kArray,
  // An object a PickleExtension models (a torch storage or tensor): `num.i`
  // indexes the extension's own table, `text` describes it for messages.
  kExternal,
};

// "None", "int", "numpy.ndarray", ... for messages.
const char* KindName(Kind k);

// The allowlisted callables.
enum class Callable : uint8_t {
  kReconstruct,   // numpy.core.multiarray._reconstruct
  kNdarray,       // numpy.ndarray (argument of _reconstruct only)
  kDType,         // numpy.dtype
  kScalar,        // numpy.core.multiarray.scalar
  kFromBuffer,    // numpy.core.numeric._frombuffer
  kCodecsEncode,  // _codecs.encode
  kOrderedDict,   // collections.OrderedDict
  kTuple,         // builtins.tuple
  kList,          // builtins.list
  kBytes,         // builtins.bytes
  kBytearray,     // builtins.bytearray
  kExtension,     // a global of a PickleExtension; Obj::num.i is its id
};

// The callable modelling `module.name` (numpy and builtins spellings of both
// numpy generations and of Python 2), or nullopt when it is not allowed.
std::optional<Callable> FindAllowedGlobal(std::string_view module, std::string_view name);

// A numpy dtype as far as we model it.
struct NpDType {
  char kind = 'u';       // numpy kind: b i u f c O S U V M m
  int64_t itemsize = 1;  // bytes per element (0 when unknown)
  char byteorder = '=';  // < > | =
  bool structured = false;
  std::string spec;  // the string given to numpy.dtype(), for messages

  // "<f4", "|b1", ... (the order as numpy writes it in .npy headers).
  std::string Descr() const;
  bool IsObject() const { return kind == 'O'; }
  // The reprod dtype, or nullopt for dtypes reprod does not read.
  std::optional<DType> ToDType() const;
};

struct Obj;

struct NpArray {
  NpDType dtype;
  Shape shape;
  bool fortran = false;
  bool built = false;
  Obj* bytes = nullptr;          // numeric arrays: the data (kBytes)
  std::vector<Obj*> objects;     // object arrays: the elements
  std::optional<Tensor> tensor;  // cached on first flatten
};

struct Obj {
  Kind kind = Kind::kNone;
  Callable callable = Callable::kNdarray;  // kGlobal
  union {
    bool b;
    int64_t i;
    double f;
  } num = {};
  // kTuple made by REDUCE builtins.tuple of (str, ndarray): how paddle.save
  // writes a paddle Tensor (name, value); flattened as the array alone.
  bool paddle_tensor = false;
  std::string text;  // kStr (UTF-8); kGlobal ("module.name"); kExternal
  // kBytes: `data` points into the input (owned == nullptr) or into *owned.
  const char* data = nullptr;
  size_t size = 0;
  std::shared_ptr<const std::string> owned;
  uint64_t offset = 0;             // where the object was made, for messages
  std::vector<Obj*> items;         // list / tuple / set; dict: k0, v0, k1, v1, ...
  std::unique_ptr<NpDType> dtype;  // kDType
  std::unique_ptr<NpArray> array;  // kArray

  std::string_view bytes() const { return {data, size}; }
};

}  // namespace reprod::formats::internal

#endif  // REPROD_FORMATS_INTERNAL_PICKLE_OBJECT_H_
