// libFuzzer target: formats::ReadPickle over arbitrary bytes.
#include <cstddef>
#include <cstdint>

#include "formats/pickle.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return reprod::fuzz::RunOne(data, size, [](auto file, const auto& options) {
    return reprod::formats::ReadPickle(file, options);
  });
}
