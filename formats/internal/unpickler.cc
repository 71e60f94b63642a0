#include "formats/internal/unpickler.h"

#include <cstring>
#include <deque>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace reprod::formats::internal {
namespace {

// ---------------------------------------------------------------------------
// The object model.

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
};

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
  }
  return "?";
}

// The allowlisted callables.
enum class Callable : uint8_t {
  kReconstruct,  // numpy.core.multiarray._reconstruct
  kNdarray,      // numpy.ndarray (argument of _reconstruct only)
  kDType,        // numpy.dtype
  kScalar,       // numpy.core.multiarray.scalar
  kFromBuffer,   // numpy.core.numeric._frombuffer
  kCodecsEncode, // _codecs.encode
  kOrderedDict,  // collections.OrderedDict
  kTuple,        // builtins.tuple
  kList,         // builtins.list
  kBytes,        // builtins.bytes
  kBytearray,    // builtins.bytearray
};

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

// A numpy dtype as far as we model it.
struct NpDType {
  char kind = 'u';        // numpy kind: b i u f c O S U V M m
  int64_t itemsize = 1;   // bytes per element (0 when unknown)
  char byteorder = '=';   // < > | =
  bool structured = false;
  std::string spec;       // the string given to numpy.dtype(), for messages

  std::string Descr() const {
    const char order = (byteorder == '=' ? (itemsize > 1 ? '<' : '|') : byteorder);
    return absl::StrCat(std::string(1, order), std::string(1, kind), itemsize);
  }
  bool IsObject() const { return kind == 'O'; }
  std::optional<DType> ToDType() const {
    if (structured) return std::nullopt;
    switch (kind) {
      case 'b':
        if (itemsize == 1) return DType::kBool;
        break;
      case 'i':
        if (itemsize == 1) return DType::kInt8;
        if (itemsize == 2) return DType::kInt16;
        if (itemsize == 4) return DType::kInt32;
        if (itemsize == 8) return DType::kInt64;
        break;
      case 'u':
        if (itemsize == 1) return DType::kUInt8;
        break;
      case 'f':
        if (itemsize == 2) return DType::kFloat16;
        if (itemsize == 4) return DType::kFloat32;
        if (itemsize == 8) return DType::kFloat64;
        break;
      default:
        break;
    }
    return std::nullopt;
  }
};

struct Obj;

struct NpArray {
  NpDType dtype;
  Shape shape;
  bool fortran = false;
  bool built = false;
  Obj* bytes = nullptr;        // numeric arrays: the data (kBytes)
  std::vector<Obj*> objects;   // object arrays: the elements
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
  std::string text;  // kStr (UTF-8); kGlobal ("module.name")
  // kBytes: `data` points into the input (owned == nullptr) or into *owned.
  const char* data = nullptr;
  size_t size = 0;
  std::shared_ptr<const std::string> owned;
  uint64_t offset = 0;  // where the object was made, for messages
  std::vector<Obj*> items;  // list / tuple / set; dict: k0, v0, k1, v1, ...
  std::unique_ptr<NpDType> dtype;  // kDType
  std::unique_ptr<NpArray> array;  // kArray

  std::string_view bytes() const { return {data, size}; }
};

// ---------------------------------------------------------------------------
// The interpreter.

class Unpickler {
 public:
  Unpickler(const ByteSource& input, ReadBudget* budget,
            const PickleLimits& limits)
      : in_(input),
        p_(input.bytes.data()),
        n_(input.bytes.size()),
        budget_(budget),
        limits_(limits),
        items_budget_(2 * static_cast<uint64_t>(n_) + (uint64_t{1} << 16)) {}

  absl::StatusOr<Obj*> Run();

  const ByteSource& input() const { return in_; }
  size_t num_objects() const { return arena_.size(); }
  // Owner for tensors borrowing from `o` (a kBytes).
  std::shared_ptr<const void> OwnerOf(const Obj* o) const {
    if (o->owned) return std::shared_ptr<const void>(o->owned, o->owned->data());
    return in_.owner;
  }

 private:
  // Messages.
  uint64_t Off() const { return in_.base_offset + op_pos_; }
  absl::Status Invalid(std::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(
        in_.what, ": ", std::string(what), " at offset ", Off()));
  }
  absl::Status Truncated(std::string_view what) const {
    return absl::DataLossError(absl::StrCat(
        in_.what, ": truncated pickle: ", std::string(what), " at offset ", Off()));
  }
  absl::Status Exhausted(std::string_view what) const {
    return absl::ResourceExhaustedError(absl::StrCat(
        in_.what, ": ", std::string(what), " at offset ", Off()));
  }

  // Input.
  absl::StatusOr<const char*> Take(uint64_t len, std::string_view what) {
    if (len > n_ - pos_) {
      return Truncated(absl::StrCat(std::string(what), " needs ", len,
                                    " bytes, ", n_ - pos_, " left"));
    }
    const char* p = p_ + pos_;
    pos_ += static_cast<size_t>(len);
    return p;
  }
  absl::StatusOr<std::string_view> TakeLine(std::string_view what) {
    const void* nl = std::memchr(p_ + pos_, '\n', n_ - pos_);
    if (nl == nullptr) return Truncated(absl::StrCat(std::string(what), " without newline"));
    const size_t len = static_cast<const char*>(nl) - (p_ + pos_);
    std::string_view line(p_ + pos_, len);
    pos_ += len + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    return line;
  }
  // A memo index written as a decimal line (protocol-0 PUT and GET).
  absl::StatusOr<uint64_t> TakeMemoIndexLine(std::string_view op) {
    std::string_view line;
    REPROD_ASSIGN_OR_RETURN(line, TakeLine(op));
    uint64_t idx;
    if (!absl::SimpleAtoi(absl::string_view(line.data(), line.size()), &idx)) {
      return Invalid(absl::StrCat("malformed ", std::string(op)));
    }
    return idx;
  }

  // Objects.
  absl::StatusOr<Obj*> New(Kind kind) {
    if (arena_.size() >= limits_.max_objects) {
      return Exhausted(absl::StrCat("pickle creates more than ",
                                    limits_.max_objects, " objects"));
    }
    Obj& o = arena_.emplace_back();
    o.kind = kind;
    o.offset = Off();
    return &o;
  }
  absl::Status ChargeItems(uint64_t n) {
    if (n > items_budget_) {
      return Exhausted("pickle containers hold more items than the input can justify");
    }
    items_budget_ -= n;
    return absl::OkStatus();
  }

  // Stack.
  size_t Fence() const { return marks_.empty() ? 0 : marks_.back(); }
  absl::Status Push(Obj* o) {
    if (stack_.size() >= limits_.max_stack) {
      return Exhausted(absl::StrCat("pickle stack deeper than ", limits_.max_stack));
    }
    stack_.push_back(o);
    return absl::OkStatus();
  }
  absl::StatusOr<Obj*> Pop() {
    if (stack_.size() <= Fence()) return Invalid("pickle stack underflow");
    Obj* o = stack_.back();
    stack_.pop_back();
    return o;
  }
  absl::StatusOr<Obj*> Top() {
    if (stack_.size() <= Fence()) return Invalid("pickle stack underflow");
    return stack_.back();
  }
  // Pops everything above the innermost MARK, and the MARK.
  absl::StatusOr<std::vector<Obj*>> PopMark() {
    if (marks_.empty()) return Invalid("MARK expected but none is open");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Obj*> items(stack_.begin() + static_cast<ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }

  // Memo.
  absl::Status Memoize(uint64_t index) {
    Obj* top;
    REPROD_ASSIGN_OR_RETURN(top, Top());
    auto it = memo_.find(index);
    if (it == memo_.end() && memo_.size() >= limits_.max_memo) {
      return Exhausted(absl::StrCat("pickle memo larger than ", limits_.max_memo));
    }
    memo_[index] = top;
    return absl::OkStatus();
  }
  absl::Status Get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) return Invalid(absl::StrCat("memo key ", index, " not found"));
    return Push(it->second);
  }

  // Opcode helpers.
  absl::Status PushInt(int64_t v) {
    Obj* o;
    REPROD_ASSIGN_OR_RETURN(o, New(Kind::kInt));
    o->num.i = v;
    return Push(o);
  }
  absl::Status PushBool(bool v) {
    Obj* o;
    REPROD_ASSIGN_OR_RETURN(o, New(Kind::kBool));
    o->num.b = v;
    return Push(o);
  }
  absl::Status PushLong(const char* p, uint64_t len);
  absl::Status PushUnicode(uint64_t len);
  absl::Status PushBytes(uint64_t len);
  absl::Status PushTuple(std::vector<Obj*> items);
  absl::Status PushGlobal(std::string_view module, std::string_view name);
  absl::Status ResolveGlobal(std::string_view module, std::string_view name,
                             Callable* out) const;
  absl::Status Reduce(Obj* callable, Obj* args);
  absl::Status NewObj(Obj* cls, Obj* args);
  absl::Status Build(Obj* target, Obj* state);
  absl::Status SetItems(Obj* dict, const std::vector<Obj*>& kv);
  absl::Status Append(Obj* list, const std::vector<Obj*>& items);

  // Callables.
  absl::StatusOr<Obj*> CallReconstruct(const std::vector<Obj*>& args);
  absl::StatusOr<Obj*> CallDType(const std::vector<Obj*>& args);
  absl::StatusOr<Obj*> CallScalar(const std::vector<Obj*>& args);
  absl::StatusOr<Obj*> CallFromBuffer(const std::vector<Obj*>& args);
  absl::StatusOr<Obj*> CallCodecsEncode(const std::vector<Obj*>& args);
  absl::StatusOr<Obj*> CallContainer(Kind kind, const std::vector<Obj*>& args,
                                     const char* name);
  absl::StatusOr<Obj*> CallBytes(const std::vector<Obj*>& args, const char* name);
  absl::Status SetArrayState(NpArray* array, Obj* state);
  absl::Status SetDTypeState(NpDType* dtype, Obj* state);
  absl::StatusOr<Shape> ToShape(Obj* o, std::string_view what);
  absl::Status CheckNumericData(const NpArray& a, size_t size);

  const ByteSource& in_;
  const char* p_;
  size_t n_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  ReadBudget* budget_;
  PickleLimits limits_;
  uint64_t items_budget_;
  std::deque<Obj> arena_;
  std::vector<Obj*> stack_;
  std::vector<size_t> marks_;
  absl::flat_hash_map<uint64_t, Obj*> memo_;
};

