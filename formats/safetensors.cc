#include "formats/safetensors.h"

#include <algorithm>
#include <array>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/visible.h"
#include "formats/internal/array.h"
#include "nlohmann/json.hpp"

namespace reprod::formats {
namespace {

struct NameAndType {
  std::string_view name;
  DType dtype = DType::kFloat32;
};

constexpr std::array<NameAndType, kNumDTypes> kDTypes = {{
    {"BOOL", DType::kBool},
    {"I8", DType::kInt8},
    {"U8", DType::kUInt8},
    {"I16", DType::kInt16},
    {"I32", DType::kInt32},
    {"I64", DType::kInt64},
    {"F16", DType::kFloat16},
    {"BF16", DType::kBFloat16},
    {"F32", DType::kFloat32},
    {"F64", DType::kFloat64},
    {"U16", DType::kUInt16},
    {"U32", DType::kUInt32},
    {"U64", DType::kUInt64},
}};

struct Entry {
  std::string key;
  DType dtype = DType::kFloat32;
  Shape shape;
  uint64_t begin;
  uint64_t end;
  bool skipped = false;  // unsupported dtype: only its offsets are checked
};

// Refuses two entries whose non-empty byte ranges overlap (naming both):
// every tensor owns its bytes, as the safetensors format requires. `entries`
// are sorted by offset on return.
absl::Status CheckNoOverlap(std::vector<Entry>* entries, const std::string& what) {
  std::sort(entries->begin(), entries->end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.key < b.key;
  });
  const Entry* reach = nullptr;  // the non-empty entry ending furthest so far
  for (const Entry& e : *entries) {
    if (e.begin == e.end) continue;
    if (reach != nullptr && e.begin < reach->end) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": tensors ", internal::Quote(reach->key), " [", reach->begin, ", ", reach->end,
          ") and ", internal::Quote(e.key), " [", e.begin, ", ", e.end,
          ") overlap in the data section (data_offsets must not share bytes)"));
    }
    if (reach == nullptr || e.end > reach->end) reach = &e;
  }
  return absl::OkStatus();
}

}  // namespace

std::string_view SafetensorsDTypeName(DType dtype) {
  for (const auto& e : kDTypes) {
    if (e.dtype == dtype) return e.name;
  }
  return "?";
}

std::optional<DType> SafetensorsDTypeFromName(std::string_view name) {
  for (const auto& e : kDTypes) {
    if (e.name == name) return e.dtype;
  }
  return std::nullopt;
}

