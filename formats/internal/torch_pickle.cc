#include "formats/internal/torch_pickle.h"

#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace reprod::formats::internal {
namespace {

// Extension ids: the rebuild functions, then the storage types from
// kStorageBase, then the dtypes from kDTypeBase.
enum Fn : int64_t {
  kRebuildTensorV2 = 0,
  kRebuildTensor = 1,
  kRebuildTensorV3 = 2,
  kRebuildParameter = 3,
  kRebuildParameterWithState = 4,
};
constexpr int64_t kStorageBase = 100;
constexpr int64_t kDTypeBase = 200;

struct RebuildFn {
  const char* name;
  Fn fn;
};
constexpr RebuildFn kRebuildFns[] = {
    {"_rebuild_tensor_v2", kRebuildTensorV2},
    {"_rebuild_tensor", kRebuildTensor},
    {"_rebuild_tensor_v3", kRebuildTensorV3},
    {"_rebuild_parameter", kRebuildParameter},
    {"_rebuild_parameter_with_state", kRebuildParameterWithState},
};

struct ElementType {
  const char* name;        // the global's name in module torch
  const char* dtype_name;  // numpy-style name; DTypeFromName maps it if reprod has it
  size_t size;
};

// torch's typed storage classes (what persistent ids name), and
// UntypedStorage, whose elements are bytes.
constexpr ElementType kStorageTypes[] = {
    {"FloatStorage", "float32", 4}, {"DoubleStorage", "float64", 8},
    {"HalfStorage", "float16", 2},  {"BFloat16Storage", "bfloat16", 2},
    {"LongStorage", "int64", 8},    {"IntStorage", "int32", 4},
    {"ShortStorage", "int16", 2},   {"CharStorage", "int8", 1},
    {"ByteStorage", "uint8", 1},    {"BoolStorage", "bool", 1},
    {"UntypedStorage", "uint8", 1},
};

// torch dtypes as _rebuild_tensor_v3 receives them (torch.dtype pickles as
// the global torch.<name>). Complex dtypes are understood, then skipped.
constexpr ElementType kDTypes[] = {
    {"float32", "float32", 4},   {"float64", "float64", 8},     {"float16", "float16", 2},
    {"bfloat16", "bfloat16", 2}, {"int64", "int64", 8},         {"int32", "int32", 4},
    {"int16", "int16", 2},       {"int8", "int8", 1},           {"uint8", "uint8", 1},
    {"bool", "bool", 1},         {"uint16", "uint16", 2},       {"uint32", "uint32", 4},
    {"uint64", "uint64", 8},     {"complex64", "complex64", 8}, {"complex128", "complex128", 16},
};

constexpr int64_t kNumStorageTypes = sizeof(kStorageTypes) / sizeof(kStorageTypes[0]);
constexpr int64_t kNumDTypes = sizeof(kDTypes) / sizeof(kDTypes[0]);

// The element type an extension global stands for, or nullptr.
const ElementType* StorageTypeOf(const Obj* o) {
  if (o->kind != Kind::kGlobal || o->callable != Callable::kExtension) return nullptr;
  const int64_t i = o->num.i - kStorageBase;
  return i >= 0 && i < kNumStorageTypes ? &kStorageTypes[i] : nullptr;
}
const ElementType* DTypeOf(const Obj* o) {
  if (o->kind != Kind::kGlobal || o->callable != Callable::kExtension) return nullptr;
  const int64_t i = o->num.i - kDTypeBase;
  return i >= 0 && i < kNumDTypes ? &kDTypes[i] : nullptr;
}

std::string Describe(const Obj* o) {
  return o->kind == Kind::kGlobal ? o->text : std::string(KindName(o->kind));
}

// A tuple or list of ints (torch.Size, strides) into `out`.
absl::Status IntTuple(const Unpickler& u, const Obj* o, const std::string& what,
                      std::vector<int64_t>* out) {
  if (o->kind != Kind::kTuple && o->kind != Kind::kList) {
    return u.Invalid(absl::StrCat(what, " must be a tuple of ints, not ", KindName(o->kind)));
  }
  if (o->items.size() > kMaxFileRank) {
    return u.Invalid(absl::StrCat(what, " has ", o->items.size(), " dimensions (at most ",
                                  kMaxFileRank, " supported)"));
  }
  out->clear();
  for (const Obj* d : o->items) {
    if (d->kind != Kind::kInt) {
      return u.Invalid(absl::StrCat(what, " holds a ", KindName(d->kind)));
    }
    out->push_back(d->num.i);
  }
  return absl::OkStatus();
}

std::string StrideString(const std::vector<int64_t>& stride) {
  return absl::StrCat("(", absl::StrJoin(stride, ", "), stride.size() == 1 ? ",)" : ")");
}

// True when `stride` is the C-order stride of `shape` (dimensions of size 1
// may have any stride).
bool IsContiguous(const Shape& shape, const std::vector<int64_t>& stride) {
  int64_t expected = 1;
  for (size_t k = shape.size(); k-- > 0;) {
    if (shape[k] != 1 && stride[k] != expected) return false;
    expected *= shape[k];
  }
  return true;
}

// Copies the elements of a strided view into `dst` in C order. The view has
// been checked to lie inside `src`.
void Gather(const char* src, int64_t offset, const Shape& shape, const std::vector<int64_t>& stride,
            size_t item, char* dst) {
  const size_t ndim = shape.size();
  std::vector<int64_t> idx(ndim, 0);
  const int64_t inner = ndim == 0 ? 1 : shape[ndim - 1];
  const int64_t inner_stride = ndim == 0 ? 0 : stride[ndim - 1];
  int64_t base = offset;  // element index of (idx..., 0)
  const int64_t rows = inner == 0 ? 0 : NumElements(shape) / inner;
  for (int64_t r = 0; r < rows; ++r) {
    const char* p = src + static_cast<size_t>(base) * item;
    const size_t step = static_cast<size_t>(inner_stride) * item;
    for (int64_t k = 0; k < inner; ++k, p += step, dst += item) std::memcpy(dst, p, item);
    // Advance the outer index (all dimensions but the last), odometer-style.
    for (size_t d = ndim - 1; d-- > 0;) {
      base += stride[d];
      if (++idx[d] < shape[d]) break;
      base -= stride[d] * shape[d];
      idx[d] = 0;
    }
  }
}

}  // namespace