absl::Status Unpickler::PushLong(const char* p, uint64_t len) {
  // Little-endian two's complement. Fits int64 when every byte past the
  // eighth repeats the sign.
  if (len == 0) return PushInt(0);
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  const bool negative = (u[len - 1] & 0x80) != 0;
  bool fits = true;
  for (uint64_t k = 8; k < len; ++k) {
    if (u[k] != (negative ? 0xff : 0x00)) fits = false;
  }
  if (len > 8 && fits && ((u[7] & 0x80) != 0) != negative) fits = false;
  if (!fits) {
    Obj* o;
    REPROD_ASSIGN_OR_RETURN(o, New(Kind::kBigInt));
    return Push(o);
  }
  uint64_t v = negative ? ~uint64_t{0} : 0;
  for (uint64_t k = 0; k < std::min<uint64_t>(len, 8); ++k) {
    v &= ~(uint64_t{0xff} << (8 * k));
    v |= static_cast<uint64_t>(u[k]) << (8 * k);
  }
  return PushInt(static_cast<int64_t>(v));
}

absl::Status Unpickler::PushUnicode(uint64_t len) {
  const char* p;
  REPROD_ASSIGN_OR_RETURN(p, Take(len, "string"));
  std::string_view s(p, static_cast<size_t>(len));
  if (!IsValidUtf8(s)) return Invalid("string is not valid UTF-8");
  Obj* o;
  REPROD_ASSIGN_OR_RETURN(o, New(Kind::kStr));
  o->text.assign(s);
  return Push(o);
}

absl::Status Unpickler::PushBytes(uint64_t len) {
  const char* p;
  REPROD_ASSIGN_OR_RETURN(p, Take(len, "bytes"));
  Obj* o;
  REPROD_ASSIGN_OR_RETURN(o, New(Kind::kBytes));
  o->data = p;
  o->size = static_cast<size_t>(len);
  return Push(o);
}

absl::Status Unpickler::PushTuple(std::vector<Obj*> items) {
  REPROD_RETURN_IF_ERROR(ChargeItems(items.size()));
  Obj* o;
  REPROD_ASSIGN_OR_RETURN(o, New(Kind::kTuple));
  o->items = std::move(items);
  return Push(o);
}

absl::Status Unpickler::ResolveGlobal(std::string_view module,
                                      std::string_view name,
                                      Callable* out) const {
  for (const AllowedGlobal& g : kAllowed) {
    if (module == g.module && name == g.name) {
      *out = g.callable;
      return absl::OkStatus();
    }
  }
  return absl::PermissionDeniedError(absl::StrCat(
      in_.what, ": refused pickle global ",
      Quote(absl::StrCat(std::string(module), ".", std::string(name)), 200),
      " at offset ", Off(),
      " (only numpy array/dtype/scalar reconstruction and plain containers "
      "are allowed; nothing is executed)"));
}

absl::Status Unpickler::PushGlobal(std::string_view module, std::string_view name) {
  Callable c;
  REPROD_RETURN_IF_ERROR(ResolveGlobal(module, name, &c));
  Obj* o;
  REPROD_ASSIGN_OR_RETURN(o, New(Kind::kGlobal));
  o->callable = c;
  o->text = absl::StrCat(std::string(module), ".", std::string(name));
  return Push(o);
}

absl::Status Unpickler::Append(Obj* list, const std::vector<Obj*>& items) {
  if (list->kind != Kind::kList) {
    return Invalid(absl::StrCat("APPEND(S) on a ", KindName(list->kind)));
  }
  REPROD_RETURN_IF_ERROR(ChargeItems(items.size()));
  list->items.insert(list->items.end(), items.begin(), items.end());
  return absl::OkStatus();
}

absl::Status Unpickler::SetItems(Obj* dict, const std::vector<Obj*>& kv) {
  if (dict->kind != Kind::kDict) {
    return Invalid(absl::StrCat("SETITEM(S) on a ", KindName(dict->kind)));
  }
  if (kv.size() % 2 != 0) return Invalid("SETITEMS with an odd number of items");
  REPROD_RETURN_IF_ERROR(ChargeItems(kv.size()));
  dict->items.insert(dict->items.end(), kv.begin(), kv.end());
  return absl::OkStatus();
}

absl::StatusOr<Shape> Unpickler::ToShape(Obj* o, std::string_view what) {
  if (o->kind != Kind::kTuple && o->kind != Kind::kList) {
    return Invalid(absl::StrCat(std::string(what), " must be a tuple of ints, not ",
                                KindName(o->kind)));
  }
  if (o->items.size() > 64) {
    return Invalid(absl::StrCat(std::string(what), " has ", o->items.size(),
                                " dimensions (at most 64 supported)"));
  }
  Shape shape;
  for (Obj* d : o->items) {
    if (d->kind != Kind::kInt) {
      return Invalid(absl::StrCat(std::string(what), " holds a ", KindName(d->kind)));
    }
    shape.push_back(d->num.i);
  }
  return shape;
}

absl::Status Unpickler::CheckNumericData(const NpArray& a, size_t size) {
  auto count = CheckedNumElements(a.shape, a.dtype.itemsize);
  if (!count.ok()) return Invalid(std::string(count.status().message()));
  const uint64_t need = static_cast<uint64_t>(*count) * static_cast<uint64_t>(a.dtype.itemsize);
  if (need != size) {
    return Invalid(absl::StrCat("array of shape ", ShapeToString(a.shape),
                                " and dtype ", Quote(a.dtype.Descr()), " needs ",
                                need, " bytes of data, the pickle holds ", size));
  }
  return absl::OkStatus();
}

