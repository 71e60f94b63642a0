// File: storage/s3/internal/s3_xml.h
//
// The few S3 XML response bodies the S3 client reads, parsed by hand (no XML
// library): ListObjectsV2, ListMultipartUploads,
// InitiateMultipartUploadResult and Error. S3 writes these flat, without
// attributes on the elements read here, CDATA or comments, so the parser
// looks for <Name>...</Name> pairs inside the right enclosing element and
// unescapes the five predefined entities and numeric character references.
//
//   S3ListPage page = ParseListObjectsV2(body);
//   if (page.truncated) token = page.next_continuation_token;
//
// Thread-safety: pure functions.
#ifndef REPROD_STORAGE_S3_INTERNAL_S3_XML_H_
#define REPROD_STORAGE_S3_INTERNAL_S3_XML_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "storage/s3/s3_client.h"

namespace reprod::storage::internal {

// &amp; &lt; &gt; &quot; &apos; and &#N; / &#xN; (as UTF-8) replaced; an
// unknown or unterminated entity is kept as written.
std::string XmlUnescape(std::string_view text);

// & < > " ' written as entities.
std::string XmlEscape(std::string_view text);

// The text of the first <tag>...</tag> in xml (unescaped), or nullopt.
// <tag/> gives "".
std::optional<std::string> XmlFirst(std::string_view xml, std::string_view tag);

// The raw (still escaped) insides of every <tag>...</tag> in xml, in order.
std::vector<std::string_view> XmlBlocks(std::string_view xml, std::string_view tag);

struct S3ListPage {
  std::vector<S3Object> objects;
  bool truncated = false;
  std::string next_continuation_token;
};

// A ListBucketResult (list-type=2). InvalidArgument when the body is not a
// ListBucketResult, a <Contents> has no <Key> or a <Size> is not a number, or
// it says IsTruncated without a NextContinuationToken.
absl::StatusOr<S3ListPage> ParseListObjectsV2(std::string_view xml);

struct S3UploadsPage {
  std::vector<S3Upload> uploads;
  bool truncated = false;
  std::string next_key_marker;
  std::string next_upload_id_marker;
};

// A ListMultipartUploadsResult. InvalidArgument when the body is not one or
// an <Upload> lacks Key or UploadId.
absl::StatusOr<S3UploadsPage> ParseListMultipartUploads(std::string_view xml);

// The UploadId of an InitiateMultipartUploadResult; InvalidArgument when
// absent or empty.
absl::StatusOr<std::string> ParseInitiateMultipartUpload(std::string_view xml);

struct S3Error {
  std::string code;
  std::string message;
};

// The Code and Message of an <Error> body; nullopt when xml is not one.
std::optional<S3Error> ParseError(std::string_view xml);

}  // namespace reprod::storage::internal

#endif  // REPROD_STORAGE_S3_INTERNAL_S3_XML_H_
