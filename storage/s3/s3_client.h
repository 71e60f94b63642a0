// File: storage/s3/s3_client.h
//
// A small S3 client: the object operations the postgres+s3 store needs
// (storage/postgres_s3/), over libcurl with its built-in SigV4 signing
// (CURLOPT_AWS_SIGV4; Debian ships no aws-sdk-cpp). Path-style addressing
// (http://host:port/bucket/key), which radosgw, MinIO and AWS all accept.
//
//   S3Options options{.endpoint = "http://127.0.0.1:7480", .bucket = "reprod",
//                     .access_key = ..., .secret_key = ...};
//   REPROD_ASSIGN_OR_RETURN(std::unique_ptr<S3Client> s3, S3Client::Create(options));
//   REPROD_RETURN_IF_ERROR(s3->EnsureBucket());
//   REPROD_RETURN_IF_ERROR(s3->PutObject("t/1/ab12", bytes));
//   REPROD_RETURN_IF_ERROR(s3->GetObjectRange("t/1/ab12", 0, absl::MakeSpan(buf)));
//
// Payload signing (S3Options::payload_signing): over http every request
// carries x-amz-content-sha256 with the payload's SHA-256, so the server
// checks the bytes it received against the signature. Over https, by
// default, requests are signed with "UNSIGNED-PAYLOAD" instead, as the AWS
// SDKs do: TLS already keeps the bytes from being changed on the way, and
// hashing every byte would cost as much CPU as the rest of an upload. What
// is read back is checked against the store's own CRC32C either way. Objects
// keys are used as given (percent-encoded on the wire); the client adds
// nothing to them.
//
// Errors: NotFound (no such key / upload; DeleteObject treats it as done),
// PermissionDenied (403: bad credentials or signature), InvalidArgument
// (400 other than the above), Unavailable (connection refused or reset,
// timeouts, 5xx, 429/503 SlowDown), DataLoss (a GET that returned fewer or
// more bytes than asked), Internal (anything else). Messages name the
// operation, the key and the server's error code and message.
//
// Thread-safety: every method may be called from several threads at once
// (each call takes a libcurl handle from an internal pool, so connections
// are kept alive and reused).
#ifndef REPROD_STORAGE_S3_S3_CLIENT_H_
#define REPROD_STORAGE_S3_S3_CLIENT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace reprod::storage {

// When a request's payload is hashed into its SigV4 signature.
enum class PayloadSigning {
  kAuto,    // over http; over https "UNSIGNED-PAYLOAD" (TLS protects it)
  kAlways,  // always (a store that demands it, or belt and braces)
};

// The names of PayloadSigning's values, for command-line flags.
inline const std::map<std::string, PayloadSigning> kPayloadSigningNames = {
    {"auto", PayloadSigning::kAuto}, {"always", PayloadSigning::kAlways}};

struct S3Options {
  // "http://127.0.0.1:7480" or "https://s3.example.org"; no path.
  std::string endpoint;
  std::string bucket;
  std::string region = "us-east-1";
  std::string access_key;
  std::string secret_key;
  // A whole request (connect + transfer) may take at most this long; a
  // stalled transfer (under 1 KiB/s for 30 s) is abandoned sooner.
  absl::Duration request_timeout = absl::Minutes(10);
  // Connections kept open for reuse.
  int max_idle_connections = 16;
  // https only: a PEM file of the CA certificate(s) to trust for the
  // endpoint (a private CA); empty: the system's CA store.
  std::string ca_file{};  // (an initializer: designated initializers may omit it)
  PayloadSigning payload_signing = PayloadSigning::kAuto;
};

// One object of a listing.
struct S3Object {
  std::string key;
  uint64_t size = 0;
  std::string etag;  // as the server wrote it, quotes removed
};

// One multipart upload that was started and neither completed nor aborted.
struct S3Upload {
  std::string key;
  std::string upload_id;
};

class S3Client {
 public:
  // InvalidArgument for an endpoint that is not http(s)://host[:port], an
  // empty bucket or empty credentials, a ca_file with an http endpoint or
  // one that cannot be read. Makes no request.
  static absl::StatusOr<std::unique_ptr<S3Client>> Create(S3Options options);

  virtual ~S3Client() = default;

  // Creates the bucket unless it exists (and is ours). Also the first call
  // that proves the endpoint and the credentials work.
  virtual absl::Status EnsureBucket() = 0;

  // One-request upload (S3 allows up to 5 GiB; callers use multipart above
  // their part size).
  virtual absl::Status PutObject(std::string_view key,
                                 absl::Span<const uint8_t> data) = 0;

  // Multipart upload: Create → UploadPart (numbers 1..10000, each at least
  // 5 MiB except the last) → Complete with the parts' ETags in order, or
  // Abort. Returns the upload id / the part's ETag.
  virtual absl::StatusOr<std::string> CreateMultipartUpload(
      std::string_view key) = 0;
  virtual absl::StatusOr<std::string> UploadPart(
      std::string_view key, std::string_view upload_id, int part_number,
      absl::Span<const uint8_t> data) = 0;
  virtual absl::Status CompleteMultipartUpload(
      std::string_view key, std::string_view upload_id,
      const std::vector<std::string>& part_etags) = 0;
  // NotFound when the upload is unknown (already completed or aborted).
  virtual absl::Status AbortMultipartUpload(std::string_view key,
                                            std::string_view upload_id) = 0;

  // Reads bytes [offset, offset + dst.size()) of the object into dst
  // (ranged GET). DataLoss when the server returns another length.
  virtual absl::Status GetObjectRange(std::string_view key, uint64_t offset,
                                      absl::Span<uint8_t> dst) = 0;

  // The object's size (HEAD). NotFound when absent.
  virtual absl::StatusOr<uint64_t> HeadObject(std::string_view key) = 0;

  // Deletes the object; OK when it does not exist.
  virtual absl::Status DeleteObject(std::string_view key) = 0;

  // Every object whose key starts with prefix, in key order (follows
  // continuation tokens).
  virtual absl::StatusOr<std::vector<S3Object>> ListObjects(
      std::string_view prefix) = 0;

  // Every unfinished multipart upload whose key starts with prefix.
  virtual absl::StatusOr<std::vector<S3Upload>> ListMultipartUploads(
      std::string_view prefix) = 0;
};

}  // namespace reprod::storage

#endif  // REPROD_STORAGE_S3_S3_CLIENT_H_