// numpy.dtype(spec, align, copy) -> dtype. `spec` is what dtype.__reduce__
// writes: kind letter and item size ("f4", "i8", "b1", "O8", "U5", "V16"),
// optionally after a byte-order character.
absl::StatusOr<Obj*> Unpickler::CallDType(const std::vector<Obj*>& args) {
  if (args.empty() || args[0]->kind != Kind::kStr) {
    return Invalid("numpy.dtype expects a type string");
  }
  const std::string& spec = args[0]->text;
  auto d = std::make_unique<NpDType>();
  d->spec = spec;
  std::string_view s = spec;
  if (!s.empty() && (s[0] == '<' || s[0] == '>' || s[0] == '|' || s[0] == '=')) {
    d->byteorder = s[0];
    s.remove_prefix(1);
  }
  if (s.empty()) return Invalid(absl::StrCat("unsupported numpy dtype ", Quote(spec)));
  d->kind = s[0];
  s.remove_prefix(1);
  int64_t size = 0;
  if (!s.empty()) {
    if (s.size() > 9 || !absl::SimpleAtoi(absl::string_view(s.data(), s.size()), &size) ||
        size < 0) {
      // Unusual specs (datetime units "M8[ns]", ...) keep itemsize 0: such an
      // array is reported as unsupported when flattened.
      size = 0;
    }
  }
  d->itemsize = size;
  Obj* o;
  REPROD_ASSIGN_OR_RETURN(o, New(Kind::kDType));
  o->dtype = std::move(d);
  return o;
}

absl::Status Unpickler::SetDTypeState(NpDType* d, Obj* state) {
  // (version, byteorder, subarray, names, fields, elsize, alignment, flags[,
  // metadata]); version < 3 pickles start with the byte order.
  if (state->kind != Kind::kTuple || state->items.empty()) {
    return Invalid("numpy.dtype state must be a tuple");
  }
  const auto& it = state->items;
  size_t bo = (it[0]->kind == Kind::kInt) ? 1 : 0;
  if (bo >= it.size() || it[bo]->kind != Kind::kStr || it[bo]->text.size() != 1) {
    return Invalid("numpy.dtype state has no byte order");
  }
  const char c = it[bo]->text[0];
  if (c != '<' && c != '>' && c != '|' && c != '=') {
    return Invalid(absl::StrCat("numpy.dtype byte order ", Quote(it[bo]->text)));
  }
  d->byteorder = c;
  // Subarray or field names make it a structured dtype.
  for (size_t k = bo + 1; k < std::min(it.size(), bo + 3); ++k) {
    if (it[k]->kind != Kind::kNone) d->structured = true;
  }
  return absl::OkStatus();
}

// numpy.core.multiarray._reconstruct(numpy.ndarray, shape, typecode): an
// empty array that BUILD fills in.
absl::StatusOr<Obj*> Unpickler::CallReconstruct(const std::vector<Obj*>& args) {
  if (args.size() != 3 || args[0]->kind != Kind::kGlobal ||
      args[0]->callable != Callable::kNdarray) {
    return Invalid("_reconstruct expects (numpy.ndarray, shape, typecode)");
  }
  Obj* o;
  REPROD_ASSIGN_OR_RETURN(o, New(Kind::kArray));
  o->array = std::make_unique<NpArray>();
  return o;
}

absl::Status Unpickler::SetArrayState(NpArray* a, Obj* state) {
  // ndarray.__setstate__: (version, shape, dtype, is_fortran, rawdata) or
  // the 4-tuple without version.
  if (a->built) return Invalid("numpy.ndarray state set twice");
  if (state->kind != Kind::kTuple ||
      (state->items.size() != 5 && state->items.size() != 4)) {
    return Invalid("numpy.ndarray state must be a 4- or 5-tuple");
  }
  const size_t b = state->items.size() == 5 ? 1 : 0;
  Obj* shape = state->items[b];
  Obj* dtype = state->items[b + 1];
  Obj* fortran = state->items[b + 2];
  Obj* raw = state->items[b + 3];
  REPROD_ASSIGN_OR_RETURN(a->shape, ToShape(shape, "array shape"));
  if (dtype->kind != Kind::kDType) return Invalid("array state without a numpy.dtype");
  a->dtype = *dtype->dtype;
  if (fortran->kind == Kind::kBool) {
    a->fortran = fortran->num.b;
  } else if (fortran->kind == Kind::kInt) {
    a->fortran = fortran->num.i != 0;
  } else {
    return Invalid("array state: is_fortran must be a bool");
  }
  if (a->dtype.IsObject()) {
    if (raw->kind != Kind::kList) return Invalid("object array state without a list");
    auto count = CheckedNumElements(a->shape, 1);
    if (!count.ok()) return Invalid(std::string(count.status().message()));
    if (static_cast<uint64_t>(*count) != raw->items.size()) {
      return Invalid(absl::StrCat("object array of shape ", ShapeToString(a->shape),
                                  " holds ", raw->items.size(), " items"));
    }
    REPROD_RETURN_IF_ERROR(ChargeItems(raw->items.size()));
    a->objects = raw->items;
  } else {
    if (raw->kind != Kind::kBytes) {
      return Invalid(absl::StrCat("array data must be bytes, not ", KindName(raw->kind)));
    }
    if (a->dtype.itemsize > 0 || a->dtype.ToDType().has_value()) {
      REPROD_RETURN_IF_ERROR(CheckNumericData(*a, raw->size));
    }
    a->bytes = raw;
  }
  a->built = true;
  return absl::OkStatus();
}

// numpy.core.multiarray.scalar(dtype, bytes) -> 0-d array.
absl::StatusOr<Obj*> Unpickler::CallScalar(const std::vector<Obj*>& args) {
  if (args.empty() || args[0]->kind != Kind::kDType) {
    return Invalid("numpy scalar expects (dtype, data)");
  }
  Obj* o;
  REPROD_ASSIGN_OR_RETURN(o, New(Kind::kArray));
  o->array = std::make_unique<NpArray>();
  NpArray& a = *o->array;
  a.dtype = *args[0]->dtype;
  if (a.dtype.IsObject()) {
    if (args.size() != 2) return Invalid("numpy object scalar expects (dtype, object)");
    a.objects = {args[1]};
  } else {
    if (args.size() != 2 || args[1]->kind != Kind::kBytes) {
      return Invalid("numpy scalar expects (dtype, bytes)");
    }
    if (a.dtype.itemsize > 0 || a.dtype.ToDType().has_value()) {
      REPROD_RETURN_IF_ERROR(CheckNumericData(a, args[1]->size));
    }
    a.bytes = args[1];
  }
  a.built = true;
  return o;
}

// numpy.core.numeric._frombuffer(buffer, dtype, shape, order) -> array
// (protocol 5 pickles of contiguous arrays).
absl::StatusOr<Obj*> Unpickler::CallFromBuffer(const std::vector<Obj*>& args) {
  if (args.size() != 4 || args[0]->kind != Kind::kBytes ||
      args[1]->kind != Kind::kDType || args[3]->kind != Kind::kStr) {
    return Invalid("_frombuffer expects (buffer, dtype, shape, order)");
  }
  Obj* o;
  REPROD_ASSIGN_OR_RETURN(o, New(Kind::kArray));
  o->array = std::make_unique<NpArray>();
  NpArray& a = *o->array;
  a.dtype = *args[1]->dtype;
  if (a.dtype.IsObject()) return Invalid("_frombuffer with an object dtype");
  REPROD_ASSIGN_OR_RETURN(a.shape, ToShape(args[2], "_frombuffer shape"));
  const std::string& order = args[3]->text;
  if (order != "C" && order != "F" && order != "A" && order != "K") {
    return Invalid(absl::StrCat("_frombuffer order ", Quote(order)));
  }
  a.fortran = order == "F";
  if (a.dtype.itemsize > 0 || a.dtype.ToDType().has_value()) {
    REPROD_RETURN_IF_ERROR(CheckNumericData(a, args[0]->size));
  }
  a.bytes = args[0];
  a.built = true;
  return o;
}

