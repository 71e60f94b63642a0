#include "formats/npy.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/visible.h"
#include "formats/internal/array.h"
#include "formats/internal/npy_reader.h"
#include "formats/internal/py_literal.h"
#include "formats/internal/unpickler.h"

namespace reprod::formats {
namespace {

using internal::PyLiteral;

constexpr std::string_view kMagic = "\x93NUMPY";
constexpr size_t kMaxHeaderLen = size_t{1} << 20;

absl::Status Invalid(const std::string& what, std::string_view msg) {
  return absl::InvalidArgumentError(absl::StrCat(what, ": ", std::string(msg)));
}

// "b1 i1 u1 ...": the numpy type codes reprod reads, for messages.
std::string SupportedTypeCodes() {
  std::string codes;
  for (int i = 0; i < kNumDTypes; ++i) {
    if (const auto code = internal::NpyTypeCode(static_cast<DType>(i)); code.has_value()) {
      absl::StrAppend(&codes, codes.empty() ? "" : " ", std::string(*code));
    }
  }
  return codes;
}

// Maps a numpy descr to a DType (nullopt for '|O'); sets *big_endian.
absl::StatusOr<std::optional<DType>> DescrToDType(const std::string& descr,
                                                  const std::string& what,
                                                  bool* big_endian) {
  *big_endian = false;
  if (descr.size() >= 2) {
    const char order = descr[0];
    const std::string_view code = std::string_view(descr).substr(1);
    if (order == '<' || order == '>' || order == '|' || order == '=') {
      if (code == "O" || code == "O8") return std::optional<DType>();
      if (const std::optional<DType> t = internal::DTypeFromNpyTypeCode(code); t.has_value()) {
        *big_endian = order == '>' && DTypeSize(*t) > 1;
        return t;
      }
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(
      what, ": unsupported npy dtype ", internal::Quote(descr),
      " (supported: ", SupportedTypeCodes(), " and pickled objects |O)"));
}

}  // namespace

namespace {

// ParseNpyHeader, except that an unsupported descr is not an error: the
// header comes back with dtype == nullopt, is_object == false and the message
// in *unsupported.
absl::StatusOr<NpyHeader> ParseHeader(std::string_view bytes, const std::string& what,
                                      std::string* unsupported) {
  if (bytes.size() < kMagic.size() || bytes.substr(0, kMagic.size()) != kMagic) {
    if (bytes.size() < kMagic.size() && kMagic.substr(0, bytes.size()) == bytes) {
      return absl::DataLossError(absl::StrCat(what, ": truncated npy magic"));
    }
    return Invalid(what, absl::StrCat("not an npy file (first bytes ",
                                      internal::HexPrefix(bytes), ")"));
  }
  if (bytes.size() < 8) return absl::DataLossError(absl::StrCat(what, ": truncated npy header"));
  NpyHeader h;
  h.major_version = static_cast<unsigned char>(bytes[6]);
  h.minor_version = static_cast<unsigned char>(bytes[7]);
  size_t len_size;
  if (h.major_version == 1) {
    len_size = 2;
  } else if (h.major_version == 2 || h.major_version == 3) {
    len_size = 4;
  } else {
    return Invalid(what, absl::StrCat("unsupported npy version ", h.major_version,
                                      ".", h.minor_version));
  }
  if (bytes.size() < 8 + len_size) {
    return absl::DataLossError(absl::StrCat(what, ": truncated npy header"));
  }
  const uint64_t header_len = len_size == 2 ? internal::LoadLE16(bytes.data() + 8)
                                            : internal::LoadLE32(bytes.data() + 8);
  if (header_len > kMaxHeaderLen) {
    return Invalid(what, absl::StrCat("npy header of ", header_len,
                                      " bytes (at most ", kMaxHeaderLen, " supported)"));
  }
  const size_t start = 8 + len_size;
  if (header_len > bytes.size() - start) {
    return absl::DataLossError(absl::StrCat(what, ": truncated npy header (declares ",
                                            header_len, " bytes, ",
                                            bytes.size() - start, " present)"));
  }
  h.data_offset = start + static_cast<size_t>(header_len);
  const std::string_view text = bytes.substr(start, static_cast<size_t>(header_len));
  auto lit = internal::ParsePyLiteral(text);
  if (!lit.ok()) return Invalid(what, absl::StrCat("npy header: ", lit.status().message()));
  const PyLiteral* descr = lit->Find("descr");
  const PyLiteral* fortran = lit->Find("fortran_order");
  const PyLiteral* shape = lit->Find("shape");
  if (descr == nullptr || fortran == nullptr || shape == nullptr) {
    return Invalid(what, "npy header lacks descr, fortran_order or shape");
  }
  if (descr->kind != PyLiteral::Kind::kStr) {
    return Invalid(what, "unsupported npy dtype: structured (record) arrays are not supported");
  }
  h.descr = descr->s;
  if (fortran->kind != PyLiteral::Kind::kBool) {
    return Invalid(what, "npy header: fortran_order is not a bool");
  }
  h.fortran_order = fortran->b;
  if (shape->kind != PyLiteral::Kind::kTuple) {
    return Invalid(what, "npy header: shape is not a tuple");
  }
  if (shape->items.size() > kMaxFileRank) {
    return Invalid(what, absl::StrCat("npy header: shape has ", shape->items.size(),
                                      " dimensions (at most ", kMaxFileRank, " supported)"));
  }
  for (const PyLiteral& d : shape->items) {
    if (d.kind != PyLiteral::Kind::kInt) return Invalid(what, "npy header: shape holds a non-int");
    h.shape.push_back(d.i);
  }
  auto dtype = DescrToDType(h.descr, what, &h.big_endian);
  if (!dtype.ok()) {
    *unsupported = std::string(dtype.status().message());
  } else {
    h.dtype = *dtype;
    h.is_object = !h.dtype.has_value();
  }
  auto n = CheckedNumElements(h.shape, h.dtype.value_or(DType::kUInt8));
  if (!n.ok()) return Invalid(what, std::string(n.status().message()));
  return h;
}

}  // namespace

absl::StatusOr<NpyHeader> ParseNpyHeader(std::string_view bytes,
                                         const std::string& what) {
  std::string unsupported;
  auto h = ParseHeader(bytes, what, &unsupported);
  if (h.ok() && !unsupported.empty()) return absl::InvalidArgumentError(unsupported);
  return h;
}

namespace internal {

uint64_t MaxNpyHeaderBytes() { return 12 + kMaxHeaderLen; }

absl::StatusOr<std::optional<uint64_t>> NpyDeclaredSize(std::string_view head,
                                                        const std::string& what,
                                                        std::string* desc) {
  std::string unsupported;
  NpyHeader h;
  REPROD_ASSIGN_OR_RETURN(h, ParseHeader(head, what, &unsupported));
  if (!unsupported.empty() || h.is_object) return std::optional<uint64_t>();
  // No overflow: ParseHeader checked the byte size against int64.
  const uint64_t nbytes = static_cast<uint64_t>(NumElements(h.shape)) * DTypeSize(*h.dtype);
  *desc = absl::StrCat("shape ", ShapeToString(h.shape), " of ", Quote(h.descr));
  return std::optional<uint64_t>(h.data_offset + nbytes);
}

absl::Status ReadNpyInto(const ByteSource& src, const std::string& key,
                         bool skip_unsupported, ReadBudget* budget, TensorFile* out,
                         bool* pickled) {
  *pickled = false;
  budget->AllowCopies(src.bytes.size());
  NpyHeader h;
  std::string unsupported;
  REPROD_ASSIGN_OR_RETURN(h, ParseHeader(src.bytes, src.what, &unsupported));
  if (!unsupported.empty()) {
    if (!skip_unsupported) return absl::InvalidArgumentError(unsupported);
    out->skipped.push_back(absl::StrCat(key.empty() ? "output" : VisibleName(key),
                                        ": unsupported npy dtype ", Quote(h.descr)));
    return absl::OkStatus();
  }
  if (h.is_object) {
    *pickled = true;
    ByteSource pickle;
    pickle.bytes = src.bytes.substr(h.data_offset);
    pickle.owner = src.owner;
    pickle.base_offset = src.base_offset + h.data_offset;
    pickle.what = src.what;
    return UnpickleAndFlatten(pickle, key, budget, out);
  }
  const uint64_t count = static_cast<uint64_t>(NumElements(h.shape));
  const uint64_t nbytes = count * DTypeSize(*h.dtype);  // no overflow: checked
  const std::string leaf = key.empty() ? "output" : key;
  REPROD_RETURN_IF_ERROR(budget->ChargeDeclared(nbytes, src.what));
  const size_t avail = src.bytes.size() - h.data_offset;
  if (nbytes > avail) {
    return absl::DataLossError(absl::StrCat(
        src.what, ": truncated npy data: shape ", ShapeToString(h.shape), " of ",
        Quote(h.descr), " needs ", nbytes, " bytes at offset ",
        src.base_offset + h.data_offset, ", ", avail, " present"));
  }
  ArrayBytes a;
  a.dtype = *h.dtype;
  a.shape = h.shape;
  a.fortran = h.fortran_order;
  a.big_endian = h.big_endian;
  a.data = src.bytes.data() + h.data_offset;
  a.owner = src.owner;
  Tensor t;
  REPROD_ASSIGN_OR_RETURN(t, MakeTensor(a, budget, src.what));
  out->tensors.push_back(NamedTensor{leaf, std::move(t)});
  return absl::OkStatus();
}

}  // namespace internal

absl::StatusOr<TensorFile> ReadNpy(std::shared_ptr<const MappedFile> file,
                                   const ReadOptions& options) {
  TensorFile out;
  out.path = file->path();
  internal::ByteSource src;
  src.bytes = file->bytes();
  src.what = file->path();
  src.owner = std::move(file);
  internal::ReadBudget budget(options);
  bool pickled = false;
  REPROD_RETURN_IF_ERROR(
      internal::ReadNpyInto(src, "", /*skip_unsupported=*/false, &budget, &out, &pickled));
  out.format = pickled ? FileFormat::kNpyPickledDict : FileFormat::kNpy;
  return out;
}

std::optional<std::string> NpyDescr(DType dtype) {
  const std::optional<std::string_view> code = internal::NpyTypeCode(dtype);
  if (!code.has_value()) return std::nullopt;
  return absl::StrCat(DTypeSize(dtype) == 1 ? "|" : "<", std::string(*code));
}

absl::StatusOr<std::string> EncodeNpy(const TensorView& tensor) {
  const std::optional<std::string> descr = NpyDescr(tensor.dtype);
  if (!descr.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot write ", std::string(DTypeName(tensor.dtype)),
        " to .npy: numpy has no such dtype (convert to float32 first)"));
  }
  auto n = CheckedNumElements(tensor.shape, tensor.dtype);
  if (!n.ok()) return n.status();
  // numpy's tuple notation: "()", "(5,)", "(2, 3)".
  const std::string shape = ShapeToString(tensor.shape);
  std::string dict = absl::StrCat("{'descr': '", *descr,
                                  "', 'fortran_order': False, 'shape': ", shape,
                                  ", }");
  // Pad with spaces and a final newline so the data starts 64-aligned.
  size_t prefix = 10;  // magic(6) + version(2) + uint16 length
  size_t total = prefix + dict.size() + 1;
  int major = 1;
  if (((total + 63) / 64) * 64 - prefix > 65535) {
    major = 2;
    prefix = 12;
    total = prefix + dict.size() + 1;
  }
  const size_t padded = (total + 63) / 64 * 64;
  dict.append(padded - total, ' ');
  dict.push_back('\n');
  const size_t header_len = dict.size();
  const size_t data_bytes = static_cast<size_t>(*n) * DTypeSize(tensor.dtype);
  std::string out;
  out.reserve(prefix + header_len + data_bytes);
  out.append(kMagic);
  out.push_back(static_cast<char>(major));
  out.push_back(0);
  for (size_t k = 0; k < (major == 1 ? 2u : 4u); ++k) {
    out.push_back(static_cast<char>((header_len >> (8 * k)) & 0xff));
  }
  out.append(dict);
  if (data_bytes > 0) out.append(static_cast<const char*>(tensor.data), data_bytes);
  return out;
}

absl::Status WriteNpy(const std::string& path, const TensorView& tensor) {
  std::string bytes;
  REPROD_ASSIGN_OR_RETURN(bytes, EncodeNpy(tensor));
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    const int err = errno;
    const std::string msg = absl::StrCat(path, ": cannot open for writing: ", std::strerror(err));
    if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(msg);
    if (err == ENOENT) return absl::NotFoundError(msg);
    return absl::InternalError(msg);
  }
  const size_t written = std::fwrite(bytes.data(), 1, bytes.size(), f);
  const int err = errno;
  if (std::fclose(f) != 0 || written != bytes.size()) {
    return absl::InternalError(absl::StrCat(path, ": write failed: ", std::strerror(err)));
  }
  return absl::OkStatus();
}

}  // namespace reprod::formats
