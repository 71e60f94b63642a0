#include "common/names.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/visible.h"

namespace reprod {
namespace {

bool IsAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9');
}

std::string Quoted(std::string_view s) {
  return absl::StrCat("'", VisibleName(s), "'");
}

absl::Status Bad(std::string_view kind, std::string_view value,
                 std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(
      "invalid ", std::string(kind), " ", Quoted(value), ": ", std::string(why)));
}

// The "/"-separated parts of `s` ("" gives one empty part).
std::vector<std::string_view> SplitSlash(std::string_view s) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (size_t slash = s.find('/'); slash != std::string_view::npos; slash = s.find('/', start)) {
    parts.push_back(s.substr(start, slash - start));
    start = slash + 1;
  }
  parts.push_back(s.substr(start));
  return parts;
}

// The grammar, one row per kind of name (see names.h).
struct NameRule {
  std::string_view kind;
  size_t max_bytes;        // the whole name
  size_t max_segment;      // each "/"-separated segment
  std::string_view extra;  // allowed besides letters and digits
  size_t segments;         // exact number of segments; 0 = any (at least 1)
};

constexpr NameRule kRunRule{"run name", 2 * 128 + 1, 128, "_.-", 2};
constexpr NameRule kCheckpointRule{"checkpoint name", 128, 128, "_.+-", 1};
constexpr NameRule kKeyRule{"tensor key", 1024, 1024, "_.:+-[]", 0};

// The first byte of `segment` (at `offset` in `whole`) outside the rule's
// alphabet, as an error.
absl::Status CheckBytes(const NameRule& rule, std::string_view whole,
                        std::string_view segment, size_t offset) {
  for (size_t i = 0; i < segment.size(); ++i) {
    const char c = segment[i];
    if (IsAlnum(c) || rule.extra.find(c) != std::string_view::npos) continue;
    return Bad(rule.kind, whole,
               absl::StrCat("character '", VisibleText(std::string_view(&c, 1)),
                            "' at offset ", offset + i, " is not allowed (use ",
                            "letters, digits and ", std::string(rule.extra), ")"));
  }
  return absl::OkStatus();
}

// Checks one segment: not empty, not "." or "..", short enough, in the
// alphabet.
absl::Status CheckSegment(const NameRule& rule, std::string_view whole,
                          std::string_view segment, size_t offset) {
  if (segment.empty()) {
    return Bad(rule.kind, whole, absl::StrCat("empty part at offset ", offset));
  }
  if (segment.size() > rule.max_segment) {
    return Bad(rule.kind, whole,
               absl::StrCat("part longer than ", rule.max_segment, " bytes"));
  }
  if (segment == "." || segment == "..") {
    return Bad(rule.kind, whole,
               absl::StrCat("'", std::string(segment), "' at offset ", offset,
                            ": '.' and '..' are not names (no relative paths)"));
  }
  return CheckBytes(rule, whole, segment, offset);
}

absl::Status Validate(const NameRule& rule, std::string_view name) {
  if (name.size() > rule.max_bytes) {
    return Bad(rule.kind, name, absl::StrCat("longer than ", rule.max_bytes, " bytes"));
  }
  const std::vector<std::string_view> parts = SplitSlash(name);
  if (rule.segments == 2 && parts.size() != 2) {
    return Bad(rule.kind, name, "must be 'namespace/name' with exactly one '/'");
  }
  if (rule.segments == 1 && parts.size() != 1) {
    // Report the '/' as a character outside the alphabet.
    return CheckBytes(rule, name, name, 0);
  }
  size_t offset = 0;
  for (std::string_view part : parts) {
    REPROD_RETURN_IF_ERROR(CheckSegment(rule, name, part, offset));
    offset += part.size() + 1;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateRunName(std::string_view name) { return Validate(kRunRule, name); }

absl::Status ValidateCheckpointName(std::string_view name) {
  return Validate(kCheckpointRule, name);
}

absl::Status ValidateTensorKey(std::string_view key) { return Validate(kKeyRule, key); }

absl::Status ValidatePolicyName(std::string_view name) {
  constexpr std::string_view kKind = "policy name";
  if (name.empty() || name.size() > kMaxPolicyNameBytes) {
    return Bad(kKind, name, absl::StrCat("must be 1-", kMaxPolicyNameBytes, " bytes"));
  }
  for (size_t i = 0; i < name.size(); ++i) {
    const auto c = static_cast<unsigned char>(name[i]);
    char32_t cp = 0;
    const size_t n = c < 0x20 || c == 0x7f ? 1 : InvisibleCodePointAt(name, i, &cp);
    if (n > 0) {
      return Bad(kKind, name,
                 absl::StrCat("character '", VisibleText(name.substr(i, n)), "' at offset ", i,
                              " is not allowed (no control characters or bidi overrides)"));
    }
  }
  if (VisibleText(name) != name) return Bad(kKind, name, "is not valid UTF-8");
  return absl::OkStatus();
}

absl::Status ValidateKeyFragment(std::string_view fragment) {
  if (fragment.size() > kKeyRule.max_bytes) {
    return Bad("key fragment", fragment,
               absl::StrCat("longer than ", kKeyRule.max_bytes, " bytes"));
  }
  const std::vector<std::string_view> parts = SplitSlash(fragment);
  size_t offset = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string_view part = parts[i];
    // Only the parts between two '/' are whole segments of the keys it builds.
    if (i > 0 && i + 1 < parts.size() && (part == "." || part == "..")) {
      return Bad("key fragment", fragment,
                 absl::StrCat("'", std::string(part), "' at offset ", offset,
                              ": '.' and '..' are not names (no relative paths)"));
    }
    REPROD_RETURN_IF_ERROR(
        CheckBytes(NameRule{"key fragment", 0, 0, kKeyRule.extra, 0}, fragment, part, offset));
    offset += part.size() + 1;
  }
  return absl::OkStatus();
}

}  // namespace reprod