// _codecs.encode(str, 'latin1') -> bytes: how protocol 2 writes bytes.
absl::StatusOr<Obj*> Unpickler::CallCodecsEncode(const std::vector<Obj*>& args) {
  if (args.empty() || args.size() > 2 || args[0]->kind != Kind::kStr ||
      (args.size() == 2 && args[1]->kind != Kind::kStr)) {
    return Invalid("_codecs.encode expects (str, encoding)");
  }
  const std::string encoding = args.size() == 2 ? args[1]->text : "utf-8";
  const std::string& s = args[0]->text;
  auto out = std::make_shared<std::string>();
  if (encoding == "latin1" || encoding == "latin-1" || encoding == "latin_1" ||
      encoding == "iso-8859-1" || encoding == "iso8859-1") {
    REPROD_RETURN_IF_ERROR(budget_->ChargeCopy(s.size(), in_.what));
    out->reserve(s.size());
    // UTF-8 -> code points, each of which must be < 256 (the string is valid
    // UTF-8: checked when it was read).
    for (size_t k = 0; k < s.size();) {
      const auto c = static_cast<unsigned char>(s[k]);
      if (c < 0x80) {
        out->push_back(static_cast<char>(c));
        ++k;
      } else if ((c & 0xe0) == 0xc0 && k + 1 < s.size()) {
        const uint32_t cp = ((c & 0x1fu) << 6) | (static_cast<unsigned char>(s[k + 1]) & 0x3fu);
        if (cp > 0xff) return Invalid("_codecs.encode: character outside latin-1");
        out->push_back(static_cast<char>(cp));
        k += 2;
      } else {
        return Invalid("_codecs.encode: character outside latin-1");
      }
    }
  } else if (encoding == "utf-8" || encoding == "utf8" || encoding == "ascii") {
    if (encoding == "ascii") {
      for (char c : s) {
        if (static_cast<unsigned char>(c) >= 0x80) {
          return Invalid("_codecs.encode: character outside ascii");
        }
      }
    }
    REPROD_RETURN_IF_ERROR(budget_->ChargeCopy(s.size(), in_.what));
    *out = s;
  } else {
    return Invalid(absl::StrCat("_codecs.encode with unsupported encoding ",
                                Quote(encoding)));
  }
  Obj* o;
  REPROD_ASSIGN_OR_RETURN(o, New(Kind::kBytes));
  o->owned = std::move(out);
  o->data = o->owned->data();
  o->size = o->owned->size();
  return o;
}

// tuple(x) / list(x) / OrderedDict(x): a copy of a list, tuple or dict.
absl::StatusOr<Obj*> Unpickler::CallContainer(Kind kind, const std::vector<Obj*>& args,
                                              const char* name) {
  Obj* o;
  REPROD_ASSIGN_OR_RETURN(o, New(kind));
  if (args.empty()) return o;
  if (args.size() != 1) return Invalid(absl::StrCat(name, " expects one argument"));
  Obj* src = args[0];
  if (kind == Kind::kDict) {
    if (src->kind == Kind::kDict) {
      REPROD_RETURN_IF_ERROR(ChargeItems(src->items.size()));
      o->items = src->items;
      return o;
    }
    if (src->kind != Kind::kList && src->kind != Kind::kTuple) {
      return Invalid(absl::StrCat(name, " expects a list of pairs"));
    }
    REPROD_RETURN_IF_ERROR(ChargeItems(2 * src->items.size()));
    for (Obj* pair : src->items) {
      if ((pair->kind != Kind::kTuple && pair->kind != Kind::kList) ||
          pair->items.size() != 2) {
        return Invalid(absl::StrCat(name, " expects a list of pairs"));
      }
      o->items.push_back(pair->items[0]);
      o->items.push_back(pair->items[1]);
    }
    return o;
  }
  if (src->kind != Kind::kList && src->kind != Kind::kTuple && src->kind != Kind::kSet) {
    return Invalid(absl::StrCat(name, " of a ", KindName(src->kind)));
  }
  REPROD_RETURN_IF_ERROR(ChargeItems(src->items.size()));
  o->items = src->items;
  return o;
}

// bytes() / bytes(b) / bytearray(b): protocol < 3 spelling of (empty) bytes.
absl::StatusOr<Obj*> Unpickler::CallBytes(const std::vector<Obj*>& args, const char* name) {
  if (args.size() == 1 && args[0]->kind == Kind::kBytes) return args[0];
  if (!args.empty()) return Invalid(absl::StrCat(name, " expects bytes"));
  Obj* o;
  REPROD_ASSIGN_OR_RETURN(o, New(Kind::kBytes));
  return o;
}

absl::Status Unpickler::Reduce(Obj* callable, Obj* args) {
  if (callable->kind != Kind::kGlobal) {
    return Invalid(absl::StrCat("REDUCE on a ", KindName(callable->kind)));
  }
  if (args->kind != Kind::kTuple) {
    return Invalid(absl::StrCat("REDUCE arguments must be a tuple, not ",
                                KindName(args->kind)));
  }
  const std::vector<Obj*>& a = args->items;
  Obj* result = nullptr;
  switch (callable->callable) {
    case Callable::kReconstruct: {
      REPROD_ASSIGN_OR_RETURN(result, CallReconstruct(a));
      break;
    }
    case Callable::kDType: {
      REPROD_ASSIGN_OR_RETURN(result, CallDType(a));
      break;
    }
    case Callable::kScalar: {
      REPROD_ASSIGN_OR_RETURN(result, CallScalar(a));
      break;
    }
    case Callable::kFromBuffer: {
      REPROD_ASSIGN_OR_RETURN(result, CallFromBuffer(a));
      break;
    }
    case Callable::kCodecsEncode: {
      REPROD_ASSIGN_OR_RETURN(result, CallCodecsEncode(a));
      break;
    }
    case Callable::kOrderedDict: {
      REPROD_ASSIGN_OR_RETURN(result, CallContainer(Kind::kDict, a, "OrderedDict"));
      break;
    }
    case Callable::kTuple: {
      REPROD_ASSIGN_OR_RETURN(result, CallContainer(Kind::kTuple, a, "tuple"));
      // paddle.save pickles a paddle Tensor as tuple((name, ndarray)).
      result->paddle_tensor = result->items.size() == 2 &&
                              result->items[0]->kind == Kind::kStr &&
                              result->items[1]->kind == Kind::kArray;
      break;
    }
    case Callable::kList: {
      REPROD_ASSIGN_OR_RETURN(result, CallContainer(Kind::kList, a, "list"));
      break;
    }
    case Callable::kBytes: {
      REPROD_ASSIGN_OR_RETURN(result, CallBytes(a, "bytes"));
      break;
    }
    case Callable::kBytearray: {
      REPROD_ASSIGN_OR_RETURN(result, CallBytes(a, "bytearray"));
      break;
    }
    case Callable::kNdarray:
      return Invalid(absl::StrCat("cannot call ", callable->text));
  }
  return Push(result);
}

absl::Status Unpickler::NewObj(Obj* cls, Obj* args) {
  if (cls->kind != Kind::kGlobal) return Invalid("NEWOBJ on a non-class");
  if (args->kind != Kind::kTuple) return Invalid("NEWOBJ arguments must be a tuple");
  Obj* result = nullptr;
  switch (cls->callable) {
    case Callable::kOrderedDict: {
      REPROD_ASSIGN_OR_RETURN(result, New(Kind::kDict));
      break;
    }
    case Callable::kList: {
      REPROD_ASSIGN_OR_RETURN(result, New(Kind::kList));
      break;
    }
    case Callable::kTuple: {
      REPROD_ASSIGN_OR_RETURN(result, CallContainer(Kind::kTuple, args->items, "tuple"));
      break;
    }
    default:
      return Invalid(absl::StrCat("cannot instantiate ", cls->text));
  }
  return Push(result);
}

