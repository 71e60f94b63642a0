// File: storage/testing/store_test_util.h
//
// Helpers shared by the storage tests (store_conformance_test.cc,
// rocksdb/rocksdb_store_test.cc): a header that tells the truth about a byte
// vector, and writing / reading a whole tensor through the Store interface.
#ifndef REPROD_STORAGE_TESTING_STORE_TEST_UTIL_H_
#define REPROD_STORAGE_TESTING_STORE_TEST_UTIL_H_

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/crc32c.h"
#include "storage/store.h"

namespace reprod::storage::testing {

// A uint8 tensor of shape (n,) holding `bytes`.
inline TensorHeader HeaderFor(const TensorAddress& address,
                              const std::vector<uint8_t>& bytes) {
  TensorHeader h;
  h.address = address;
  h.dtype = DType::kUInt8;
  h.shape = {static_cast<int64_t>(bytes.size())};
  h.byte_length = bytes.size();
  h.crc32c = Crc32c(bytes.data(), bytes.size());
  return h;
}

// Writes `bytes` under `header` in appends of `piece` bytes, then commits.
inline absl::StatusOr<CommitResult> WriteInPieces(
    Store& store, std::string_view run, const TensorHeader& header,
    const std::vector<uint8_t>& bytes, size_t piece) {
  absl::StatusOr<std::unique_ptr<TensorWriter>> writer =
      store.BeginTensor(run, header);
  if (!writer.ok()) return writer.status();
  for (size_t off = 0; off < bytes.size(); off += piece) {
    const size_t n = std::min(piece, bytes.size() - off);
    absl::Status s =
        (*writer)->Append(absl::Span<const uint8_t>(bytes.data() + off, n));
    if (!s.ok()) return s;
  }
  return (*writer)->Commit();
}

// Every byte of a stored tensor.
inline absl::StatusOr<std::vector<uint8_t>> ReadAll(
    Store& store, std::string_view run, const TensorAddress& address) {
  absl::StatusOr<std::unique_ptr<TensorReader>> reader =
      store.OpenTensor(run, address);
  if (!reader.ok()) return reader.status();
  std::vector<uint8_t> out((*reader)->meta().header.byte_length);
  absl::Status s = (*reader)->Read(0, absl::MakeSpan(out));
  if (!s.ok()) return s;
  return out;
}

}  // namespace reprod::storage::testing

#endif  // REPROD_STORAGE_TESTING_STORE_TEST_UTIL_H_
