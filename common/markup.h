// File: common/markup.h
//
// The five characters that are markup in XML and HTML, and their entities:
// the one table that the JUnit and HTML report renderers and the S3 client's
// XML writer share. Callers add their own rules around it (the renderers
// also escape invisible code points; JUnit escapes newlines in attributes).
//
//   for (char c : text) {
//     if (const char* e = MarkupEntity(c)) out += e; else out += c;
//   }
//
// The apostrophe becomes "&#39;", valid in both XML and HTML (HTML 4 has no
// "&apos;").
#ifndef REPROD_COMMON_MARKUP_H_
#define REPROD_COMMON_MARKUP_H_

namespace reprod {

// The entity for &, <, >, " or ', or nullptr for any other byte.
constexpr const char* MarkupEntity(char c) {
  switch (c) {
    case '&':
      return "&amp;";
    case '<':
      return "&lt;";
    case '>':
      return "&gt;";
    case '"':
      return "&quot;";
    case '\'':
      return "&#39;";
    default:
      return nullptr;
  }
}

}  // namespace reprod

#endif  // REPROD_COMMON_MARKUP_H_