absl::Status Unpickler::Build(Obj* target, Obj* state) {
  switch (target->kind) {
    case Kind::kArray:
      return SetArrayState(target->array.get(), state);
    case Kind::kDType:
      return SetDTypeState(target->dtype.get(), state);
    case Kind::kDict:
    case Kind::kList:
      // Instance attributes of an OrderedDict / list subclass: ignored.
      return absl::OkStatus();
    default:
      return Invalid(absl::StrCat("BUILD on a ", KindName(target->kind)));
  }
}

absl::StatusOr<Obj*> Unpickler::Run() {
  while (true) {
    op_pos_ = pos_;
    if (pos_ >= n_) return Truncated("no STOP opcode");
    const auto op = static_cast<unsigned char>(p_[pos_++]);
    const char* p;
    switch (op) {
      case 0x80: {  // PROTO
        REPROD_ASSIGN_OR_RETURN(p, Take(1, "PROTO"));
        if (static_cast<unsigned char>(*p) > 5) {
          return Invalid(absl::StrCat("unsupported pickle protocol ",
                                      static_cast<unsigned char>(*p)));
        }
        break;
      }
      case 0x95: {  // FRAME: framing is irrelevant over a whole buffer.
        REPROD_ASSIGN_OR_RETURN(p, Take(8, "FRAME"));
        if (LoadLE64(p) > n_ - pos_) return Truncated("FRAME longer than the input");
        break;
      }
      case '.': {  // STOP
        Obj* result;
        REPROD_ASSIGN_OR_RETURN(result, Pop());
        return result;
      }
      case '(':  // MARK
        if (marks_.size() >= limits_.max_marks) return Exhausted("too many open MARKs");
        marks_.push_back(stack_.size());
        break;
      case '0': {  // POP
        if (stack_.size() > Fence()) {
          stack_.pop_back();
        } else if (!marks_.empty()) {
          marks_.pop_back();
        } else {
          return Invalid("POP on an empty stack");
        }
        break;
      }
      case '1': {  // POP_MARK
        REPROD_RETURN_IF_ERROR(PopMark().status());
        break;
      }
      case '2': {  // DUP
        Obj* top;
        REPROD_ASSIGN_OR_RETURN(top, Top());
        REPROD_RETURN_IF_ERROR(Push(top));
        break;
      }
      case 'N': {  // NONE
        Obj* o;
        REPROD_ASSIGN_OR_RETURN(o, New(Kind::kNone));
        REPROD_RETURN_IF_ERROR(Push(o));
        break;
      }
      case 0x88:  // NEWTRUE
      case 0x89:  // NEWFALSE
        REPROD_RETURN_IF_ERROR(PushBool(op == 0x88));
        break;
      case 'J': {  // BININT
        REPROD_ASSIGN_OR_RETURN(p, Take(4, "BININT"));
        REPROD_RETURN_IF_ERROR(PushInt(static_cast<int32_t>(LoadLE32(p))));
        break;
      }
      case 'K': {  // BININT1
        REPROD_ASSIGN_OR_RETURN(p, Take(1, "BININT1"));
        REPROD_RETURN_IF_ERROR(PushInt(static_cast<unsigned char>(*p)));
        break;
      }
      case 'M': {  // BININT2
        REPROD_ASSIGN_OR_RETURN(p, Take(2, "BININT2"));
        REPROD_RETURN_IF_ERROR(PushInt(LoadLE16(p)));
        break;
      }
      case 0x8a: {  // LONG1
        REPROD_ASSIGN_OR_RETURN(p, Take(1, "LONG1"));
        const uint64_t len = static_cast<unsigned char>(*p);
        REPROD_ASSIGN_OR_RETURN(p, Take(len, "LONG1"));
        REPROD_RETURN_IF_ERROR(PushLong(p, len));
        break;
      }
      case 0x8b: {  // LONG4
        REPROD_ASSIGN_OR_RETURN(p, Take(4, "LONG4"));
        const int32_t len = static_cast<int32_t>(LoadLE32(p));
        if (len < 0) return Invalid("LONG4 with a negative length");
        REPROD_ASSIGN_OR_RETURN(p, Take(static_cast<uint64_t>(len), "LONG4"));
        REPROD_RETURN_IF_ERROR(PushLong(p, static_cast<uint64_t>(len)));
        break;
      }
      case 'I':    // INT (text)
      case 'L': {  // LONG (text)
        std::string_view line;
        REPROD_ASSIGN_OR_RETURN(line, TakeLine("INT/LONG"));
        if (op == 'I' && (line == "00" || line == "01")) {
          REPROD_RETURN_IF_ERROR(PushBool(line == "01"));
          break;
        }
        if (op == 'L' && !line.empty() && line.back() == 'L') line.remove_suffix(1);
        int64_t v;
        if (absl::SimpleAtoi(absl::string_view(line.data(), line.size()), &v)) {
          REPROD_RETURN_IF_ERROR(PushInt(v));
        } else {
          bool digits = !line.empty();
          for (size_t k = 0; k < line.size(); ++k) {
            const char c = line[k];
            if (!((c >= '0' && c <= '9') || (k == 0 && (c == '-' || c == '+')))) {
              digits = false;
            }
          }
          if (!digits) return Invalid("malformed INT/LONG");
          Obj* o;
          REPROD_ASSIGN_OR_RETURN(o, New(Kind::kBigInt));
          REPROD_RETURN_IF_ERROR(Push(o));
        }
        break;
      }
      case 'G': {  // BINFLOAT (big-endian)
        REPROD_ASSIGN_OR_RETURN(p, Take(8, "BINFLOAT"));
        uint64_t bits = 0;
        for (int k = 0; k < 8; ++k) bits = (bits << 8) | static_cast<unsigned char>(p[k]);
        double d;
        std::memcpy(&d, &bits, sizeof d);
        Obj* o;
        REPROD_ASSIGN_OR_RETURN(o, New(Kind::kFloat));
        o->num.f = d;
        REPROD_RETURN_IF_ERROR(Push(o));
        break;
      }
      case 'F': {  // FLOAT (text)
        std::string_view line;
        REPROD_ASSIGN_OR_RETURN(line, TakeLine("FLOAT"));
        double d;
        if (!absl::SimpleAtod(absl::string_view(line.data(), line.size()), &d)) {
          return Invalid("malformed FLOAT");
        }
        Obj* o;
        REPROD_ASSIGN_OR_RETURN(o, New(Kind::kFloat));
        o->num.f = d;
        REPROD_RETURN_IF_ERROR(Push(o));
        break;
      }
      case 'X': {  // BINUNICODE
        REPROD_ASSIGN_OR_RETURN(p, Take(4, "BINUNICODE"));
        REPROD_RETURN_IF_ERROR(PushUnicode(LoadLE32(p)));
        break;
      }
      case 0x8c: {  // SHORT_BINUNICODE
        REPROD_ASSIGN_OR_RETURN(p, Take(1, "SHORT_BINUNICODE"));
        REPROD_RETURN_IF_ERROR(PushUnicode(static_cast<unsigned char>(*p)));
        break;
      }
      case 0x8d: {  // BINUNICODE8
        REPROD_ASSIGN_OR_RETURN(p, Take(8, "BINUNICODE8"));
        REPROD_RETURN_IF_ERROR(PushUnicode(LoadLE64(p)));
        break;
      }
      case 'B': {  // BINBYTES
        REPROD_ASSIGN_OR_RETURN(p, Take(4, "BINBYTES"));
        REPROD_RETURN_IF_ERROR(PushBytes(LoadLE32(p)));
        break;
      }
      case 'C': {  // SHORT_BINBYTES
        REPROD_ASSIGN_OR_RETURN(p, Take(1, "SHORT_BINBYTES"));
        REPROD_RETURN_IF_ERROR(PushBytes(static_cast<unsigned char>(*p)));
        break;
      }
      case 0x8e:  // BINBYTES8
      case 0x96: {  // BYTEARRAY8 (in-band protocol-5 buffer)
        REPROD_ASSIGN_OR_RETURN(p, Take(8, "BINBYTES8"));
        REPROD_RETURN_IF_ERROR(PushBytes(LoadLE64(p)));
        break;
      }
      case 'T': {  // BINSTRING (Python 2 str: kept as bytes)
        REPROD_ASSIGN_OR_RETURN(p, Take(4, "BINSTRING"));
        const int32_t len = static_cast<int32_t>(LoadLE32(p));
        if (len < 0) return Invalid("BINSTRING with a negative length");
        REPROD_RETURN_IF_ERROR(PushBytes(static_cast<uint64_t>(len)));
        break;
      }
      case 'U': {  // SHORT_BINSTRING
        REPROD_ASSIGN_OR_RETURN(p, Take(1, "SHORT_BINSTRING"));
        REPROD_RETURN_IF_ERROR(PushBytes(static_cast<unsigned char>(*p)));
        break;
      }
      case 0x97:  // NEXT_BUFFER
        return Invalid("out-of-band pickle buffers (NEXT_BUFFER) are not supported");
      case 0x98: {  // READONLY_BUFFER
        Obj* top;
        REPROD_ASSIGN_OR_RETURN(top, Top());
        if (top->kind != Kind::kBytes) return Invalid("READONLY_BUFFER on a non-buffer");
        break;
      }
      case ']':  // EMPTY_LIST
      case '}':  // EMPTY_DICT
      case 0x8f: {  // EMPTY_SET
        Obj* o;
        REPROD_ASSIGN_OR_RETURN(
            o, New(op == ']' ? Kind::kList : op == '}' ? Kind::kDict : Kind::kSet));
        REPROD_RETURN_IF_ERROR(Push(o));
        break;
      }
      case ')':  // EMPTY_TUPLE
        REPROD_RETURN_IF_ERROR(PushTuple({}));
        break;
      case 0x85:  // TUPLE1
      case 0x86:  // TUPLE2
      case 0x87: {  // TUPLE3
        const size_t k = op - 0x84;
        if (stack_.size() < Fence() + k) return Invalid("pickle stack underflow");
        std::vector<Obj*> items(stack_.end() - static_cast<ptrdiff_t>(k), stack_.end());
        stack_.resize(stack_.size() - k);
        REPROD_RETURN_IF_ERROR(PushTuple(std::move(items)));
        break;
      }
      case 't': {  // TUPLE
        std::vector<Obj*> items;
        REPROD_ASSIGN_OR_RETURN(items, PopMark());
        REPROD_RETURN_IF_ERROR(PushTuple(std::move(items)));
        break;
      }
      case 'l':  // LIST
      case 0x91: {  // FROZENSET
        std::vector<Obj*> items;
        REPROD_ASSIGN_OR_RETURN(items, PopMark());
        REPROD_RETURN_IF_ERROR(ChargeItems(items.size()));
        Obj* o;
        REPROD_ASSIGN_OR_RETURN(o, New(op == 'l' ? Kind::kList : Kind::kSet));
        o->items = std::move(items);
        REPROD_RETURN_IF_ERROR(Push(o));
        break;
      }
      case 'd': {  // DICT
        std::vector<Obj*> items;
        REPROD_ASSIGN_OR_RETURN(items, PopMark());
        Obj* o;
        REPROD_ASSIGN_OR_RETURN(o, New(Kind::kDict));
        REPROD_RETURN_IF_ERROR(SetItems(o, items));
        REPROD_RETURN_IF_ERROR(Push(o));
        break;
      }
      case 'a': {  // APPEND
        Obj* v;
        REPROD_ASSIGN_OR_RETURN(v, Pop());
        Obj* list;
        REPROD_ASSIGN_OR_RETURN(list, Top());
        REPROD_RETURN_IF_ERROR(Append(list, {v}));
        break;
      }
      case 'e': {  // APPENDS
        std::vector<Obj*> items;
        REPROD_ASSIGN_OR_RETURN(items, PopMark());
        Obj* list;
        REPROD_ASSIGN_OR_RETURN(list, Top());
        REPROD_RETURN_IF_ERROR(Append(list, items));
        break;
      }
      case 0x90: {  // ADDITEMS
        std::vector<Obj*> items;
        REPROD_ASSIGN_OR_RETURN(items, PopMark());
        Obj* set;
        REPROD_ASSIGN_OR_RETURN(set, Top());
        if (set->kind != Kind::kSet) return Invalid("ADDITEMS on a non-set");
        REPROD_RETURN_IF_ERROR(ChargeItems(items.size()));
        set->items.insert(set->items.end(), items.begin(), items.end());
        break;
      }
      case 's': {  // SETITEM
        Obj* v;
        REPROD_ASSIGN_OR_RETURN(v, Pop());
        Obj* k;
        REPROD_ASSIGN_OR_RETURN(k, Pop());
        Obj* dict;
        REPROD_ASSIGN_OR_RETURN(dict, Top());
        REPROD_RETURN_IF_ERROR(SetItems(dict, {k, v}));
        break;
      }
      case 'u': {  // SETITEMS
        std::vector<Obj*> items;
        REPROD_ASSIGN_OR_RETURN(items, PopMark());
        Obj* dict;
        REPROD_ASSIGN_OR_RETURN(dict, Top());
        REPROD_RETURN_IF_ERROR(SetItems(dict, items));
        break;
      }
      case 'c': {  // GLOBAL "module\nname\n"
        std::string_view module, name;
        REPROD_ASSIGN_OR_RETURN(module, TakeLine("GLOBAL"));
        REPROD_ASSIGN_OR_RETURN(name, TakeLine("GLOBAL"));
        REPROD_RETURN_IF_ERROR(PushGlobal(module, name));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        Obj* name;
        REPROD_ASSIGN_OR_RETURN(name, Pop());
        Obj* module;
        REPROD_ASSIGN_OR_RETURN(module, Pop());
        if (module->kind != Kind::kStr || name->kind != Kind::kStr) {
          return Invalid("STACK_GLOBAL needs two strings");
        }
        REPROD_RETURN_IF_ERROR(PushGlobal(module->text, name->text));
        break;
      }
      case 'i': {  // INST "module\nname\n": checked, then refused.
        std::string_view module, name;
        REPROD_ASSIGN_OR_RETURN(module, TakeLine("INST"));
        REPROD_ASSIGN_OR_RETURN(name, TakeLine("INST"));
        Callable c;
        REPROD_RETURN_IF_ERROR(ResolveGlobal(module, name, &c));
        return Invalid("unsupported pickle opcode INST");
      }
      case 'R': {  // REDUCE
        Obj* args;
        REPROD_ASSIGN_OR_RETURN(args, Pop());
        Obj* callable;
        REPROD_ASSIGN_OR_RETURN(callable, Pop());
        REPROD_RETURN_IF_ERROR(Reduce(callable, args));
        break;
      }
      case 0x81: {  // NEWOBJ
        Obj* args;
        REPROD_ASSIGN_OR_RETURN(args, Pop());
        Obj* cls;
        REPROD_ASSIGN_OR_RETURN(cls, Pop());
        REPROD_RETURN_IF_ERROR(NewObj(cls, args));
        break;
      }
      case 0x92: {  // NEWOBJ_EX
        Obj* kwargs;
        REPROD_ASSIGN_OR_RETURN(kwargs, Pop());
        Obj* args;
        REPROD_ASSIGN_OR_RETURN(args, Pop());
        Obj* cls;
        REPROD_ASSIGN_OR_RETURN(cls, Pop());
        if (kwargs->kind != Kind::kDict || !kwargs->items.empty()) {
          return Invalid("NEWOBJ_EX with keyword arguments");
        }
        REPROD_RETURN_IF_ERROR(NewObj(cls, args));
        break;
      }
      case 'b': {  // BUILD
        Obj* state;
        REPROD_ASSIGN_OR_RETURN(state, Pop());
        Obj* target;
        REPROD_ASSIGN_OR_RETURN(target, Top());
        REPROD_RETURN_IF_ERROR(Build(target, state));
        break;
      }
      case 'p': {  // PUT (text)
        uint64_t idx;
        REPROD_ASSIGN_OR_RETURN(idx, TakeMemoIndexLine("PUT"));
        REPROD_RETURN_IF_ERROR(Memoize(idx));
        break;
      }
      case 'q': {  // BINPUT
        REPROD_ASSIGN_OR_RETURN(p, Take(1, "BINPUT"));
        REPROD_RETURN_IF_ERROR(Memoize(static_cast<unsigned char>(*p)));
        break;
      }
      case 'r': {  // LONG_BINPUT
        REPROD_ASSIGN_OR_RETURN(p, Take(4, "LONG_BINPUT"));
        REPROD_RETURN_IF_ERROR(Memoize(LoadLE32(p)));
        break;
      }
      case 0x94:  // MEMOIZE
        REPROD_RETURN_IF_ERROR(Memoize(memo_.size()));
        break;
      case 'g': {  // GET (text)
        uint64_t idx;
        REPROD_ASSIGN_OR_RETURN(idx, TakeMemoIndexLine("GET"));
        REPROD_RETURN_IF_ERROR(Get(idx));
        break;
      }
      case 'h': {  // BINGET
        REPROD_ASSIGN_OR_RETURN(p, Take(1, "BINGET"));
        REPROD_RETURN_IF_ERROR(Get(static_cast<unsigned char>(*p)));
        break;
      }
      case 'j': {  // LONG_BINGET
        REPROD_ASSIGN_OR_RETURN(p, Take(4, "LONG_BINGET"));
        REPROD_RETURN_IF_ERROR(Get(LoadLE32(p)));
        break;
      }
      case 'P':  // PERSID
      case 'Q':  // BINPERSID
        return Invalid(
            "pickle uses persistent ids (a torch.save archive?); not supported");
      case 0x82:
      case 0x83:
      case 0x84:
        return Invalid("pickle uses the copyreg extension registry; not supported");
      case 'S':
      case 'V':
      case 'o':
        return Invalid(absl::StrCat("unsupported pickle opcode ",
                                    Quote(std::string(1, static_cast<char>(op)))));
      default:
        return Invalid(absl::StrCat("unknown pickle opcode 0x", HexPrefix(
                                        std::string_view(p_ + op_pos_, 1))));
    }
  }
}

