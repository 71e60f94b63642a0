// The models of the allowlisted callables, and REDUCE / NEWOBJ / BUILD, which
// apply them: pure functions over the object graph, never Python.
#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "formats/internal/unpickler.h"

namespace reprod::formats::internal {

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
    return Invalid(
        absl::StrCat(std::string(what), " must be a tuple of ints, not ", KindName(o->kind)));
  }
  if (o->items.size() > kMaxFileRank) {
    return Invalid(absl::StrCat(std::string(what), " has ", o->items.size(),
                                " dimensions (at most ", kMaxFileRank, " supported)"));
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
    return Invalid(absl::StrCat("array of shape ", ShapeToString(a.shape), " and dtype ",
                                Quote(a.dtype.Descr()), " needs ", need,
                                " bytes of data, the pickle holds ", size));
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
  if (state->kind != Kind::kTuple || (state->items.size() != 5 && state->items.size() != 4)) {
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
      return Invalid(absl::StrCat("object array of shape ", ShapeToString(a->shape), " holds ",
                                  raw->items.size(), " items"));
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
  if (args.size() != 4 || args[0]->kind != Kind::kBytes || args[1]->kind != Kind::kDType ||
      args[3]->kind != Kind::kStr) {
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
    return Invalid(absl::StrCat("_codecs.encode with unsupported encoding ", Quote(encoding)));
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
      if ((pair->kind != Kind::kTuple && pair->kind != Kind::kList) || pair->items.size() != 2) {
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
    return Invalid(absl::StrCat("REDUCE arguments must be a tuple, not ", KindName(args->kind)));
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
      result->paddle_tensor = result->items.size() == 2 && result->items[0]->kind == Kind::kStr &&
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
    case Callable::kExtension: {
      REPROD_ASSIGN_OR_RETURN(result, extension_->Call(*this, callable->num.i, a));
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

}  // namespace reprod::formats::internal