std::optional<size_t> TorchLegacyMagicEnd(std::string_view bytes) {
  // LONG1 of 10 bytes: 0x1950a86a20f9469cfc6c little-endian, then STOP.
  static constexpr std::string_view kMagic("\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 13);
  size_t pos = 0;
  if (bytes.size() >= 2 && bytes[0] == '\x80') pos = 2;      // PROTO n
  if (pos < bytes.size() && bytes[pos] == '\x95') pos += 9;  // FRAME (protocol 4+)
  if (pos > bytes.size() || bytes.substr(pos, kMagic.size()) != kMagic) return std::nullopt;
  return pos + kMagic.size();
}

std::optional<int64_t> TorchPickle::FindGlobal(std::string_view module,
                                               std::string_view name) const {
  if (module == "torch._utils") {
    for (const RebuildFn& f : kRebuildFns) {
      if (name == f.name) return f.fn;
    }
    return std::nullopt;
  }
  if (module == "torch" || (module == "torch.storage" && name == "UntypedStorage")) {
    for (int64_t i = 0; i < kNumStorageTypes; ++i) {
      if (name == kStorageTypes[i].name) return kStorageBase + i;
    }
  }
  if (module == "torch") {
    for (int64_t i = 0; i < kNumDTypes; ++i) {
      if (name == kDTypes[i].name) return kDTypeBase + i;
    }
  }
  return std::nullopt;
}

std::string_view TorchPickle::AllowedSummary() const {
  return "only torch tensors, parameters and storages, numpy array/dtype/scalar "
         "reconstruction and plain containers are allowed";
}

absl::StatusOr<Obj*> TorchPickle::NewExternal(Unpickler& u, bool is_view, size_t index,
                                              std::string text) {
  Obj* o;
  REPROD_ASSIGN_OR_RETURN(o, u.New(Kind::kExternal));
  o->num.i = static_cast<int64_t>(externals_.size());
  o->text = std::move(text);
  externals_.push_back(External{is_view, index});
  return o;
}

absl::StatusOr<Obj*> TorchPickle::PersistentLoad(Unpickler& u, Obj* pid) {
  if (pid->kind != Kind::kTuple || pid->items.empty()) {
    return u.Invalid(
        absl::StrCat("torch persistent id must be a tuple, not ", KindName(pid->kind)));
  }
  const std::vector<Obj*>& it = pid->items;
  if (it[0]->kind != Kind::kStr || it[0]->text != "storage") {
    return u.Invalid(absl::StrCat(
        "unsupported torch persistent id ",
        it[0]->kind == Kind::kStr ? Quote(it[0]->text) : std::string(KindName(it[0]->kind)),
        " (only storages are supported)"));
  }
  if (it.size() != 5 && it.size() != 6) {
    return u.Invalid(absl::StrCat("torch storage persistent id has ", it.size(),
                                  " items (expected 5, or 6 in legacy files)"));
  }
  const ElementType* type = StorageTypeOf(it[1]);
  if (type == nullptr) {
    return u.Invalid(absl::StrCat("torch storage persistent id names ", Describe(it[1]),
                                  ", not a storage type"));
  }
  if (it[2]->kind != Kind::kStr) return u.Invalid("torch storage key must be a str");
  if (it[4]->kind != Kind::kInt || it[4]->num.i < 0) {
    return u.Invalid("torch storage size must be a non-negative int");
  }
  if (it.size() == 6 && it[5]->kind != Kind::kNone) {
    return u.Invalid("torch storage views (view_metadata) are not supported");
  }
  const std::string& key = it[2]->text;
  const int64_t numel = it[4]->num.i;
  if (numel > std::numeric_limits<int64_t>::max() / static_cast<int64_t>(type->size)) {
    return u.Invalid(absl::StrCat("torch storage ", Quote(key), " of ", numel, " elements",
                                  " overflows int64 bytes"));
  }
  auto [pos, inserted] = storage_by_key_.emplace(key, storages_.size());
  if (inserted) {
    TorchStorage s;
    s.key = key;
    s.type = type->name;
    s.dtype_name = type->dtype_name;
    s.dtype = DTypeFromName(type->dtype_name);
    s.element_size = type->size;
    s.numel = numel;
    s.nbytes = static_cast<uint64_t>(numel) * type->size;
    storages_.push_back(std::move(s));
  } else {
    const TorchStorage& s = storages_[pos->second];
    if (s.type != type->name || s.numel != numel) {
      return u.Invalid(absl::StrCat("torch storage ", Quote(key), " is referenced as ", s.type,
                                    " of ", s.numel, " elements and as ", type->name, " of ",
                                    numel));
    }
  }
  return NewExternal(u, /*is_view=*/false, pos->second,
                     absl::StrCat("torch.", type->name, " ", Quote(key)));
}

absl::StatusOr<size_t> TorchPickle::StorageArg(Unpickler& u, const Obj* o, const char* fn) const {
  if (o->kind != Kind::kExternal || externals_[static_cast<size_t>(o->num.i)].is_view) {
    return u.Invalid(absl::StrCat(fn, " expects a torch storage, not ",
                                  o->kind == Kind::kExternal ? "a tensor" : KindName(o->kind)));
  }
  return externals_[static_cast<size_t>(o->num.i)].index;
}

absl::Status TorchPickle::CheckView(Unpickler& u, const View& v) const {
  const TorchStorage& s = storages_[v.storage];
  const std::string desc = absl::StrCat("torch tensor of shape ", ShapeToString(v.shape),
                                        ", stride ", StrideString(v.stride), ", offset ", v.offset);
  if (v.shape.size() != v.stride.size()) {
    return u.Invalid(absl::StrCat(desc, ": sizes and strides differ in length"));
  }
  if (v.offset < 0) return u.Invalid(absl::StrCat(desc, ": negative storage offset"));
  for (size_t k = 0; k < v.shape.size(); ++k) {
    if (v.shape[k] < 0 || v.stride[k] < 0) {
      return u.Invalid(absl::StrCat(desc, ": negative size or stride"));
    }
  }
  auto count = CheckedNumElements(v.shape, static_cast<int64_t>(v.element_size));
  if (!count.ok()) return u.Invalid(absl::StrCat(desc, ": ", count.status().message()));
  if (*count == 0) return absl::OkStatus();
  // The furthest element: offset + sum((size - 1) * stride), overflow-checked.
  int64_t last = v.offset;
  bool overflow = false;
  for (size_t k = 0; k < v.shape.size(); ++k) {
    int64_t reach;
    overflow |= __builtin_mul_overflow(v.shape[k] - 1, v.stride[k], &reach);
    overflow |= __builtin_add_overflow(last, reach, &last);
  }
  const uint64_t available = s.nbytes / v.element_size;
  if (overflow || static_cast<uint64_t>(last) >= available) {
    return u.Invalid(absl::StrCat(desc, " reaches past the end of storage ", Quote(s.key), " (",
                                  s.type, " of ", s.numel, " elements, ", s.nbytes, " bytes)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Obj*> TorchPickle::RebuildTensor(Unpickler& u, const std::vector<Obj*>& args,
                                                const char* fn, bool has_dtype) {
  // _rebuild_tensor(storage, offset, size, stride)
  // _rebuild_tensor_v2(... , requires_grad, backward_hooks[, metadata])
  // _rebuild_tensor_v3(... , requires_grad, backward_hooks, dtype[, metadata])
  const bool v1 = std::string_view(fn) == "_rebuild_tensor";
  const size_t min_args = has_dtype ? 7 : (v1 ? 4 : 6);
  const size_t max_args = v1 ? 4 : min_args + 1;
  if (args.size() < min_args || args.size() > max_args) {
    return u.Invalid(absl::StrCat("torch._utils.", fn, " expects ", min_args,
                                  min_args == max_args ? "" : absl::StrCat(" or ", max_args),
                                  " arguments, got ", args.size()));
  }
  View v;
  REPROD_ASSIGN_OR_RETURN(v.storage, StorageArg(u, args[0], fn));
  if (args[1]->kind != Kind::kInt) return u.Invalid(absl::StrCat(fn, ": offset must be an int"));
  v.offset = args[1]->num.i;
  std::vector<int64_t> size;
  REPROD_RETURN_IF_ERROR(IntTuple(u, args[2], absl::StrCat(fn, " size"), &size));
  v.shape.assign(size.begin(), size.end());
  REPROD_RETURN_IF_ERROR(IntTuple(u, args[3], absl::StrCat(fn, " stride"), &v.stride));
  const TorchStorage& s = storages_[v.storage];
  v.dtype = s.dtype;
  v.dtype_name = s.dtype_name;
  v.element_size = s.element_size;
  if (has_dtype) {
    const ElementType* t = DTypeOf(args[6]);
    if (t == nullptr) {
      return u.Invalid(absl::StrCat(fn, " expects a torch dtype, not ", Describe(args[6])));
    }
    v.dtype = DTypeFromName(t->dtype_name);
    v.dtype_name = t->dtype_name;
    v.element_size = t->size;
  }
  REPROD_RETURN_IF_ERROR(CheckView(u, v));
  const std::string text = absl::StrCat("torch tensor of storage ", Quote(s.key));
  views_.push_back(std::move(v));
  return NewExternal(u, /*is_view=*/true, views_.size() - 1, text);
}

absl::StatusOr<Obj*> TorchPickle::RebuildParameter(Unpickler& u, const std::vector<Obj*>& args) {
  // _rebuild_parameter(data, requires_grad, backward_hooks[, state]): a
  // Parameter stands for the tensor it wraps.
  if (args.size() != 3 && args.size() != 4) {
    return u.Invalid(absl::StrCat("torch._utils._rebuild_parameter expects 3 or 4 arguments, got ",
                                  args.size()));
  }
  const Obj* data = args[0];
  if (data->kind != Kind::kExternal || !externals_[static_cast<size_t>(data->num.i)].is_view) {
    return u.Invalid(
        absl::StrCat("torch Parameter must wrap a tensor, not ",
                     data->kind == Kind::kExternal ? "a storage" : KindName(data->kind)));
  }
  return args[0];
}

absl::StatusOr<Obj*> TorchPickle::Call(Unpickler& u, int64_t id, const std::vector<Obj*>& args) {
  switch (id) {
    case kRebuildTensorV2:
      return RebuildTensor(u, args, "_rebuild_tensor_v2", /*has_dtype=*/false);
    case kRebuildTensor:
      return RebuildTensor(u, args, "_rebuild_tensor", /*has_dtype=*/false);
    case kRebuildTensorV3:
      return RebuildTensor(u, args, "_rebuild_tensor_v3", /*has_dtype=*/true);
    case kRebuildParameter:
    case kRebuildParameterWithState:
      return RebuildParameter(u, args);
    default:
      return u.Invalid("cannot call a torch storage type or dtype");
  }
}

absl::Status TorchPickle::Attach(size_t index, ByteSource data, const std::string& what) {
  TorchStorage& s = storages_[index];
  if (data.bytes.size() != s.nbytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": torch storage ", Quote(s.key), " (",
                                                   s.type, " of ", s.numel, " elements) needs ",
                                                   s.nbytes, " bytes, found ", data.bytes.size()));
  }
  s.data = std::move(data);
  s.attached = true;
  return absl::OkStatus();
}

absl::StatusOr<Tensor> TorchPickle::Materialise(const View& v, const std::string& what,
                                                ReadBudget* budget) {
  const TorchStorage& s = storages_[v.storage];
  if (!s.attached) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": torch storage ", Quote(s.key), " has no data in the file"));
  }
  ArrayBytes src;
  src.dtype = *v.dtype;
  src.shape = v.shape;
  src.big_endian = big_endian_;
  const int64_t n = NumElements(v.shape);  // checked by CheckView
  if (n == 0 || IsContiguous(v.shape, v.stride)) {
    src.data = s.data.bytes.data() + (n == 0 ? 0 : static_cast<size_t>(v.offset) * v.element_size);
    src.owner = s.data.owner;
    return MakeTensor(src, budget, what);
  }
  const uint64_t bytes = static_cast<uint64_t>(n) * v.element_size;
  REPROD_RETURN_IF_ERROR(budget->ChargeCopy(bytes, what));
  std::shared_ptr<char[]> buffer(new (std::nothrow) char[bytes]);
  if (buffer == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": cannot allocate ", bytes, " bytes"));
  }
  Gather(s.data.bytes.data(), v.offset, v.shape, v.stride, v.element_size, buffer.get());
  src.data = buffer.get();
  src.owner = std::shared_ptr<const void>(buffer, buffer.get());
  return MakeTensor(src, budget, what);
}

absl::StatusOr<std::optional<Tensor>> TorchPickle::ToTensor(const Obj& o, const std::string& what,
                                                            ReadBudget* budget, std::string* why) {
  const External& e = externals_[static_cast<size_t>(o.num.i)];
  if (!e.is_view) {
    const TorchStorage& s = storages_[e.index];
    *why = absl::StrCat("torch.", s.type, " ", Quote(s.key), ", a storage, not a tensor");
    return std::optional<Tensor>();
  }
  View& v = views_[e.index];
  if (!v.dtype.has_value()) {
    *why = absl::StrCat("unsupported torch dtype ", v.dtype_name, " of shape ",
                        ShapeToString(v.shape));
    return std::optional<Tensor>();
  }
  if (!v.tensor.has_value()) {
    REPROD_ASSIGN_OR_RETURN(v.tensor, Materialise(v, what, budget));
  }
  return v.tensor;
}

}  // namespace reprod::formats::internal
