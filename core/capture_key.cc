#include "core/capture_key.h"

#include <vector>

namespace reprod::core {

std::optional<CaptureKey> ParseCaptureKey(std::string_view key) {
  // Module, direction and role are the first three "/"-parts; the index
  // is the rest.
  std::vector<std::string_view> parts;
  size_t at = 0;
  while (parts.size() < 3) {
    const size_t slash = key.find('/', at);
    if (slash == std::string_view::npos) return std::nullopt;
    parts.push_back(key.substr(at, slash - at));
    at = slash + 1;
  }
  parts.push_back(key.substr(at));
  if (parts.size() != 4 || parts[0].empty() || parts[3].empty()) return std::nullopt;
  if (parts[1] != "forward" && parts[1] != "backward") return std::nullopt;
  if (parts[2] != "input" && parts[2] != "output" && parts[2] != "grad_output" &&
      parts[2] != "param_grad") {
    return std::nullopt;
  }
  return CaptureKey{parts[0], parts[1], parts[2], parts[3]};
}

}  // namespace reprod::core
