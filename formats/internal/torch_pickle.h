// File: formats/internal/torch_pickle.h
//
// What torch.save's pickles mean (internal API): a PickleExtension that
// models the globals torch uses for tensors and resolves its persistent ids
// to storages, without executing anything. The container readers
// (formats/torch.cc: zip archive and legacy stream) run the Unpickler with it,
// then attach the bytes of every storage the pickle referenced, then flatten.
//
// Modelled globals (anything else is refused by the Unpickler with
// PermissionDenied naming it):
//   torch._utils._rebuild_tensor_v2, _rebuild_tensor, _rebuild_tensor_v3
//     -> a tensor view (storage, offset, sizes, strides[, dtype]);
//   torch._utils._rebuild_parameter, _rebuild_parameter_with_state
//     -> the tensor the Parameter wraps;
//   torch.{Float,Double,Half,BFloat16,Long,Int,Short,Char,Byte,Bool}Storage
//     and torch.UntypedStorage (also as torch.storage.UntypedStorage)
//     -> storage types, only as persistent-id arguments;
//   torch.<dtype> (float32, bfloat16, uint16, ...) -> dtypes, as
//     _rebuild_tensor_v3 arguments.
// Persistent ids are ('storage', storage_type, key, location, numel) (zip
// archives) or the same with a trailing view_metadata that must be None
// (legacy files). A key names one storage; every reference to it must agree
// on its type and size.
//
// Views are validated against the declared storage size when they are
// rebuilt (sizes, strides and offset non-negative, at most 64 dimensions,
// the furthest element inside the storage, all arithmetic overflow-checked),
// and storages against their bytes when the container reader attaches them,
// so no memory is touched before everything is known to fit. A contiguous
// view borrows the storage bytes; any other view is copied into a new
// C-order buffer (charged to the ReadBudget); big-endian storages are
// byte-swapped.
//
// Thread-safety: used by one reader on one thread.
#ifndef REPROD_FORMATS_INTERNAL_TORCH_PICKLE_H_
#define REPROD_FORMATS_INTERNAL_TORCH_PICKLE_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/tensor.h"
#include "formats/internal/array.h"
#include "formats/internal/pickle_object.h"
#include "formats/internal/unpickler.h"

namespace reprod::formats::internal {

// One storage a persistent id referenced.
struct TorchStorage {
  std::string key;             // the persistent id's key ("0", "139...")
  std::string type;            // "FloatStorage", "UntypedStorage", for messages
  std::string dtype_name;      // "float32", "complex64", ..., for messages
  std::optional<DType> dtype;  // nullopt: an element type reprod does not read
  size_t element_size = 1;     // bytes per element of `type`
  int64_t numel = 0;           // declared element count
  uint64_t nbytes = 0;         // numel * element_size (overflow-checked)
  ByteSource data;             // attached by the container reader
  bool attached = false;
};

class TorchPickle final : public PickleExtension {
 public:
  // `big_endian`: the storages hold big-endian elements.
  explicit TorchPickle(bool big_endian) : big_endian_(big_endian) {}

  // The storages referenced so far, in order of first reference.
  const std::vector<TorchStorage>& storages() const { return storages_; }
  // The index of the storage with `key`, or nullopt when none was referenced.
  std::optional<size_t> StorageIndex(const std::string& key) const {
    auto it = storage_by_key_.find(key);
    return it == storage_by_key_.end() ? std::nullopt : std::optional<size_t>(it->second);
  }
  // Attaches the bytes of storage `index`; InvalidArgument naming `what`
  // (the member or file offset) unless they are exactly its nbytes.
  absl::Status Attach(size_t index, ByteSource data, const std::string& what);

  // PickleExtension.
  std::optional<int64_t> FindGlobal(std::string_view module, std::string_view name) const override;
  std::string_view AllowedSummary() const override;
  absl::StatusOr<Obj*> Call(Unpickler& u, int64_t id, const std::vector<Obj*>& args) override;
  absl::StatusOr<Obj*> PersistentLoad(Unpickler& u, Obj* pid) override;
  absl::StatusOr<std::optional<Tensor>> ToTensor(const Obj& o, const std::string& what,
                                                 ReadBudget* budget, std::string* why) override;

 private:
  // A tensor rebuilt from a storage: element `offset + sum(i_k * stride[k])`
  // of the storage, read as `dtype`, is element (i_0, ..., i_n-1).
  struct View {
    size_t storage = 0;
    int64_t offset = 0;
    Shape shape;
    std::vector<int64_t> stride;
    std::optional<DType> dtype;  // of the elements (the storage's, or v3's)
    std::string dtype_name;
    size_t element_size = 1;
    std::optional<Tensor> tensor;  // cached on first flatten
  };
  // kExternal objects: num.i indexes externals_.
  struct External {
    bool is_view = false;
    size_t index = 0;  // into storages_ or views_
  };

  absl::StatusOr<Obj*> NewExternal(Unpickler& u, bool is_view, size_t index, std::string text);
  // The storage an argument refers to, or an error naming `fn`.
  absl::StatusOr<size_t> StorageArg(Unpickler& u, const Obj* o, const char* fn) const;
  absl::StatusOr<Obj*> RebuildTensor(Unpickler& u, const std::vector<Obj*>& args, const char* fn,
                                     bool has_dtype);
  absl::StatusOr<Obj*> RebuildParameter(Unpickler& u, const std::vector<Obj*>& args);
  // Checks that `v` lies inside its storage (see the file comment).
  absl::Status CheckView(Unpickler& u, const View& v) const;
  absl::StatusOr<Tensor> Materialise(const View& v, const std::string& what, ReadBudget* budget);

  bool big_endian_;
  std::vector<TorchStorage> storages_;
  absl::flat_hash_map<std::string, size_t> storage_by_key_;
  std::vector<View> views_;
  std::vector<External> externals_;
};

// The legacy torch.save stream (_use_new_zipfile_serialization=False) starts
// with a pickle of the magic number 0x1950a86a20f9469cfc6c: the offset just
// past that pickle, or nullopt when `bytes` does not start with it.
std::optional<size_t> TorchLegacyMagicEnd(std::string_view bytes);

}  // namespace reprod::formats::internal

#endif  // REPROD_FORMATS_INTERNAL_TORCH_PICKLE_H_