// ---------------------------------------------------------------------------
// Flattening.

class Flattener {
 public:
  Flattener(Unpickler* u, ReadBudget* budget, const PickleLimits& limits,
            TensorFile* out, std::string top_key)
      : u_(u),
        budget_(budget),
        limits_(limits),
        out_(out),
        visits_left_(4 * static_cast<uint64_t>(u->num_objects()) + 1024),
        top_key_(std::move(top_key)) {}

  absl::Status Visit(Obj* o, const std::string& key, int depth);

 private:
  const std::string& what() const { return u_->input().what; }
  std::string Leaf(const std::string& key) const { return key.empty() ? "output" : key; }
  void Skip(const std::string& key, std::string_view reason) {
    out_->skipped.push_back(absl::StrCat(Leaf(key), ": ", std::string(reason)));
  }
  absl::Status Emit(const std::string& key, Tensor t);
  absl::Status EmitScalar(const std::string& key, DType dtype, const void* value);
  absl::Status VisitArray(Obj* o, const std::string& key, int depth);
  absl::Status VisitDict(Obj* o, const std::string& key, int depth);
  // Tensor for an array object (cached), or nullopt with *why set when the
  // array is not a numeric one reprod supports.
  absl::StatusOr<std::optional<Tensor>> ArrayTensor(Obj* o, const std::string& key,
                                                    std::string* why);
  // paddle.save with protocol 2/3 splits arrays over 2^30 elements into
  // flat slices "k@@.0", "k@@.1", ... described by "UnpackBigParamInfor@@"
  // {k: {"OriginShape": shape, "slices": [names]}}; this joins them back.
  absl::Status EmitJoinedSlices(const std::string& key, const std::string& target,
                                const Shape& shape, const std::vector<Obj*>& slices);
  std::string Join(const std::string& prefix, std::string_view part) {
    return prefix.empty() ? std::string(part) : absl::StrCat(prefix, "/", std::string(part));
  }

