// libFuzzer target: formats::ReadTorch over arbitrary bytes (zip archives and
// legacy streams).
#include <cstddef>
#include <cstdint>

#include "formats/torch.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return reprod::fuzz::RunOne(data, size, [](auto file, const auto& options) {
    return reprod::formats::ReadTorch(file, options);
  });
}
