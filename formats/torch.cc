#include "formats/torch.h"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "formats/internal/array.h"
#include "formats/internal/flattener.h"
#include "formats/internal/torch_pickle.h"
#include "formats/internal/unpickler.h"
#include "formats/internal/zip_archive.h"

namespace reprod::formats {
namespace {

using internal::ByteSource;
using internal::Obj;
using internal::Quote;
using internal::ReadBudget;
using internal::TorchPickle;
using internal::Unpickler;
using internal::ZipArchive;

constexpr std::string_view kDataPkl = "data.pkl";
constexpr int64_t kLegacyProtocolVersion = 1001;

// The "<archive>/data.pkl" member (archive: one path component), or nullptr.
const ZipArchive::Member* FindDataPkl(const ZipArchive& zip) {
  for (const ZipArchive::Member& m : zip.members()) {
    const size_t slash = m.name.find('/');
    if (slash != std::string::npos && slash > 0 &&
        std::string_view(m.name).substr(slash + 1) == kDataPkl) {
      return &m;
    }
  }
  return nullptr;
}

// "<archive>/byteorder" (torch >= 2.1): true when the storages are
// big-endian; absent means little-endian.
absl::StatusOr<bool> ZipBigEndian(const ZipArchive& zip, const std::string& prefix,
                                  ReadBudget* budget) {
  const ZipArchive::Member* m = zip.Find(prefix + "byteorder");
  if (m == nullptr) return false;
  if (m->size > 16) {
    return absl::InvalidArgumentError(
        absl::StrCat(zip.What(*m), ": byteorder member of ", m->size, " bytes"));
  }
  REPROD_ASSIGN_OR_RETURN(ByteSource order, zip.Read(*m, budget));
  if (order.bytes == "little") return false;
  if (order.bytes == "big") return true;
  return absl::InvalidArgumentError(
      absl::StrCat(zip.What(*m), ": byteorder ", Quote(order.bytes), " is neither little nor big"));
}

absl::Status ReadZip(const std::shared_ptr<const MappedFile>& file, ReadBudget* budget,
                     TensorFile* out) {
  REPROD_ASSIGN_OR_RETURN(ZipArchive zip, ZipArchive::Open(file->bytes(), file->path()));
  const ZipArchive::Member* pkl = FindDataPkl(zip);
  if (pkl == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        file->path(), ": zip archive without an <archive>/data.pkl member: not a torch.save file"));
  }
  const std::string prefix = pkl->name.substr(0, pkl->name.size() - kDataPkl.size());
  bool big_endian;
  REPROD_ASSIGN_OR_RETURN(big_endian, ZipBigEndian(zip, prefix, budget));
  REPROD_ASSIGN_OR_RETURN(const ByteSource pickle, zip.Read(*pkl, budget));
  TorchPickle torch(big_endian);
  const internal::PickleLimits limits;
  Unpickler u(pickle, budget, limits, &torch);
  Obj* root;
  REPROD_ASSIGN_OR_RETURN(root, u.Run());
  // Only the storages the pickle references are read, each once.
  for (size_t i = 0; i < torch.storages().size(); ++i) {
    const internal::TorchStorage& s = torch.storages()[i];
    const std::string name = absl::StrCat(prefix, "data/", s.key);
    const ZipArchive::Member* m = zip.Find(name);
    if (m == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(file->path(), ": torch storage ", Quote(s.key),
                                                     " has no archive member ", Quote(name)));
    }
    if (m->size != s.nbytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          zip.What(*m), ": torch storage ", Quote(s.key), " (", s.type, " of ", s.numel,
          " elements) needs ", s.nbytes, " bytes, the member declares ", m->size));
    }
    REPROD_ASSIGN_OR_RETURN(ByteSource data, zip.Read(*m, budget));
    REPROD_RETURN_IF_ERROR(torch.Attach(i, std::move(data), zip.What(*m)));
  }
  internal::Flattener flattener(u, budget, limits, out, "");
  return flattener.Visit(root, "", 0);
}

// The bytes of `file` from `pos` on, as a pickle source.
ByteSource Tail(const std::shared_ptr<const MappedFile>& file, size_t pos) {
  ByteSource src;
  src.bytes = file->bytes().substr(pos);
  src.owner = file;
  src.base_offset = pos;
  src.what = file->path();
  return src;
}

// The legacy stream's protocol-version and sys_info pickles, from `*pos`
// (advanced past them).
absl::Status ReadLegacyHeader(const std::shared_ptr<const MappedFile>& file, ReadBudget* budget,
                              size_t* pos) {
  const internal::PickleLimits limits;
  const ByteSource version_src = Tail(file, *pos);
  Unpickler version(version_src, budget, limits);
  Obj* v;
  REPROD_ASSIGN_OR_RETURN(v, version.Run());
  if (v->kind != internal::Kind::kInt || v->num.i != kLegacyProtocolVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat(file->path(), ": legacy torch.save protocol version at offset ", *pos,
                     " is not ", kLegacyProtocolVersion));
  }
  *pos += version.end();
  const ByteSource info_src = Tail(file, *pos);
  Unpickler info(info_src, budget, limits);
  Obj* d;
  REPROD_ASSIGN_OR_RETURN(d, info.Run());
  if (d->kind != internal::Kind::kDict) {
    return absl::InvalidArgumentError(absl::StrCat(
        file->path(), ": legacy torch.save system info at offset ", *pos, " is not a dict"));
  }
  for (size_t k = 0; k + 1 < d->items.size(); k += 2) {
    const Obj* key = d->items[k];
    const Obj* value = d->items[k + 1];
    if (key->kind == internal::Kind::kStr && key->text == "little_endian" &&
        value->kind == internal::Kind::kBool && !value->num.b) {
      return absl::InvalidArgumentError(absl::StrCat(
          file->path(), ": legacy torch.save file written on a big-endian machine; not supported"));
    }
  }
  *pos += info.end();
  return absl::OkStatus();
}

