// File: common/visible.h
//
// The one escaping rule for human-readable output: the text report, Markdown
// text, reprodctl's terminal lines, log lines and error messages show
// untrusted strings (keys, names, policy strings, client metadata) through
// VisibleText, so that no control byte or direction override reaches a
// screen or a log file and a name cannot forge or split a line:
//
//   \n \r \t                  -> "\n" "\r" "\t" (two visible characters)
//   other bytes < 0x20, 0x7f  -> "\x1b", "\x00", "\x7f"
//   bytes that are not UTF-8  -> "\xff" (each byte)
//   U+0080-U+009F (C1),
//   U+061C, U+200E, U+200F,
//   U+202A-U+202E,
//   U+2066-U+2069             -> "\u202e" (lower-case hex, 4 digits)
//   everything else           -> unchanged (a backslash stays one backslash)
//
// The result is printable UTF-8 and VisibleText is idempotent. It is a display
// form, not an encoding: "a\nb" typed with a backslash and a key with a real
// newline look the same. Machine formats keep their own lossless escapers
// (JSON, JUnit XML, HTML).
//
// Thread-safety: pure functions.
#ifndef REPROD_COMMON_VISIBLE_H_
#define REPROD_COMMON_VISIBLE_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace reprod {

// `s` with every control byte, invalid UTF-8 byte and bidi/C1 code point
// replaced by its visible escape (table above).
std::string VisibleText(std::string_view s);

// Names longer than this many bytes are abbreviated by VisibleName.
inline constexpr size_t kMaxShownNameBytes = 200;

// VisibleText(s) when `s` has at most `max_bytes` bytes; else the visible
// form of its head and tail (about max_bytes/2 bytes each, cut at UTF-8
// character boundaries) joined by "..." and followed by " (N bytes)", N being
// s.size(). For names in error messages and log lines, so that a 10 KB key
// costs ~200 bytes. `max_bytes` < 16 is treated as 16.
std::string VisibleName(std::string_view s, size_t max_bytes = kMaxShownNameBytes);

// True when `cp` is a code point VisibleText escapes although it is valid
// UTF-8 (C1 controls, bidi marks, overrides and isolates).
bool IsInvisibleCodePoint(char32_t cp);

// For escapers of other formats (JSON, XML, HTML): the length (2 or 3) of
// the UTF-8 encoding of an invisible code point starting at s[i], storing
// the code point in *cp; 0 when s[i] does not start one.
size_t InvisibleCodePointAt(std::string_view s, size_t i, char32_t* cp);

}  // namespace reprod

#endif  // REPROD_COMMON_VISIBLE_H_
