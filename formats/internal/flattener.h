// File: formats/internal/flattener.h
//
// Flattening the object graph an Unpickler built into named tensors
// (internal API; the rules are documented in formats/pickle.h): nested dicts
// become "a/b/c" keys, list and tuple items "a/0"; numpy arrays, numpy and
// Python scalars and a PickleExtension's tensors become tensors; everything
// else is listed in TensorFile::skipped with its reason. paddle.save's
// big-parameter slices are joined back here.
//
// Every visit is bounded (shared objects cannot fan out exponentially, keys
// cannot grow past PickleLimits::max_key_bytes, nesting past max_nesting is
// skipped), and every copy is charged to the ReadBudget.
//
// Thread-safety: a Flattener is used by one thread.
#ifndef REPROD_FORMATS_INTERNAL_FLATTENER_H_
#define REPROD_FORMATS_INTERNAL_FLATTENER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "formats/internal/array.h"
#include "formats/internal/pickle_object.h"
#include "formats/internal/unpickler.h"
#include "formats/tensor_file.h"

namespace reprod::formats::internal {

class Flattener {
 public:
  // `u` (whose objects are flattened) and `out` must outlive the Flattener.
  // `top_key` is the key prefix of the pickle's top level.
  Flattener(const Unpickler& u, ReadBudget* budget, const PickleLimits& limits, TensorFile* out,
            std::string top_key);

  // Appends the leaves of `o` under `key` to the TensorFile.
  absl::Status Visit(Obj* o, const std::string& key, int depth);

 private:
  const std::string& what() const { return u_.input().what; }
  std::string Leaf(const std::string& key) const { return key.empty() ? "output" : key; }
  void Skip(const std::string& key, std::string_view reason) {
    out_->skipped.push_back(absl::StrCat(Leaf(key), ": ", std::string(reason)));
  }
  absl::Status Emit(const std::string& key, Tensor t);
  absl::Status EmitScalar(const std::string& key, DType dtype, const void* value);
  absl::Status VisitArray(Obj* o, const std::string& key, int depth);
  absl::Status VisitExternal(Obj* o, const std::string& key);
  absl::Status VisitDict(Obj* o, const std::string& key, int depth);
  // A dict's entries by name, in first-insertion order with the last value.
  struct DictEntries {
    std::vector<std::pair<std::string, Obj*>> entries;
    absl::flat_hash_map<std::string, size_t> index;  // name -> entries index
  };
  DictEntries CollectEntries(Obj* o, const std::string& key);
  // paddle's big-parameter slices (see EmitJoinedSlices): the joins the
  // "UnpackBigParamInfor@@" table of a top-level dict describes.
  struct SliceJoins {
    struct Target {
      std::string target;
      Shape shape;
      std::vector<std::string> slices;
    };
    std::vector<Target> joins;
    absl::flat_hash_map<std::string, size_t> owner;  // slice name -> joins index
  };
  SliceJoins ParseSliceTable(const DictEntries& d, const std::string& key);
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

  const Unpickler& u_;
  ReadBudget* budget_;
  PickleLimits limits_;
  TensorFile* out_;
  uint64_t visits_left_;
  std::string top_key_;
  uint64_t key_bytes_ = 0;
  absl::flat_hash_set<std::string> emitted_;
};

}  // namespace reprod::formats::internal

#endif  // REPROD_FORMATS_INTERNAL_FLATTENER_H_
