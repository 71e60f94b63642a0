// reprod_load_bench FILE [REPEATS]: times formats::ReadTensorFile on FILE.
// Prints one JSON object: median seconds for (a) parsing, which borrows array
// bytes from the memory map without reading them, and (b) parsing plus
// reading every tensor byte once (what np.load does: it copies everything),
// so the comparison with numpy is made on equal work.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "formats/tensor_file.h"

namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

uint64_t TouchAll(const reprod::formats::TensorFile& f) {
  uint64_t acc = 0;
  for (const auto& t : f.tensors) {
    const auto* p = static_cast<const unsigned char*>(t.tensor.data());
    const size_t n = t.tensor.num_bytes();
    for (size_t i = 0; i < n; i += 64) acc += p[i];  // one byte per cache line
  }
  return acc;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FILE [REPEATS]\n", argv[0]);
    return 2;
  }
  const std::string path = argv[1];
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 5;
  std::vector<double> parse, parse_touch;
  uint64_t sink = 0, bytes = 0;
  size_t tensors = 0;
  for (int i = 0; i < repeats; ++i) {
    for (bool touch : {false, true}) {
      const auto t0 = std::chrono::steady_clock::now();
      auto f = reprod::formats::ReadTensorFile(path);
      if (!f.ok()) {
        std::fprintf(stderr, "%s\n", std::string(f.status().message()).c_str());
        return 2;
      }
      if (touch) sink += TouchAll(*f);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      (touch ? parse_touch : parse).push_back(s);
      tensors = f->tensors.size();
      bytes = 0;
      for (const auto& t : f->tensors) bytes += t.tensor.num_bytes();
    }
  }
  std::printf(
      "{\"file\": \"%s\", \"tensors\": %zu, \"bytes\": %llu, \"parse_s\": %.6f, "
      "\"parse_and_read_s\": %.6f, \"sink\": %llu}\n",
      path.c_str(), tensors, static_cast<unsigned long long>(bytes), Median(parse),
      Median(parse_touch), static_cast<unsigned long long>(sink % 7));
  return 0;
}
