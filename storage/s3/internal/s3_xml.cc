// File: storage/s3/internal/s3_xml.cc
#include "storage/s3/internal/s3_xml.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/markup.h"

namespace reprod::storage::internal {
namespace {

void AppendUtf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// The character reference body ("#65", "#x41") as a code point.
std::optional<uint32_t> NumericReference(std::string_view body) {
  if (body.size() < 2 || body[0] != '#') return std::nullopt;
  int base = 10;
  std::string_view digits = body.substr(1);
  if (digits[0] == 'x' || digits[0] == 'X') {
    base = 16;
    digits.remove_prefix(1);
  }
  if (digits.empty() || digits.size() > 8) return std::nullopt;
  uint32_t cp = 0;
  for (char c : digits) {
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (base == 16 && c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else if (base == 16 && c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else {
      return std::nullopt;
    }
    cp = cp * base + d;
  }
  if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    return std::nullopt;
  }
  return cp;
}

// Position of the first opening tag <tag> / <tag attr...> / <tag/> at or
// after `from`; sets *end to just past its '>' and *empty for <tag/>.
size_t FindOpen(std::string_view xml, std::string_view tag, size_t from, size_t* end, bool* empty) {
  while (true) {
    size_t p = xml.find('<', from);
    if (p == std::string_view::npos) return p;
    if (xml.substr(p + 1, tag.size()) == tag && p + 1 + tag.size() < xml.size()) {
      char next = xml[p + 1 + tag.size()];
      if (next == '>' || next == '/' || next == ' ' || next == '\t' || next == '\n' ||
          next == '\r') {
        size_t gt = xml.find('>', p);
        if (gt == std::string_view::npos) return std::string_view::npos;
        *end = gt + 1;
        *empty = xml[gt - 1] == '/';
        return p;
      }
    }
    from = p + 1;
  }
}

}  // namespace

std::string XmlUnescape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    char c = text[i];
    if (c != '&') {
      out += c;
      ++i;
      continue;
    }
    size_t semi = text.find(';', i + 1);
    if (semi == std::string_view::npos || semi - i > 12) {
      out += c;
      ++i;
      continue;
    }
    std::string_view name = text.substr(i + 1, semi - i - 1);
    if (name == "amp") {
      out += '&';
    } else if (name == "lt") {
      out += '<';
    } else if (name == "gt") {
      out += '>';
    } else if (name == "quot") {
      out += '"';
    } else if (name == "apos") {
      out += '\'';
    } else if (std::optional<uint32_t> cp = NumericReference(name)) {
      AppendUtf8(*cp, out);
    } else {
      out += c;
      ++i;
      continue;
    }
    i = semi + 1;
  }
  return out;
}

std::string XmlEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (const char* entity = MarkupEntity(c)) {
      out += entity;
    } else {
      out += c;
    }
  }
  return out;
}

std::vector<std::string_view> XmlBlocks(std::string_view xml, std::string_view tag) {
  std::vector<std::string_view> blocks;
  const std::string close = absl::StrCat("</", std::string(tag), ">");
  size_t from = 0;
  while (from < xml.size()) {
    size_t end = 0;
    bool empty = false;
    size_t open = FindOpen(xml, tag, from, &end, &empty);
    if (open == std::string_view::npos) break;
    if (empty) {
      blocks.push_back(std::string_view());
      from = end;
      continue;
    }
    size_t c = xml.find(close, end);
    if (c == std::string_view::npos) break;
    blocks.push_back(xml.substr(end, c - end));
    from = c + close.size();
  }
  return blocks;
}

std::optional<std::string> XmlFirst(std::string_view xml, std::string_view tag) {
  size_t end = 0;
  bool empty = false;
  size_t open = FindOpen(xml, tag, 0, &end, &empty);
  if (open == std::string_view::npos) return std::nullopt;
  if (empty) return std::string();
  const std::string close = absl::StrCat("</", std::string(tag), ">");
  size_t c = xml.find(close, end);
  if (c == std::string_view::npos) return std::nullopt;
  return XmlUnescape(xml.substr(end, c - end));
}

