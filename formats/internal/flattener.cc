#include "formats/internal/flattener.h"

#include <cstring>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace reprod::formats::internal {

Flattener::Flattener(const Unpickler& u, ReadBudget* budget, const PickleLimits& limits,
                     TensorFile* out, std::string top_key)
    : u_(u),
      budget_(budget),
      limits_(limits),
      out_(out),
      visits_left_(4 * static_cast<uint64_t>(u.num_objects()) + 1024),
      top_key_(std::move(top_key)) {}

absl::Status Flattener::Emit(const std::string& key, Tensor t) {
  std::string leaf = Leaf(key);
  if (!emitted_.insert(leaf).second) {
    Skip(key, "duplicate key after flattening (first one kept)");
    return absl::OkStatus();
  }
  REPROD_RETURN_IF_ERROR(
      budget_->ChargeDeclared(t.num_bytes(), absl::StrCat(what(), ": key ", Quote(leaf))));
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
    src.owner = u_.OwnerOf(a.bytes);
    REPROD_ASSIGN_OR_RETURN(
        a.tensor, MakeTensor(src, budget_, absl::StrCat(what(), ": key ", Quote(Leaf(key)))));
  }
  return a.tensor;
}

absl::Status Flattener::EmitJoinedSlices(const std::string& key, const std::string& target,
                                         const Shape& shape, const std::vector<Obj*>& slices) {
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
    Skip(leaf, absl::StrCat("paddle big-parameter slices hold ", total, " elements, OriginShape ",
                            ShapeToString(shape), " needs ",
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

Flattener::DictEntries Flattener::CollectEntries(Obj* o, const std::string& key) {
  // Later duplicates of a key replace the value in the first position, as in
  // Python.
  DictEntries d;
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
    auto [it, inserted] = d.index.emplace(name, d.entries.size());
    if (inserted) {
      d.entries.emplace_back(std::move(name), o->items[k + 1]);
    } else {
      d.entries[it->second].second = o->items[k + 1];
    }
  }
  return d;
}

Flattener::SliceJoins Flattener::ParseSliceTable(const DictEntries& d, const std::string& key) {
  SliceJoins out;
  auto info = d.index.find("UnpackBigParamInfor@@");
  if (info == d.index.end()) return out;
  Obj* table = d.entries[info->second].second;
  for (size_t k = 0; table->kind == Kind::kDict && k + 1 < table->items.size(); k += 2) {
    Obj* target = table->items[k];
    Obj* desc = table->items[k + 1];
    if (target->kind != Kind::kStr || desc->kind != Kind::kDict) continue;
    SliceJoins::Target j;
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
          if (dim->kind != Kind::kInt || j.shape.size() >= kMaxFileRank) have_shape = false;
          if (dim->kind == Kind::kInt) j.shape.push_back(dim->num.i);
        }
      } else if (f->text == "slices" && v->kind == Kind::kList) {
        ok = !v->items.empty();
        for (Obj* name : v->items) {
          if (name->kind != Kind::kStr || !d.index.contains(name->text) ||
              out.owner.contains(name->text)) {
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
    for (const std::string& name : j.slices) out.owner[name] = out.joins.size();
    out.joins.push_back(std::move(j));
  }
  return out;
}

absl::Status Flattener::VisitDict(Obj* o, const std::string& key, int depth) {
  if (o->items.empty()) {
    Skip(key, "empty dict");
    return absl::OkStatus();
  }
  const DictEntries d = CollectEntries(o, key);
  const bool top = key == top_key_;
  const SliceJoins joins = top ? ParseSliceTable(d, key) : SliceJoins();
  for (const auto& [name, value] : d.entries) {
    if (top && (name == "StructuredToParameterName@@" || name == "UnpackBigParamInfor@@")) {
      Skip(name, "paddle.save bookkeeping (parameter-name table)");
      continue;
    }
    if (auto it = joins.owner.find(name); it != joins.owner.end()) {
      const SliceJoins::Target& j = joins.joins[it->second];
      if (name != j.slices[0]) continue;  // joined at the first slice
      std::vector<Obj*> parts;
      for (const std::string& s : j.slices) parts.push_back(d.entries[d.index.at(s)].second);
      REPROD_RETURN_IF_ERROR(EmitJoinedSlices(key, j.target, j.shape, parts));
      continue;
    }
    REPROD_RETURN_IF_ERROR(Visit(value, Join(key, name), depth + 1));
  }
  return absl::OkStatus();
}

absl::Status Flattener::VisitExternal(Obj* o, const std::string& key) {
  PickleExtension* ext = u_.extension();
  if (ext == nullptr) {
    Skip(key, absl::StrCat(KindName(o->kind), ", not a tensor"));
    return absl::OkStatus();
  }
  std::string why;
  std::optional<Tensor> t;
  REPROD_ASSIGN_OR_RETURN(
      t, ext->ToTensor(*o, absl::StrCat(what(), ": key ", Quote(Leaf(key))), budget_, &why));
  if (!t.has_value()) {
    Skip(key, why);
    return absl::OkStatus();
  }
  return Emit(key, *std::move(t));
}

absl::Status Flattener::Visit(Obj* o, const std::string& key, int depth) {
  if (visits_left_ == 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what(), ": pickle shares objects too often to flatten (exponential fan-out)"));
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
    case Kind::kExternal:
      return VisitExternal(o, key);
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

}  // namespace reprod::formats::internal