absl::StatusOr<TensorFile> ReadSafetensors(std::shared_ptr<const MappedFile> file,
                                           const ReadOptions& options) {
  using nlohmann::json;
  const std::string& what = file->path();
  const std::string_view bytes = file->bytes();
  TensorFile out;
  out.path = what;
  out.format = FileFormat::kSafetensors;
  if (bytes.size() < 8) {
    return absl::DataLossError(absl::StrCat(what, ": truncated safetensors file (",
                                            bytes.size(), " bytes)"));
  }
  const uint64_t header_len = internal::LoadLE64(bytes.data());
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": safetensors header length ", header_len, " exceeds ",
        kMaxSafetensorsHeaderBytes, " bytes"));
  }
  if (header_len > bytes.size() - 8) {
    return absl::DataLossError(absl::StrCat(
        what, ": truncated safetensors header (declares ", header_len,
        " bytes, ", bytes.size() - 8, " present)"));
  }
  const std::string_view text = bytes.substr(8, static_cast<size_t>(header_len));
  const std::string_view data = bytes.substr(8 + static_cast<size_t>(header_len));
  const uint64_t data_offset = 8 + header_len;
  json header = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": safetensors header is not a JSON object"));
  }
  internal::ReadBudget budget(options);
  budget.AllowCopies(bytes.size());
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& key = it.key();
    if (key == "__metadata__") continue;
    const std::string where = absl::StrCat(what, ": key ", internal::Quote(key));
    if (!internal::IsValidUtf8(key)) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": key is not valid UTF-8"));
    }
    const json& v = it.value();
    if (!v.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": entry is not an object"));
    }
    auto dt = v.find("dtype");
    auto sh = v.find("shape");
    auto off = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string() || sh == v.end() || !sh->is_array() ||
        off == v.end() || !off->is_array() || off->size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": entry needs \"dtype\", \"shape\" and two \"data_offsets\""));
    }
    Entry e;
    e.key = key;
    for (const json& d : *sh) {
      if (!d.is_number_unsigned() || sh->size() > kMaxFileRank) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": shape must be at most ", kMaxFileRank, " non-negative integers (has ",
            sh->size(), ")"));
      }
      const uint64_t u = d.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": dimension ", u, " too large"));
      }
      e.shape.push_back(static_cast<int64_t>(u));
    }
    for (const json& o : *off) {
      if (!o.is_number_unsigned()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": data_offsets must be non-negative integers"));
      }
    }
    e.begin = (*off)[0].get<uint64_t>();
    e.end = (*off)[1].get<uint64_t>();
    const std::string& dtype_name = dt->get_ref<const std::string&>();
    const std::optional<DType> dtype = SafetensorsDTypeFromName(dtype_name);
    if (!dtype.has_value()) {
      if (e.begin > e.end || e.end > data.size()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": data_offsets [", e.begin, ", ",
                                                       e.end, ") outside the ", data.size(),
                                                       "-byte data section"));
      }
      out.skipped.push_back(absl::StrCat(VisibleName(key), ": unsupported safetensors dtype ",
                                         internal::Quote(dtype_name)));
      e.skipped = true;
      entries.push_back(std::move(e));
      continue;
    }
    e.dtype = *dtype;
    auto n = CheckedNumElements(e.shape, e.dtype);
    if (!n.ok()) return absl::InvalidArgumentError(absl::StrCat(where, ": ", n.status().message()));
    const uint64_t nbytes = static_cast<uint64_t>(*n) * DTypeSize(e.dtype);
    if (e.begin > e.end || e.end - e.begin != nbytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": data_offsets [", e.begin, ", ", e.end, ") do not hold shape ",
          ShapeToString(e.shape), " of ", dtype_name, " (", nbytes, " bytes)"));
    }
    REPROD_RETURN_IF_ERROR(budget.ChargeDeclared(nbytes, where));
    if (e.end > data.size()) {
      return absl::DataLossError(absl::StrCat(
          where, ": data ends at file offset ", data_offset + e.end,
          " but the file has ", bytes.size(), " bytes"));
    }
    e.dtype = *dtype;
    entries.push_back(std::move(e));
  }
  REPROD_RETURN_IF_ERROR(CheckNoOverlap(&entries, what));
  std::shared_ptr<const void> owner = file;
  for (Entry& e : entries) {
    if (e.skipped) continue;
    internal::ArrayBytes a;
    a.dtype = e.dtype;
    a.shape = e.shape;
    a.data = data.data() + e.begin;
    a.owner = owner;
    Tensor t;
    REPROD_ASSIGN_OR_RETURN(
        t, internal::MakeTensor(a, &budget, absl::StrCat(what, ": key ", internal::Quote(e.key))));
    out.tensors.push_back(NamedTensor{std::move(e.key), std::move(t)});
  }
  return out;
}

absl::StatusOr<std::string> EncodeSafetensors(const std::vector<NamedTensor>& tensors) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  absl::flat_hash_set<std::string> seen;
  uint64_t offset = 0;
  for (const NamedTensor& t : tensors) {
    if (t.key.empty() || t.key == "__metadata__" || !seen.insert(t.key).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("safetensors: empty, reserved or duplicate key ",
                       internal::Quote(t.key)));
    }
    if (!internal::IsValidUtf8(t.key)) {
      return absl::InvalidArgumentError(
          absl::StrCat("safetensors: key ", internal::Quote(t.key), " is not valid UTF-8"));
    }
    auto n = CheckedNumElements(t.tensor.shape(), t.tensor.dtype());
    if (!n.ok()) return n.status();
    const uint64_t nbytes = static_cast<uint64_t>(*n) * DTypeSize(t.tensor.dtype());
    nlohmann::ordered_json shape = nlohmann::ordered_json::array();
    for (int64_t d : t.tensor.shape()) shape.push_back(d);
    header[t.key] = {{"dtype", std::string(SafetensorsDTypeName(t.tensor.dtype()))},
                     {"shape", shape},
                     {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out;
  out.reserve(8 + text.size() + offset);
  for (int k = 0; k < 8; ++k) {
    out.push_back(static_cast<char>((static_cast<uint64_t>(text.size()) >> (8 * k)) & 0xff));
  }
  out.append(text);
  for (const NamedTensor& t : tensors) {
    if (t.tensor.num_bytes() > 0) {
      out.append(static_cast<const char*>(t.tensor.data()), t.tensor.num_bytes());
    }
  }
  return out;
}

}  // namespace reprod::formats