absl::StatusOr<S3ListPage> ParseListObjectsV2(std::string_view xml) {
  std::vector<std::string_view> result = XmlBlocks(xml, "ListBucketResult");
  if (result.size() != 1) {
    return absl::InvalidArgumentError("S3 ListObjectsV2: the response is not a ListBucketResult");
  }
  S3ListPage page;
  for (std::string_view contents : XmlBlocks(result[0], "Contents")) {
    S3Object object;
    std::optional<std::string> key = XmlFirst(contents, "Key");
    if (!key) {
      return absl::InvalidArgumentError("S3 ListObjectsV2: a <Contents> without <Key>");
    }
    object.key = std::move(*key);
    std::optional<std::string> size = XmlFirst(contents, "Size");
    if (!size || !absl::SimpleAtoi(*size, &object.size)) {
      return absl::InvalidArgumentError(
          absl::StrCat("S3 ListObjectsV2: bad <Size> for key ", object.key));
    }
    std::string etag = XmlFirst(contents, "ETag").value_or("");
    if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') {
      etag = etag.substr(1, etag.size() - 2);
    }
    object.etag = std::move(etag);
    page.objects.push_back(std::move(object));
  }
  page.truncated = XmlFirst(result[0], "IsTruncated").value_or("") == "true";
  if (page.truncated) {
    page.next_continuation_token = XmlFirst(result[0], "NextContinuationToken").value_or("");
    if (page.next_continuation_token.empty()) {
      return absl::InvalidArgumentError(
          "S3 ListObjectsV2: truncated without a NextContinuationToken");
    }
  }
  return page;
}

absl::StatusOr<S3UploadsPage> ParseListMultipartUploads(std::string_view xml) {
  std::vector<std::string_view> result = XmlBlocks(xml, "ListMultipartUploadsResult");
  if (result.size() != 1) {
    return absl::InvalidArgumentError(
        "S3 ListMultipartUploads: the response is not a "
        "ListMultipartUploadsResult");
  }
  S3UploadsPage page;
  for (std::string_view upload : XmlBlocks(result[0], "Upload")) {
    std::optional<std::string> key = XmlFirst(upload, "Key");
    std::optional<std::string> id = XmlFirst(upload, "UploadId");
    if (!key || !id || id->empty()) {
      return absl::InvalidArgumentError(
          "S3 ListMultipartUploads: an <Upload> without Key or UploadId");
    }
    page.uploads.push_back(S3Upload{.key = std::move(*key), .upload_id = std::move(*id)});
  }
  page.truncated = XmlFirst(result[0], "IsTruncated").value_or("") == "true";
  page.next_key_marker = XmlFirst(result[0], "NextKeyMarker").value_or("");
  page.next_upload_id_marker = XmlFirst(result[0], "NextUploadIdMarker").value_or("");
  return page;
}

absl::StatusOr<std::string> ParseInitiateMultipartUpload(std::string_view xml) {
  std::vector<std::string_view> result = XmlBlocks(xml, "InitiateMultipartUploadResult");
  std::optional<std::string> id;
  if (result.size() == 1) id = XmlFirst(result[0], "UploadId");
  if (!id || id->empty()) {
    return absl::InvalidArgumentError("S3 CreateMultipartUpload: no UploadId in the response");
  }
  return std::move(*id);
}

std::optional<S3Error> ParseError(std::string_view xml) {
  std::vector<std::string_view> error = XmlBlocks(xml, "Error");
  if (error.empty()) return std::nullopt;
  return S3Error{.code = XmlFirst(error[0], "Code").value_or(""),
                 .message = XmlFirst(error[0], "Message").value_or("")};
}

}  // namespace reprod::storage::internal
