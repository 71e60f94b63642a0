#include "formats/internal/array.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace reprod::formats::internal {

absl::Status ReadBudget::ChargeDeclared(uint64_t bytes, const std::string& what) {
  if (bytes > options_.max_total_bytes ||
      declared_ > options_.max_total_bytes - bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        what, ": declared tensor bytes (", bytes, " more after ", declared_,
        ") exceed the limit of ", options_.max_total_bytes, " bytes"));
  }
  declared_ += bytes;
  return absl::OkStatus();
}

absl::Status ReadBudget::ChargeAlloc(uint64_t bytes, const std::string& what) {
  if (bytes > options_.max_alloc_bytes ||
      allocated_ > options_.max_alloc_bytes - bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        what, ": allocating ", bytes, " bytes (after ", allocated_,
        ") would exceed the limit of ", options_.max_alloc_bytes, " bytes"));
  }
  allocated_ += bytes;
  return absl::OkStatus();
}

void ReadBudget::AllowCopies(uint64_t source_bytes) {
  const uint64_t more = source_bytes > (~uint64_t{0} - (uint64_t{1} << 20)) / kCopyFactor
                            ? ~uint64_t{0}
                            : source_bytes * kCopyFactor + (uint64_t{1} << 20);
  copy_limit_ = copy_limit_ > ~uint64_t{0} - more ? ~uint64_t{0} : copy_limit_ + more;
}

absl::Status ReadBudget::ChargeCopy(uint64_t bytes, const std::string& what) {
  if (bytes > copy_limit_ || copied_ > copy_limit_ - bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        what, ": copying ", bytes, " more bytes (after ", copied_,
        ") would exceed ", kCopyFactor, " times the input size"));
  }
  REPROD_RETURN_IF_ERROR(ChargeAlloc(bytes, what));
  copied_ += bytes;
  return absl::OkStatus();
}

namespace {

// Copies one element of `size` bytes, reversing byte order if `swap`.
inline void CopyElement(char* dst, const char* src, size_t size, bool swap) {
  if (!swap) {
    std::memcpy(dst, src, size);
  } else {
    for (size_t i = 0; i < size; ++i) dst[i] = src[size - 1 - i];
  }
}

}  // namespace

absl::StatusOr<Tensor> MakeTensor(const ArrayBytes& src, ReadBudget* budget,
                                  const std::string& what) {
  const size_t item = DTypeSize(src.dtype);
  const int64_t n = NumElements(src.shape);
  const size_t bytes = static_cast<size_t>(n) * item;
  // Fortran order only differs from C order with two or more dimensions of
  // size > 1.
  int non_trivial_dims = 0;
  for (int64_t d : src.shape) non_trivial_dims += d > 1 ? 1 : 0;
  const bool transpose = src.fortran && non_trivial_dims > 1;
  const bool swap = src.big_endian && item > 1;
  if (!transpose && !swap && src.owner != nullptr) {
    return Tensor::Borrow(src.dtype, src.shape, src.data, src.owner);
  }
  REPROD_RETURN_IF_ERROR(budget->ChargeCopy(bytes, what));
  auto out = Tensor::Allocate(src.dtype, src.shape);
  if (!out.ok()) {
    return absl::Status(out.status().code(),
                        absl::StrCat(what, ": ", out.status().message()));
  }
  char* dst = static_cast<char*>(out->mutable_data());
  if (!transpose) {
    if (!swap) {
      if (bytes > 0) std::memcpy(dst, src.data, bytes);
    } else {
      for (int64_t i = 0; i < n; ++i) {
        CopyElement(dst + i * item, src.data + i * item, item, true);
      }
    }
    return out;
  }
  // Fortran -> C: walk the output in C order with an odometer over the
  // multi-index, tracking the Fortran source offset (in elements).
  const size_t nd = src.shape.size();
  std::vector<int64_t> fstride(nd), idx(nd, 0);
  int64_t s = 1;
  for (size_t k = 0; k < nd; ++k) {
    fstride[k] = s;
    s *= src.shape[k];
  }
  if (n == 0) return out;
  const int64_t inner = src.shape[nd - 1];
  const int64_t inner_stride = fstride[nd - 1];
  int64_t src_off = 0;
  char* d = dst;
  for (int64_t done = 0; done < n; done += inner) {
    const char* p = src.data + src_off * item;
    for (int64_t j = 0; j < inner; ++j) {
      CopyElement(d, p, item, swap);
      d += item;
      p += inner_stride * item;
    }
    // Advance the outer dimensions (all but the last).
    for (size_t k = nd - 1; k-- > 0;) {
      if (++idx[k] < src.shape[k]) {
        src_off += fstride[k];
        break;
      }
      src_off -= (src.shape[k] - 1) * fstride[k];
      idx[k] = 0;
    }
  }
  return out;
}

std::optional<std::string_view> NpyTypeCode(DType dtype) {
  switch (dtype) {
    case DType::kBool: return "b1";
    case DType::kInt8: return "i1";
    case DType::kUInt8: return "u1";
    case DType::kInt16: return "i2";
    case DType::kUInt16: return "u2";
    case DType::kInt32: return "i4";
    case DType::kUInt32: return "u4";
    case DType::kInt64: return "i8";
    case DType::kUInt64: return "u8";
    case DType::kFloat16: return "f2";
    case DType::kFloat32: return "f4";
    case DType::kFloat64: return "f8";
    case DType::kBFloat16: return std::nullopt;
  }
  return std::nullopt;
}

std::optional<DType> DTypeFromNpyTypeCode(std::string_view code) {
  for (int i = 0; i < kNumDTypes; ++i) {
    const auto t = static_cast<DType>(i);
    if (NpyTypeCode(t) == code) return t;
  }
  return std::nullopt;
}

uint16_t LoadLE16(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return static_cast<uint16_t>(u[0] | (u[1] << 8));
}

uint32_t LoadLE32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return static_cast<uint32_t>(u[0]) | (static_cast<uint32_t>(u[1]) << 8) |
         (static_cast<uint32_t>(u[2]) << 16) |
         (static_cast<uint32_t>(u[3]) << 24);
}

uint64_t LoadLE64(const char* p) {
  return static_cast<uint64_t>(LoadLE32(p)) |
         (static_cast<uint64_t>(LoadLE32(p + 4)) << 32);
}

std::string HexPrefix(std::string_view bytes, size_t n) {
  std::string out;
  for (size_t i = 0; i < std::min(n, bytes.size()); ++i) {
    if (i > 0) out += ' ';
    absl::StrAppendFormat(&out, "%02x", static_cast<unsigned char>(bytes[i]));
  }
  return out;
}

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (n - i < static_cast<size_t>(len)) return false;
    for (int k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
        (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += len;
  }
  return true;
}

std::string Quote(std::string_view s, size_t max_len) {
  std::string out = "'";
  for (size_t i = 0; i < std::min(s.size(), max_len); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '\'' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c >= 0x7f) {
      absl::StrAppendFormat(&out, "\\x%02x", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > max_len) out += "...";
  out += "'";
  return out;
}

}  // namespace reprod::formats::internal
