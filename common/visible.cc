#include "common/visible.h"

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"

namespace reprod {
namespace {

// Length of the valid UTF-8 sequence starting at s[i] (1-4) with its code
// point, or 0 when the bytes there are not valid UTF-8 (overlong forms,
// surrogates and code points past U+10FFFF included).
size_t DecodeUtf8(std::string_view s, size_t i, char32_t* cp) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[i + k]); };
  const uint8_t c = b(0);
  size_t n = 0;
  char32_t v = 0;
  char32_t min = 0;
  if (c < 0x80) {
    *cp = c;
    return 1;
  } else if ((c & 0xe0) == 0xc0) {
    n = 2, v = c & 0x1f, min = 0x80;
  } else if ((c & 0xf0) == 0xe0) {
    n = 3, v = c & 0x0f, min = 0x800;
  } else if ((c & 0xf8) == 0xf0) {
    n = 4, v = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(k) & 0xc0) != 0x80) return 0;
    v = (v << 6) | (b(k) & 0x3f);
  }
  if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
  *cp = v;
  return n;
}

// "\\x" or "\\u" followed by `digits` lower-case hex digits of `v`.
void AppendHex(char kind, uint32_t v, int digits, std::string* out) {
  constexpr char kHex[] = "0123456789abcdef";
  out->push_back('\\');
  out->push_back(kind);
  for (int d = digits - 1; d >= 0; --d) out->push_back(kHex[(v >> (4 * d)) & 0xf]);
}

void AppendByteEscape(uint8_t c, std::string* out) {
  switch (c) {
    case '\n': out->append("\\n"); return;
    case '\r': out->append("\\r"); return;
    case '\t': out->append("\\t"); return;
    default: AppendHex('x', c, 2, out);
  }
}

bool IsContinuation(char c) { return (static_cast<uint8_t>(c) & 0xc0) == 0x80; }

}  // namespace

bool IsInvisibleCodePoint(char32_t cp) {
  return (cp >= 0x80 && cp <= 0x9f) || cp == 0x61c || cp == 0x200e || cp == 0x200f ||
         (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

size_t InvisibleCodePointAt(std::string_view s, size_t i, char32_t* cp) {
  if (i >= s.size() || static_cast<uint8_t>(s[i]) < 0x80) return 0;
  char32_t v = 0;
  const size_t n = DecodeUtf8(s, i, &v);
  if (n == 0 || !IsInvisibleCodePoint(v)) return 0;
  *cp = v;
  return n;
}

std::string VisibleText(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    char32_t cp = 0;
    const size_t n = DecodeUtf8(s, i, &cp);
    if (n == 0) {
      AppendByteEscape(static_cast<uint8_t>(s[i]), &out);
      ++i;
      continue;
    }
    if (cp < 0x20 || cp == 0x7f) {
      AppendByteEscape(static_cast<uint8_t>(cp), &out);
    } else if (IsInvisibleCodePoint(cp)) {
      AppendHex('u', static_cast<uint32_t>(cp), 4, &out);
    } else {
      out.append(s.substr(i, n));
    }
    i += n;
  }
  return out;
}

std::string VisibleName(std::string_view s, size_t max_bytes) {
  max_bytes = std::max<size_t>(max_bytes, 16);
  if (s.size() <= max_bytes) return VisibleText(s);
  size_t head = max_bytes / 2;
  while (head > 0 && IsContinuation(s[head])) --head;
  size_t tail = s.size() - (max_bytes - max_bytes / 2);
  while (tail < s.size() && IsContinuation(s[tail])) ++tail;
  return absl::StrCat(VisibleText(s.substr(0, head)), "...", VisibleText(s.substr(tail)), " (",
                      s.size(), " bytes)");
}

}  // namespace reprod
