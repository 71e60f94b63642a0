#include "common/names.h"

#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace reprod {
namespace {

bool IsAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9');
}

std::string Quoted(std::string_view s) {
  constexpr size_t kShown = 80;
  std::string shown = absl::CEscape(std::string(s.substr(0, kShown)));
  if (s.size() > kShown) shown += "...";
  return absl::StrCat("'", shown, "'");
}

absl::Status Bad(std::string_view kind, std::string_view value,
                 std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(
      "invalid ", std::string(kind), " ", Quoted(value), ": ", std::string(why)));
}

// Checks length and characters of one segment; `extra` lists the allowed
// punctuation besides letters and digits.
absl::Status CheckSegment(std::string_view kind, std::string_view whole,
                          std::string_view segment, size_t offset,
                          size_t max_len, std::string_view extra) {
  if (segment.empty()) {
    return Bad(kind, whole,
               absl::StrCat("empty part at offset ", offset));
  }
  if (segment.size() > max_len) {
    return Bad(kind, whole,
               absl::StrCat("part longer than ", max_len, " bytes"));
  }
  for (size_t i = 0; i < segment.size(); ++i) {
    const char c = segment[i];
    if (IsAlnum(c) || extra.find(c) != std::string_view::npos) continue;
    return Bad(kind, whole,
               absl::StrCat("character '", absl::CEscape(std::string(1, c)),
                            "' at offset ", offset + i, " is not allowed (use ",
                            "letters, digits and ", std::string(extra), ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateRunName(std::string_view name) {
  const size_t slash = name.find('/');
  if (slash == std::string_view::npos ||
      name.find('/', slash + 1) != std::string_view::npos) {
    return Bad("run name", name,
               "must be 'namespace/name' with exactly one '/'");
  }
  const std::string_view ns = name.substr(0, slash);
  const std::string_view rest = name.substr(slash + 1);
  for (const auto& [part, offset] :
       {std::pair{ns, size_t{0}}, std::pair{rest, slash + 1}}) {
    if (auto s = CheckSegment("run name", name, part, offset, 128, "_.-");
        !s.ok()) {
      return s;
    }
    if (part == "." || part == "..") {
      return Bad("run name", name, "'.' and '..' are not names");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateCheckpointName(std::string_view name) {
  return CheckSegment("checkpoint name", name, name, 0, 128, "_.+-");
}

absl::Status ValidateTensorKey(std::string_view key) {
  if (key.size() > 1024) return Bad("tensor key", key, "longer than 1024 bytes");
  size_t start = 0;
  while (true) {
    const size_t slash = key.find('/', start);
    const std::string_view seg = key.substr(
        start, slash == std::string_view::npos ? key.size() - start
                                               : slash - start);
    if (auto s = CheckSegment("tensor key", key, seg, start, 1024, "_.:+-[]");
        !s.ok()) {
      return s;
    }
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return absl::OkStatus();
}

}  // namespace reprod