  Unpickler* u_;
  ReadBudget* budget_;
  PickleLimits limits_;
  TensorFile* out_;
  uint64_t visits_left_;
  std::string top_key_;  // the key prefix of the pickle's top level
  uint64_t key_bytes_ = 0;
  absl::flat_hash_set<std::string> emitted_;
};

absl::Status Flattener::Emit(const std::string& key, Tensor t) {
  std::string leaf = Leaf(key);
  if (!emitted_.insert(leaf).second) {
    Skip(key, "duplicate key after flattening (first one kept)");
    return absl::OkStatus();
  }
  REPROD_RETURN_IF_ERROR(budget_->ChargeDeclared(t.num_bytes(),
                                                 absl::StrCat(what(), ": key ", Quote(leaf))));
  out_->tensors.push_back(NamedTensor{std::move(leaf), std::move(t)});
  return absl::OkStatus();
}

absl::Status Flattener::EmitScalar(const std::string& key, DType dtype, const void* value) {
  REPROD_RETURN_IF_ERROR(budget_->ChargeCopy(DTypeSize(dtype), what()));
  auto t = Tensor::Allocate(dtype, Shape{});
  if (!t.ok()) return t.status();
  std::memcpy(t->mutable_data(), value, DTypeSize(dtype));
  return Emit(key, *std::move(t));
}

absl::Status Flattener::VisitArray(Obj* o, const std::string& key, int depth) {
  NpArray& a = *o->array;
  if (!a.built) {
    Skip(key, "numpy array without state");
    return absl::OkStatus();
  }
  if (a.dtype.IsObject()) {
    // A 0-d object array (np.save of a dict) stands for its element.
    if (a.shape.empty()) {
      return Visit(a.objects.empty() ? nullptr : a.objects[0], key, depth + 1);
    }
    if (a.objects.empty()) {
      Skip(key, "empty object array");
      return absl::OkStatus();
    }
    for (size_t k = 0; k < a.objects.size(); ++k) {
      REPROD_RETURN_IF_ERROR(Visit(a.objects[k], Join(key, absl::StrCat(k)), depth + 1));
    }
    return absl::OkStatus();
  }
  std::string why;
  std::optional<Tensor> t;
  REPROD_ASSIGN_OR_RETURN(t, ArrayTensor(o, key, &why));
  if (!t.has_value()) {
    Skip(key, why);
    return absl::OkStatus();
  }
  return Emit(key, *std::move(t));
}

absl::StatusOr<std::optional<Tensor>> Flattener::ArrayTensor(Obj* o, const std::string& key,
                                                             std::string* why) {
  if (o->kind != Kind::kArray || !o->array->built || o->array->dtype.IsObject()) {
    *why = absl::StrCat(KindName(o->kind), " is not a numeric array");
    return std::optional<Tensor>();
  }
  NpArray& a = *o->array;
  const std::optional<DType> dtype = a.dtype.ToDType();
  if (!dtype.has_value()) {
    *why = absl::StrCat("unsupported numpy dtype ", a.dtype.structured ? "(structured) " : "",
                        Quote(a.dtype.spec), " of shape ", ShapeToString(a.shape));
    return std::optional<Tensor>();
  }
  if (!a.tensor.has_value()) {
    ArrayBytes src;
    src.dtype = *dtype;
    src.shape = a.shape;
    src.fortran = a.fortran;
    src.big_endian = a.dtype.byteorder == '>';
    src.data = a.bytes->data;
    src.owner = u_->OwnerOf(a.bytes);
    REPROD_ASSIGN_OR_RETURN(
        a.tensor, MakeTensor(src, budget_, absl::StrCat(what(), ": key ", Quote(Leaf(key)))));
  }
  return a.tensor;
}