// The storage-key list and the raw storages after it, from `*pos`.
absl::Status ReadLegacyStorages(const std::shared_ptr<const MappedFile>& file, ReadBudget* budget,
                                TorchPickle* torch, size_t* pos) {
  const std::string& path = file->path();
  const ByteSource keys_src = Tail(file, *pos);
  const internal::PickleLimits limits;
  Unpickler keys_pickle(keys_src, budget, limits);
  Obj* keys;
  REPROD_ASSIGN_OR_RETURN(keys, keys_pickle.Run());
  if (keys->kind != internal::Kind::kList) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": legacy torch.save storage keys at offset ", *pos, " are not a list"));
  }
  *pos += keys_pickle.end();
  const std::string_view bytes = file->bytes();
  std::vector<bool> seen(torch->storages().size(), false);
  for (const Obj* key : keys->items) {
    std::optional<size_t> index;
    if (key->kind == internal::Kind::kStr) index = torch->StorageIndex(key->text);
    if (!index.has_value() || seen[*index]) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": legacy torch.save storage key ",
                       key->kind == internal::Kind::kStr ? Quote(key->text) : "(not a str)",
                       " at offset ", *pos, " is not referenced by the pickle or listed twice"));
    }
    seen[*index] = true;
    const internal::TorchStorage& s = torch->storages()[*index];
    if (bytes.size() - *pos < 8) {
      return absl::DataLossError(absl::StrCat(path, ": truncated: element count of torch storage ",
                                              Quote(s.key), " at offset ", *pos));
    }
    const auto count = static_cast<int64_t>(internal::LoadLE64(bytes.data() + *pos));
    if (count != s.numel) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": torch storage ", Quote(s.key),
                                                     " at offset ", *pos, " holds ", count,
                                                     " elements, the pickle declares ", s.numel));
    }
    *pos += 8;
    if (s.nbytes > bytes.size() - *pos) {
      return absl::DataLossError(absl::StrCat(path, ": truncated: torch storage ", Quote(s.key),
                                              " needs ", s.nbytes, " bytes at offset ", *pos, ", ",
                                              bytes.size() - *pos, " left"));
    }
    ByteSource data = Tail(file, *pos);
    data.bytes = data.bytes.substr(0, static_cast<size_t>(s.nbytes));
    REPROD_RETURN_IF_ERROR(
        torch->Attach(*index, std::move(data), absl::StrCat(path, " at offset ", *pos)));
    *pos += static_cast<size_t>(s.nbytes);
  }
  for (size_t i = 0; i < seen.size(); ++i) {
    if (!seen[i]) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": torch storage ",
                                                     Quote(torch->storages()[i].key),
                                                     " is referenced but has no data in the file"));
    }
  }
  return absl::OkStatus();
}

absl::Status ReadLegacy(const std::shared_ptr<const MappedFile>& file, size_t magic_end,
                        ReadBudget* budget, TensorFile* out) {
  size_t pos = magic_end;
  REPROD_RETURN_IF_ERROR(ReadLegacyHeader(file, budget, &pos));
  const ByteSource pickle = Tail(file, pos);
  TorchPickle torch(/*big_endian=*/false);
  const internal::PickleLimits limits;
  Unpickler u(pickle, budget, limits, &torch);
  Obj* root;
  REPROD_ASSIGN_OR_RETURN(root, u.Run());
  pos += u.end();
  REPROD_RETURN_IF_ERROR(ReadLegacyStorages(file, budget, &torch, &pos));
  internal::Flattener flattener(u, budget, limits, out, "");
  return flattener.Visit(root, "", 0);
}

}  // namespace

bool IsTorchZip(std::string_view bytes) {
  if (!internal::HasZipMagic(bytes)) return false;
  absl::StatusOr<ZipArchive> zip = ZipArchive::Open(bytes, "");
  return zip.ok() && FindDataPkl(*zip) != nullptr;
}

bool IsTorchLegacy(std::string_view bytes) {
  return internal::TorchLegacyMagicEnd(bytes).has_value();
}

absl::StatusOr<TensorFile> ReadTorch(std::shared_ptr<const MappedFile> file,
                                     const ReadOptions& options) {
  TensorFile out;
  out.path = file->path();
  out.format = FileFormat::kTorch;
  ReadBudget budget(options);
  budget.AllowCopies(file->size());
  if (internal::HasZipMagic(file->bytes())) {
    REPROD_RETURN_IF_ERROR(ReadZip(file, &budget, &out));
    return out;
  }
  if (std::optional<size_t> end = internal::TorchLegacyMagicEnd(file->bytes())) {
    REPROD_RETURN_IF_ERROR(ReadLegacy(file, *end, &budget, &out));
    return out;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      file->path(), ": not a torch.save file (first bytes ", internal::HexPrefix(file->bytes()),
      "; expected a zip archive or the legacy magic number)"));
}

}  // namespace reprod::formats
