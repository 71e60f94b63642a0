// File: tests/fuzz/fuzz_util.h
//
// Shared body of the formats fuzzers: wrap the input in a MappedFile, run one
// reader with tight limits, and touch every byte of every returned tensor so
// the sanitizers see any tensor that points outside live memory.
#ifndef REPROD_TESTS_FUZZ_FUZZ_UTIL_H_
#define REPROD_TESTS_FUZZ_FUZZ_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/mapped_file.h"
#include "formats/tensor_file.h"

namespace reprod::fuzz {

inline formats::ReadOptions FuzzOptions() {
  formats::ReadOptions o;
  o.max_total_bytes = uint64_t{256} << 20;
  o.max_alloc_bytes = uint64_t{64} << 20;
  return o;
}

template <typename Reader>
int RunOne(const uint8_t* data, size_t size, Reader reader) {
  auto file = MappedFile::FromString(
      std::string(reinterpret_cast<const char*>(data), size), "fuzz-input");
  absl::StatusOr<formats::TensorFile> f = reader(file, FuzzOptions());
  if (!f.ok()) {
    // Every error must name the input.
    if (f.status().message().find("fuzz-input") == absl::string_view::npos) __builtin_trap();
    return 0;
  }
  volatile unsigned sum = 0;
  for (const NamedTensor& t : f->tensors) {
    const auto* p = static_cast<const unsigned char*>(t.tensor.data());
    for (size_t k = 0; k < t.tensor.num_bytes(); ++k) sum = sum + p[k];
    sum = sum + static_cast<unsigned>(t.key.size());
  }
  return 0;
}

}  // namespace reprod::fuzz

#endif  // REPROD_TESTS_FUZZ_FUZZ_UTIL_H_