absl::Status Flattener::EmitJoinedSlices(const std::string& key, const std::string& target,
                                         const Shape& shape,
                                         const std::vector<Obj*>& slices) {
  const std::string leaf = Join(key, target);
  std::vector<Tensor> parts;
  int64_t total = 0;
  for (Obj* s : slices) {
    std::string why;
    std::optional<Tensor> t;
    REPROD_ASSIGN_OR_RETURN(t, ArrayTensor(s, leaf, &why));
    if (!t.has_value() || (!parts.empty() && t->dtype() != parts[0].dtype())) {
      Skip(leaf, absl::StrCat("paddle big-parameter slices cannot be joined: ",
                              why.empty() ? "mixed dtypes" : why));
      return absl::OkStatus();
    }
    total += t->num_elements();  // each is bounded by the input size
    parts.push_back(*std::move(t));
  }
  auto count = CheckedNumElements(shape, 1);
  if (parts.empty() || !count.ok() || *count != total) {
    Skip(leaf, absl::StrCat("paddle big-parameter slices hold ", total,
                            " elements, OriginShape ", ShapeToString(shape), " needs ",
                            count.ok() ? absl::StrCat(*count) : std::string("?")));
    return absl::OkStatus();
  }
  const size_t item = DTypeSize(parts[0].dtype());
  REPROD_RETURN_IF_ERROR(budget_->ChargeCopy(static_cast<uint64_t>(total) * item, what()));
  auto joined = Tensor::Allocate(parts[0].dtype(), shape);
  if (!joined.ok()) return joined.status();
  char* dst = static_cast<char*>(joined->mutable_data());
  for (const Tensor& t : parts) {
    if (t.num_bytes() > 0) std::memcpy(dst, t.data(), t.num_bytes());
    dst += t.num_bytes();
  }
  return Emit(leaf, *std::move(joined));
}

absl::Status Flattener::VisitDict(Obj* o, const std::string& key, int depth) {
  if (o->items.empty()) {
    Skip(key, "empty dict");
    return absl::OkStatus();
  }
  // Later duplicates of a key replace the value in the first position, as in
  // Python.
  std::vector<std::pair<std::string, Obj*>> entries;
  absl::flat_hash_map<std::string, size_t> index;
  for (size_t k = 0; k + 1 < o->items.size(); k += 2) {
    Obj* kobj = o->items[k];
    std::string name;
    if (kobj->kind == Kind::kStr) {
      name = kobj->text;
    } else if (kobj->kind == Kind::kInt) {
      name = absl::StrCat(kobj->num.i);
    } else if (kobj->kind == Kind::kBool) {
      name = kobj->num.b ? "True" : "False";
    } else {
      Skip(Join(key, absl::StrCat("<", KindName(kobj->kind), " key>")),
           "dict key is not a str or int");
      continue;
    }
    auto [it, inserted] = index.emplace(name, entries.size());
    if (inserted) {
      entries.emplace_back(std::move(name), o->items[k + 1]);
    } else {
      entries[it->second].second = o->items[k + 1];
    }
  }
  const bool top = key == top_key_;
  // paddle's big-parameter slices: slice name -> (target, shape, slices).
  struct Joined {
    std::string target;
    Shape shape;
    std::vector<std::string> slices;
  };
  std::vector<Joined> joins;
  absl::flat_hash_map<std::string, size_t> slice_owner;  // slice -> joins index
  if (auto info = index.find("UnpackBigParamInfor@@"); top && info != index.end()) {
    Obj* d = entries[info->second].second;
    for (size_t k = 0; d->kind == Kind::kDict && k + 1 < d->items.size(); k += 2) {
      Obj* target = d->items[k];
      Obj* desc = d->items[k + 1];
      if (target->kind != Kind::kStr || desc->kind != Kind::kDict) continue;
      Joined j;
      j.target = target->text;
      bool ok = false;
      bool have_shape = false;
      for (size_t m = 0; m + 1 < desc->items.size(); m += 2) {
        Obj* f = desc->items[m];
        Obj* v = desc->items[m + 1];
        if (f->kind != Kind::kStr) continue;
        if (f->text == "OriginShape" && (v->kind == Kind::kTuple || v->kind == Kind::kList)) {
          have_shape = true;
          for (Obj* dim : v->items) {
            if (dim->kind != Kind::kInt || j.shape.size() >= 64) have_shape = false;
            if (dim->kind == Kind::kInt) j.shape.push_back(dim->num.i);
          }
        } else if (f->text == "slices" && v->kind == Kind::kList) {
          ok = !v->items.empty();
          for (Obj* name : v->items) {
            if (name->kind != Kind::kStr || !index.contains(name->text) ||
                slice_owner.contains(name->text)) {
              ok = false;
              break;
            }
            j.slices.push_back(name->text);
          }
        }
      }
      if (!ok || !have_shape) {
        Skip(Join(key, j.target), "malformed paddle big-parameter slice table");
        continue;
      }
      for (const std::string& name : j.slices) slice_owner[name] = joins.size();
      joins.push_back(std::move(j));
    }
  }
  for (auto& [name, value] : entries) {
    if (top && (name == "StructuredToParameterName@@" || name == "UnpackBigParamInfor@@")) {
      Skip(name, "paddle.save bookkeeping (parameter-name table)");
      continue;
    }
    if (auto it = slice_owner.find(name); it != slice_owner.end()) {
      const Joined& j = joins[it->second];
      if (name != j.slices[0]) continue;  // joined at the first slice
      std::vector<Obj*> parts;
      for (const std::string& s : j.slices) parts.push_back(entries[index.at(s)].second);
      REPROD_RETURN_IF_ERROR(EmitJoinedSlices(key, j.target, j.shape, parts));
      continue;
    }
    REPROD_RETURN_IF_ERROR(Visit(value, Join(key, name), depth + 1));
  }
  return absl::OkStatus();
}

absl::Status Flattener::Visit(Obj* o, const std::string& key, int depth) {
  if (visits_left_ == 0) {
    return absl::ResourceExhaustedError(absl::StrCat(
        what(), ": pickle shares objects too often to flatten (exponential fan-out)"));
  }
  --visits_left_;
  key_bytes_ += key.size();
  if (key_bytes_ > limits_.max_key_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what(), ": flattened keys exceed ", limits_.max_key_bytes, " bytes"));
  }
  if (depth > limits_.max_nesting) {
    Skip(key, absl::StrCat("nested deeper than ", limits_.max_nesting, " levels"));
    return absl::OkStatus();
  }
  if (o == nullptr) {
    Skip(key, "None");
    return absl::OkStatus();
  }
  switch (o->kind) {
    case Kind::kArray:
      return VisitArray(o, key, depth);
    case Kind::kBool:
      return EmitScalar(key, DType::kBool, &o->num.b);
    case Kind::kInt:
      return EmitScalar(key, DType::kInt64, &o->num.i);
    case Kind::kFloat:
      return EmitScalar(key, DType::kFloat64, &o->num.f);
    case Kind::kList:
    case Kind::kTuple: {
      if (o->paddle_tensor) return Visit(o->items[1], key, depth + 1);
      if (o->items.empty()) {
        Skip(key, absl::StrCat("empty ", KindName(o->kind)));
        return absl::OkStatus();
      }
      for (size_t k = 0; k < o->items.size(); ++k) {
        REPROD_RETURN_IF_ERROR(Visit(o->items[k], Join(key, absl::StrCat(k)), depth + 1));
      }
      return absl::OkStatus();
    }
    case Kind::kDict:
      return VisitDict(o, key, depth);
    case Kind::kBytes:
      Skip(key, absl::StrCat("bytes (", o->size, " bytes), not a tensor"));
      return absl::OkStatus();
    case Kind::kStr:
      Skip(key, absl::StrCat("str ", Quote(o->text, 40), ", not a tensor"));
      return absl::OkStatus();
    default:
      Skip(key, absl::StrCat(KindName(o->kind), ", not a tensor"));
      return absl::OkStatus();
  }
}

}  // namespace

absl::Status UnpickleAndFlatten(const ByteSource& input,
                                const std::string& key_prefix,
                                ReadBudget* budget, TensorFile* out,
                                const PickleLimits& limits) {
  Unpickler u(input, budget, limits);
  Obj* root;
  REPROD_ASSIGN_OR_RETURN(root, u.Run());
  Flattener f(&u, budget, limits, out, key_prefix);
  return f.Visit(root, key_prefix, 0);
}

}  // namespace reprod::formats::internal
