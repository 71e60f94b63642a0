// File: formats/internal/array.h
//
// Helpers shared by the format readers (not part of the public API):
//
//  * ReadBudget: per-read accounting of declared tensor bytes and of bytes the
//    reader allocates, checked against ReadOptions before any allocation.
//  * MakeTensor: turns raw array bytes found in a file into a Tensor in the
//    layout contract of common/tensor.h (C-order, packed, little-endian). It
//    borrows the bytes (no copy) when they already are in that layout, aligned
//    or not (pickle payloads sit at arbitrary offsets; consumers load through
//    memcpy, see common/tensor.h); otherwise it copies, byte-swapping and/or
//    transposing from Fortran order.
//  * Error helpers that prefix messages with the file name.
//
// Thread-safety: functions are reentrant; a ReadBudget is used by one reader.
#ifndef REPROD_FORMATS_INTERNAL_ARRAY_H_
#define REPROD_FORMATS_INTERNAL_ARRAY_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/tensor.h"
#include "formats/tensor_file.h"

namespace reprod::formats::internal {

// Accounting for one ReadTensorFile call.
class ReadBudget {
 public:
  explicit ReadBudget(const ReadOptions& options) : options_(options) {}

  // Adds `bytes` to the declared tensor total; ResourceExhausted (naming
  // `what`) once it passes ReadOptions::max_total_bytes.
  absl::Status ChargeDeclared(uint64_t bytes, const std::string& what);
  // Adds `bytes` to the allocation total; ResourceExhausted (naming `what`)
  // once it passes ReadOptions::max_alloc_bytes. Call before allocating.
  absl::Status ChargeAlloc(uint64_t bytes, const std::string& what);

  // Copies (layout conversions, decoded strings, scalars, joined slices) are
  // further bounded by kCopyFactor times the bytes being parsed, so hostile
  // input that shares one buffer among many arrays cannot amplify itself.
  // Each reader calls AllowCopies with the size of what it parses.
  static constexpr uint64_t kCopyFactor = 64;
  void AllowCopies(uint64_t source_bytes);
  // ChargeAlloc, plus the copy bound above.
  absl::Status ChargeCopy(uint64_t bytes, const std::string& what);

  const ReadOptions& options() const { return options_; }

 private:
  ReadOptions options_;
  uint64_t declared_ = 0;
  uint64_t allocated_ = 0;
  uint64_t copy_limit_ = 0;
  uint64_t copied_ = 0;
};

// Bytes to parse: `bytes` lies inside memory kept alive by `owner`, which
// tensors may borrow from. `base_offset` (where `bytes` starts in the file)
// is added to offsets in messages; `what` names the file (or archive member)
// in messages.
struct ByteSource {
  std::string_view bytes;
  std::shared_ptr<const void> owner;
  uint64_t base_offset = 0;
  std::string what;
};

// Where the bytes of one on-disk array are and how they are laid out.
struct ArrayBytes {
  DType dtype = DType::kFloat32;
  Shape shape;             // validated: CheckedNumElements succeeded
  bool fortran = false;    // column-major on disk
  bool big_endian = false; // elements stored most-significant byte first
  const char* data = nullptr;  // exactly num_elements * DTypeSize bytes
  std::shared_ptr<const void> owner;  // keeps `data` alive (may be null for
                                      // bytes that are copied anyway)
};

// Builds a Tensor from `src` (see the file comment). `what` names the array in
// error messages ("file.npy", "file.pkl: key 'a/b'"). Copies are charged to
// `budget` (ChargeCopy).
absl::StatusOr<Tensor> MakeTensor(const ArrayBytes& src, ReadBudget* budget,
                                  const std::string& what);

// numpy's type code (descr without the byte order) of `dtype`: "b1", "u2",
// "f4", ...; nullopt for bfloat16, which numpy has no type for. The one
// table of numpy codes: the npy writer and the npy and pickle readers use it.
std::optional<std::string_view> NpyTypeCode(DType dtype);

// Inverse of NpyTypeCode: "u2" -> kUInt16; nullopt for codes reprod has no
// dtype for ("c8", "U3", "O", "M8").
std::optional<DType> DTypeFromNpyTypeCode(std::string_view code);

// True when `p` is aligned for elements of `size` bytes.
inline bool IsAligned(const void* p, size_t size) {
  return size <= 1 || reinterpret_cast<uintptr_t>(p) % size == 0;
}

// Little-endian integer loads from possibly unaligned memory.
uint16_t LoadLE16(const char* p);
uint32_t LoadLE32(const char* p);
uint64_t LoadLE64(const char* p);

// "93 4e 55 4d" — the first `n` bytes of `bytes` in hex, for messages.
std::string HexPrefix(std::string_view bytes, size_t n = 8);

// True when `s` is well-formed UTF-8 (no overlongs, no surrogates, at most
// U+10FFFF), as Python's str requires.
bool IsValidUtf8(std::string_view s);

// Quotes `s` for a message, escaping control and non-ASCII bytes and
// truncating after `max_len` bytes.
std::string Quote(std::string_view s, size_t max_len = 80);

}  // namespace reprod::formats::internal

#endif  // REPROD_FORMATS_INTERNAL_ARRAY_H_
