// File: storage/s3/s3_client.cc
//
// S3Client over libcurl. Each call takes an easy handle from a pool
// (curl_easy_reset keeps its live connection, so connections are reused),
// sets the request up, signs it with CURLOPT_AWS_SIGV4 and performs it.
//
// Two curl 7.88 SigV4 details (tests/services/s3curl.py has them too): the
// request carries x-amz-content-sha256 with the payload's SHA-256 or
// "UNSIGNED-PAYLOAD" (see PayloadSigning), written here, and curl signs that
// value (radosgw takes a request without the header as UNSIGNED-PAYLOAD,
// which curl does not sign as); and curl signs the path and the query
// exactly as they are written, so both are written canonically here: path
// segments percent-encoded (everything outside A-Z a-z 0-9 - _ . ~,
// upper-case hex, '/' kept), query parameters sorted by name and written
// name=value, also for a parameter without value ("uploads=").
#include "storage/s3/s3_client.h"

#include <curl/curl.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/status_macros.h"
#include "storage/s3/internal/s3_xml.h"

namespace reprod::storage {
namespace {

// Error bodies and listings are kept up to this size; more is an error.
constexpr size_t kMaxBodyBytes = 64 << 20;

std::once_flag g_curl_init_once;
CURLcode g_curl_init_result = CURLE_OK;

// (Debian's absl::string_view is not std::string_view.)
bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}
bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool IsUnreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == '~';
}

// SigV4's URI encoding: unreserved characters as they are, everything else
// %XX with upper-case hex; '/' kept when keep_slash.
std::string UriEncode(std::string_view s, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size() * 3 / 2);
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (IsUnreserved(c) || (keep_slash && c == '/')) {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    }
  }
  return out;
}

std::string HexSha256(absl::Span<const uint8_t> data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr) != 1) {
    return std::string();
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * len);
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 0xF];
  }
  return out;
}

std::string StripQuotes(std::string_view etag) {
  if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') {
    etag = etag.substr(1, etag.size() - 2);
  }
  return std::string(etag);
}

// --- one request ---------------------------------------------------------

struct Request {
  const char* op = "";  // for messages: "PutObject", ...
  const char* method = "GET";
  std::string key;                                         // for messages
  std::string path;                                        // already encoded: /bucket/key
  std::vector<std::pair<std::string, std::string>> query;  // raw
  absl::Span<const uint8_t> body;
  std::vector<std::string> headers;  // extra "Name: value"
  // GET into dst (only a 206, or a 200 when dst_from_start).
  bool to_dst = false;
  bool dst_from_start = false;
  absl::Span<uint8_t> dst;
};

struct Response {
  long status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;                            // everything not written to dst (capped)
  uint64_t dst_bytes = 0;                      // bytes the server sent for dst (may exceed it)
  bool dst_overflow = false;
  bool body_overflow = false;
};

struct Transfer {
  const Request* request;
  Response* response;
  size_t read_offset = 0;
};

size_t HeaderCallback(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t len = size * n;
  std::string_view line(data, len);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) {
    line.remove_suffix(1);
  }
  if (StartsWith(line, "HTTP/")) {
    // A new response (after a 100 Continue, say): start over.
    t->response->headers.clear();
    size_t sp = line.find(' ');
    long status = 0;
    if (sp != std::string_view::npos) {
      std::string_view code = line.substr(sp + 1, 3);
      int parsed = 0;
      if (absl::SimpleAtoi(std::string(code), &parsed)) status = parsed;
    }
    t->response->status = status;
    return len;
  }
  size_t colon = line.find(':');
  if (colon != std::string_view::npos) {
    std::string name = absl::AsciiStrToLower(std::string(line.substr(0, colon)));
    std::string value(absl::StripAsciiWhitespace(std::string(line.substr(colon + 1))));
    t->response->headers[std::move(name)] = std::move(value);
  }
  return len;
}

size_t WriteCallback(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t len = size * n;
  Response& r = *t->response;
  const Request& q = *t->request;
  bool into_dst = q.to_dst && (r.status == 206 || (r.status == 200 && q.dst_from_start));
  if (into_dst) {
    uint64_t at = r.dst_bytes;
    r.dst_bytes += len;
    if (r.dst_bytes > q.dst.size()) {
      r.dst_overflow = true;
      return 0;  // aborts the transfer (CURLE_WRITE_ERROR)
    }
    std::memcpy(q.dst.data() + at, data, len);
    return len;
  }
  if (r.body.size() + len > kMaxBodyBytes) {
    r.body_overflow = true;
    return 0;
  }
  r.body.append(data, len);
  return len;
}

size_t ReadCallback(char* buffer, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t left = t->request->body.size() - t->read_offset;
  size_t len = std::min(left, size * n);
  if (len > 0) {
    std::memcpy(buffer, t->request->body.data() + t->read_offset, len);
  }
  t->read_offset += len;
  return len;
}

// Lets curl resend the body (a reused connection found closed).
int SeekCallback(void* user, curl_off_t offset, int origin) {
  auto* t = static_cast<Transfer*>(user);
  if (origin != SEEK_SET || offset < 0 || static_cast<uint64_t>(offset) > t->request->body.size()) {
    return CURL_SEEKFUNC_CANTSEEK;
  }
  t->read_offset = static_cast<size_t>(offset);
  return CURL_SEEKFUNC_OK;
}

// --- the pool --------------------------------------------------------------

class HandlePool {
 public:
  explicit HandlePool(int max_idle) : max_idle_(std::max(0, max_idle)) {}
  ~HandlePool() {
    for (CURL* h : idle_) curl_easy_cleanup(h);
  }
  HandlePool(const HandlePool&) = delete;
  HandlePool& operator=(const HandlePool&) = delete;

  // nullptr when curl cannot make one.
  CURL* Take() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!idle_.empty()) {
        CURL* h = idle_.back();
        idle_.pop_back();
        return h;
      }
    }
    return curl_easy_init();
  }

  // keep: false for a handle whose connection should not be reused.
  void Give(CURL* h, bool keep) {
    if (keep) {
      std::lock_guard<std::mutex> lock(mu_);
      if (static_cast<int>(idle_.size()) < max_idle_) {
        idle_.push_back(h);
        return;
      }
    }
    curl_easy_cleanup(h);
  }

 private:
  const int max_idle_;
  std::mutex mu_;
  std::vector<CURL*> idle_;
};

struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

// --- the client --------------------------------------------------------------

class CurlS3Client final : public S3Client {
 public:
  CurlS3Client(S3Options options, std::string endpoint)
      : options_(std::move(options)),
        endpoint_(std::move(endpoint)),
        sigv4_(absl::StrCat("aws:amz:", options_.region, ":s3")),
        userpwd_(absl::StrCat(options_.access_key, ":", options_.secret_key)),
        bucket_path_(absl::StrCat("/", UriEncode(options_.bucket, false))),
        sign_payload_(options_.payload_signing == PayloadSigning::kAlways ||
                      !StartsWith(endpoint_, "https://")),
        pool_(options_.max_idle_connections) {}

  absl::Status EnsureBucket() override;
  absl::Status PutObject(std::string_view key, absl::Span<const uint8_t> data) override;
  absl::StatusOr<std::string> CreateMultipartUpload(std::string_view key) override;
  absl::StatusOr<std::string> UploadPart(std::string_view key, std::string_view upload_id,
                                         int part_number, absl::Span<const uint8_t> data) override;
  absl::Status CompleteMultipartUpload(std::string_view key, std::string_view upload_id,
                                       const std::vector<std::string>& part_etags) override;
  absl::Status AbortMultipartUpload(std::string_view key, std::string_view upload_id) override;
  absl::Status GetObjectRange(std::string_view key, uint64_t offset,
                              absl::Span<uint8_t> dst) override;
  absl::StatusOr<uint64_t> HeadObject(std::string_view key) override;
  absl::Status DeleteObject(std::string_view key) override;
  absl::StatusOr<std::vector<S3Object>> ListObjects(std::string_view prefix) override;
  absl::StatusOr<std::vector<S3Upload>> ListMultipartUploads(std::string_view prefix) override;

 private:
  Request ObjectRequest(const char* op, const char* method, std::string_view key) const {
    Request r;
    r.op = op;
    r.method = method;
    r.key = std::string(key);
    r.path = absl::StrCat(bucket_path_, "/", UriEncode(key, true));
    return r;
  }

  Request BucketRequest(const char* op, const char* method) const {
    Request r;
    r.op = op;
    r.method = method;
    r.path = bucket_path_;
    return r;
  }

  // Performs the request. A transport failure is the returned status; an
  // HTTP error is in the response (see HttpError).
  absl::StatusOr<Response> Perform(const Request& request);

  // The status for a response that is not 2xx.
  absl::Status HttpError(const Request& request, const Response& r) const;

  // "S3 <op> <bucket>/<key>" for messages.
  std::string Context(const Request& request) const {
    if (request.key.empty()) {
      return absl::StrCat("S3 ", request.op, " ", options_.bucket);
    }
    return absl::StrCat("S3 ", request.op, " ", options_.bucket, "/", request.key);
  }

  // Perform + HttpError for anything but 2xx.
  absl::StatusOr<Response> PerformOk(const Request& request) {
    REPROD_ASSIGN_OR_RETURN(Response r, Perform(request));
    if (r.status < 200 || r.status > 299) return HttpError(request, r);
    return r;
  }

  const S3Options options_;
  const std::string endpoint_;
  const std::string sigv4_;
  const std::string userpwd_;
  const std::string bucket_path_;
  // Whether payloads are hashed into the signature (PayloadSigning).
  const bool sign_payload_;
  HandlePool pool_;
};

absl::StatusOr<Response> CurlS3Client::Perform(const Request& request) {
  std::call_once(g_curl_init_once,
                 [] { g_curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (g_curl_init_result != CURLE_OK) {
    return absl::InternalError(absl::StrCat(
        Context(request), ": curl_global_init failed: ", curl_easy_strerror(g_curl_init_result)));
  }

  std::string url = absl::StrCat(endpoint_, request.path);
  if (!request.query.empty()) {
    std::vector<std::pair<std::string, std::string>> encoded;
    encoded.reserve(request.query.size());
    for (const auto& [name, value] : request.query) {
      encoded.emplace_back(UriEncode(name, false), UriEncode(value, false));
    }
    std::sort(encoded.begin(), encoded.end());
    char sep = '?';
    for (const auto& [name, value] : encoded) {
      absl::StrAppend(&url, std::string(1, sep), name, "=", value);
      sep = '&';
    }
  }

  std::string payload_hash = "UNSIGNED-PAYLOAD";
  if (sign_payload_) {
    payload_hash = HexSha256(request.body);
    if (payload_hash.empty()) {
      return absl::InternalError(absl::StrCat(Context(request), ": SHA-256 failed"));
    }
  }
  curl_slist* list = nullptr;
  std::vector<std::string> headers = request.headers;
  headers.push_back(absl::StrCat("x-amz-content-sha256: ", payload_hash));
  // (Not "Expect:" to drop curl's Expect: 100-continue: curl 7.88 signs the
  // empty header, which it does not send, and radosgw rejects the
  // signature. radosgw answers 100 Continue at once.)
  for (const std::string& h : headers) {
    curl_slist* next = curl_slist_append(list, h.c_str());
    if (next == nullptr) {
      curl_slist_free_all(list);
      return absl::ResourceExhaustedError(absl::StrCat(Context(request), ": out of memory"));
    }
    list = next;
  }
  std::unique_ptr<curl_slist, SlistDeleter> header_list(list);

  CURL* h = pool_.Take();
  if (h == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat(Context(request), ": curl_easy_init failed"));
  }
  curl_easy_reset(h);

  Response response;
  Transfer transfer{.request = &request, .response = &response};
  const long timeout_ms = static_cast<long>(
      std::clamp<int64_t>(absl::ToInt64Milliseconds(options_.request_timeout), 1, INT32_MAX));
  const std::string_view method(request.method);

  CURLcode rc = CURLE_OK;
  auto set = [&](auto option, auto value) {
    if (rc == CURLE_OK) rc = curl_easy_setopt(h, option, value);
  };
  set(CURLOPT_URL, url.c_str());
  set(CURLOPT_PATH_AS_IS, 1L);  // keys may hold "." and ".." segments
  set(CURLOPT_NOSIGNAL, 1L);
  // Straight to the endpoint: http_proxy / https_proxy from the environment
  // are not used (as the AWS SDKs do by default).
  set(CURLOPT_NOPROXY, "*");
  set(CURLOPT_PROTOCOLS_STR, "http,https");
  set(CURLOPT_TIMEOUT_MS, timeout_ms);
  set(CURLOPT_CONNECTTIMEOUT_MS, std::min(timeout_ms, 30000L));
  set(CURLOPT_LOW_SPEED_LIMIT, 1024L);
  set(CURLOPT_LOW_SPEED_TIME, 30L);
  set(CURLOPT_TCP_KEEPALIVE, 1L);
  if (!options_.ca_file.empty()) set(CURLOPT_CAINFO, options_.ca_file.c_str());
  char error_detail[CURL_ERROR_SIZE] = {};
  set(CURLOPT_ERRORBUFFER, error_detail);
  set(CURLOPT_AWS_SIGV4, sigv4_.c_str());
  set(CURLOPT_USERPWD, userpwd_.c_str());
  set(CURLOPT_HTTPHEADER, header_list.get());
  set(CURLOPT_HEADERFUNCTION, &HeaderCallback);
  set(CURLOPT_HEADERDATA, &transfer);
  set(CURLOPT_WRITEFUNCTION, &WriteCallback);
  set(CURLOPT_WRITEDATA, &transfer);
  if (method == "PUT") {
    set(CURLOPT_UPLOAD, 1L);
    set(CURLOPT_READFUNCTION, &ReadCallback);
    set(CURLOPT_READDATA, &transfer);
    set(CURLOPT_SEEKFUNCTION, &SeekCallback);
    set(CURLOPT_SEEKDATA, &transfer);
    set(CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
  } else if (method == "POST") {
    set(CURLOPT_POST, 1L);
    set(CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
    set(CURLOPT_POSTFIELDS,
        request.body.empty() ? "" : reinterpret_cast<const char*>(request.body.data()));
  } else if (method == "HEAD") {
    set(CURLOPT_NOBODY, 1L);
  } else if (method == "DELETE") {
    set(CURLOPT_CUSTOMREQUEST, "DELETE");
  } else {
    set(CURLOPT_HTTPGET, 1L);
  }
  if (rc != CURLE_OK) {
    pool_.Give(h, false);
    return absl::InternalError(
        absl::StrCat(Context(request), ": curl_easy_setopt: ", curl_easy_strerror(rc)));
  }

  rc = curl_easy_perform(h);
  // The pointers set above die with this call; nothing of them stays in a
  // pooled handle past the next curl_easy_reset. The error buffer is let go
  // of at once: curl may write errors there until then, also while a
  // pooled handle is cleaned up, after this frame is gone.
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, nullptr);
  pool_.Give(h, rc == CURLE_OK);

  if (rc == CURLE_WRITE_ERROR && response.dst_overflow) {
    return absl::DataLossError(absl::StrCat(Context(request), ": the server sent more than the ",
                                            request.dst.size(), " bytes asked for"));
  }
  if (rc == CURLE_WRITE_ERROR && response.body_overflow) {
    return absl::InternalError(
        absl::StrCat(Context(request), ": response body over ", kMaxBodyBytes, " bytes"));
  }
  if (rc != CURLE_OK) {
    std::string message = absl::StrCat(Context(request), ": ", endpoint_, ": ",
                                       error_detail[0] != '\0' ? error_detail
                                                                : curl_easy_strerror(rc));
    if (rc == CURLE_PEER_FAILED_VERIFICATION) {
      absl::StrAppend(&message, options_.ca_file.empty()
                                    ? " (the endpoint's certificate is not signed by a CA of "
                                      "the system's store; a private CA's certificate goes in "
                                      "the S3 CA file)"
                                    : absl::StrCat(" (the endpoint's certificate is not signed "
                                                   "by the CA in '", options_.ca_file, "')"));
    }
    switch (rc) {
      case CURLE_COULDNT_CONNECT:
      case CURLE_COULDNT_RESOLVE_HOST:
      case CURLE_COULDNT_RESOLVE_PROXY:
      case CURLE_OPERATION_TIMEDOUT:
      case CURLE_SEND_ERROR:
      case CURLE_RECV_ERROR:
      case CURLE_GOT_NOTHING:
      case CURLE_PARTIAL_FILE:
      case CURLE_SSL_CONNECT_ERROR:
      case CURLE_HTTP2:
      case CURLE_HTTP2_STREAM:
      case CURLE_SEND_FAIL_REWIND:
        return absl::UnavailableError(message);
      case CURLE_LOGIN_DENIED:
      case CURLE_PEER_FAILED_VERIFICATION:
        return absl::PermissionDeniedError(message);
      default:
        return absl::InternalError(message);
    }
  }
  return response;
}

absl::Status CurlS3Client::HttpError(const Request& request, const Response& r) const {
  std::optional<internal::S3Error> error = internal::ParseError(r.body);
  std::string code = error ? error->code : std::string();
  std::string message = absl::StrCat(Context(request), ": HTTP ", r.status);
  if (error) {
    absl::StrAppend(&message, " ", error->code);
    if (!error->message.empty()) absl::StrAppend(&message, ": ", error->message);
  }
  if (r.status == 404) return absl::NotFoundError(message);
  if (r.status == 403) return absl::PermissionDeniedError(message);
  if (r.status == 429 || r.status >= 500 || code == "SlowDown") {
    return absl::UnavailableError(message);
  }
  if (r.status == 400) return absl::InvalidArgumentError(message);
  return absl::InternalError(message);
}

absl::Status CurlS3Client::EnsureBucket() {
  Request request = BucketRequest("CreateBucket", "PUT");
  REPROD_ASSIGN_OR_RETURN(Response r, Perform(request));
  if (r.status >= 200 && r.status <= 299) return absl::OkStatus();
  std::optional<internal::S3Error> error = internal::ParseError(r.body);
  if (r.status == 409 && error && error->code == "BucketAlreadyOwnedByYou") {
    return absl::OkStatus();
  }
  return HttpError(request, r);
}

absl::Status CurlS3Client::PutObject(std::string_view key, absl::Span<const uint8_t> data) {
  Request request = ObjectRequest("PutObject", "PUT", key);
  request.body = data;
  return PerformOk(request).status();
}

absl::StatusOr<std::string> CurlS3Client::CreateMultipartUpload(std::string_view key) {
  Request request = ObjectRequest("CreateMultipartUpload", "POST", key);
  request.query = {{"uploads", ""}};
  REPROD_ASSIGN_OR_RETURN(Response r, PerformOk(request));
  absl::StatusOr<std::string> id = internal::ParseInitiateMultipartUpload(r.body);
  if (!id.ok()) {
    return absl::InternalError(absl::StrCat(Context(request), ": ", id.status().message()));
  }
  return id;
}

absl::StatusOr<std::string> CurlS3Client::UploadPart(std::string_view key,
                                                     std::string_view upload_id, int part_number,
                                                     absl::Span<const uint8_t> data) {
  Request request = ObjectRequest("UploadPart", "PUT", key);
  if (part_number < 1 || part_number > 10000 || upload_id.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(Context(request), ": part number ", part_number,
                                                   " (1..10000) or empty upload id"));
  }
  request.query = {{"partNumber", absl::StrCat(part_number)}, {"uploadId", std::string(upload_id)}};
  request.body = data;
  REPROD_ASSIGN_OR_RETURN(Response r, PerformOk(request));
  auto etag = r.headers.find("etag");
  if (etag == r.headers.end() || StripQuotes(etag->second).empty()) {
    return absl::InternalError(
        absl::StrCat(Context(request), ": part ", part_number, ": no ETag in the response"));
  }
  return StripQuotes(etag->second);
}

absl::Status CurlS3Client::CompleteMultipartUpload(std::string_view key, std::string_view upload_id,
                                                   const std::vector<std::string>& part_etags) {
  Request request = ObjectRequest("CompleteMultipartUpload", "POST", key);
  if (part_etags.empty() || part_etags.size() > 10000 || upload_id.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(Context(request), ": ", part_etags.size(),
                                                   " parts (1..10000) or empty upload id"));
  }
  std::string xml = "<CompleteMultipartUpload>";
  for (size_t i = 0; i < part_etags.size(); ++i) {
    absl::StrAppend(&xml, "<Part><PartNumber>", i + 1, "</PartNumber><ETag>&quot;",
                    internal::XmlEscape(StripQuotes(part_etags[i])), "&quot;</ETag></Part>");
  }
  xml += "</CompleteMultipartUpload>";
  request.query = {{"uploadId", std::string(upload_id)}};
  request.body = absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(xml.data()), xml.size());
  REPROD_ASSIGN_OR_RETURN(Response r, PerformOk(request));
  // S3 may answer 200 and then report a failure in the body.
  if (internal::ParseError(r.body).has_value()) {
    Response failed = r;
    failed.status = 500;
    return HttpError(request, failed);
  }
  return absl::OkStatus();
}

absl::Status CurlS3Client::AbortMultipartUpload(std::string_view key, std::string_view upload_id) {
  Request request = ObjectRequest("AbortMultipartUpload", "DELETE", key);
  if (upload_id.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(Context(request), ": empty upload id"));
  }
  request.query = {{"uploadId", std::string(upload_id)}};
  return PerformOk(request).status();
}

absl::Status CurlS3Client::GetObjectRange(std::string_view key, uint64_t offset,
                                          absl::Span<uint8_t> dst) {
  if (dst.empty()) return absl::OkStatus();
  Request request = ObjectRequest("GetObject", "GET", key);
  request.headers.push_back(absl::StrCat("Range: bytes=", offset, "-", offset + dst.size() - 1));
  request.to_dst = true;
  request.dst_from_start = offset == 0;
  request.dst = dst;
  REPROD_ASSIGN_OR_RETURN(Response r, Perform(request));
  if (r.status == 416) {
    return absl::DataLossError(absl::StrCat(Context(request), ": bytes [", offset, ", ",
                                            offset + dst.size(),
                                            ") are past the end of the object (HTTP 416)"));
  }
  if (r.status < 200 || r.status > 299) return HttpError(request, r);
  if (r.status != 206 && !(r.status == 200 && offset == 0)) {
    return absl::InternalError(
        absl::StrCat(Context(request), ": HTTP ", r.status, " to a ranged GET"));
  }
  if (r.dst_bytes != dst.size()) {
    return absl::DataLossError(absl::StrCat(Context(request), ": asked for ", dst.size(),
                                            " bytes at offset ", offset, ", got ", r.dst_bytes));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> CurlS3Client::HeadObject(std::string_view key) {
  Request request = ObjectRequest("HeadObject", "HEAD", key);
  REPROD_ASSIGN_OR_RETURN(Response r, PerformOk(request));
  auto length = r.headers.find("content-length");
  uint64_t size = 0;
  if (length == r.headers.end() || !absl::SimpleAtoi(length->second, &size)) {
    return absl::InternalError(
        absl::StrCat(Context(request), ": no Content-Length in the response"));
  }
  return size;
}

absl::Status CurlS3Client::DeleteObject(std::string_view key) {
  Request request = ObjectRequest("DeleteObject", "DELETE", key);
  absl::StatusOr<Response> r = PerformOk(request);
  if (absl::IsNotFound(r.status())) {
    // NoSuchKey is done; NoSuchBucket is not.
    std::string message(r.status().message());
    if (message.find("NoSuchBucket") == std::string::npos) {
      return absl::OkStatus();
    }
  }
  return r.status();
}

absl::StatusOr<std::vector<S3Object>> CurlS3Client::ListObjects(std::string_view prefix) {
  std::vector<S3Object> objects;
  std::string token;
  while (true) {
    Request request = BucketRequest("ListObjectsV2", "GET");
    request.key = absl::StrCat(std::string(prefix), "*");
    request.query = {{"list-type", "2"}, {"prefix", std::string(prefix)}};
    if (!token.empty()) request.query.emplace_back("continuation-token", token);
    REPROD_ASSIGN_OR_RETURN(Response r, PerformOk(request));
    absl::StatusOr<internal::S3ListPage> page = internal::ParseListObjectsV2(r.body);
    if (!page.ok()) {
      return absl::InternalError(absl::StrCat(Context(request), ": ", page.status().message()));
    }
    for (S3Object& o : page->objects) objects.push_back(std::move(o));
    if (!page->truncated) break;
    if (page->next_continuation_token == token) {
      return absl::InternalError(
          absl::StrCat(Context(request), ": the same continuation token twice"));
    }
    token = std::move(page->next_continuation_token);
  }
  return objects;
}

absl::StatusOr<std::vector<S3Upload>> CurlS3Client::ListMultipartUploads(std::string_view prefix) {
  std::vector<S3Upload> uploads;
  std::string key_marker, upload_id_marker;
  while (true) {
    Request request = BucketRequest("ListMultipartUploads", "GET");
    request.key = absl::StrCat(std::string(prefix), "*");
    request.query = {{"uploads", ""}, {"prefix", std::string(prefix)}};
    if (!key_marker.empty()) {
      request.query.emplace_back("key-marker", key_marker);
    }
    if (!upload_id_marker.empty()) {
      request.query.emplace_back("upload-id-marker", upload_id_marker);
    }
    REPROD_ASSIGN_OR_RETURN(Response r, PerformOk(request));
    absl::StatusOr<internal::S3UploadsPage> page = internal::ParseListMultipartUploads(r.body);
    if (!page.ok()) {
      return absl::InternalError(absl::StrCat(Context(request), ": ", page.status().message()));
    }
    for (S3Upload& u : page->uploads) uploads.push_back(std::move(u));
    if (!page->truncated) break;
    if (page->next_key_marker.empty() ||
        (page->next_key_marker == key_marker && page->next_upload_id_marker == upload_id_marker)) {
      return absl::InternalError(
          absl::StrCat(Context(request), ": truncated listing without new markers"));
    }
    key_marker = std::move(page->next_key_marker);
    upload_id_marker = std::move(page->next_upload_id_marker);
  }
  return uploads;
}

// http(s)://host[:port] with an optional trailing '/'; the endpoint without
// the '/', or nullopt.
std::optional<std::string> CheckEndpoint(std::string_view endpoint) {
  std::string_view rest;
  if (StartsWith(endpoint, "http://")) {
    rest = endpoint.substr(7);
  } else if (StartsWith(endpoint, "https://")) {
    rest = endpoint.substr(8);
  } else {
    return std::nullopt;
  }
  if (EndsWith(rest, "/")) rest.remove_suffix(1);
  if (rest.empty()) return std::nullopt;
  for (char c : rest) {
    if (c == '/' || c == '?' || c == '#' || c == '@' || c == ' ' ||
        static_cast<unsigned char>(c) < 0x21 || static_cast<unsigned char>(c) > 0x7E) {
      return std::nullopt;
    }
  }
  // host[:port], host possibly [ipv6].
  std::string_view host = rest;
  std::string_view port;
  if (rest.front() == '[') {
    size_t close = rest.find(']');
    if (close == std::string_view::npos || close == 1) return std::nullopt;
    host = rest.substr(0, close + 1);
    std::string_view after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return std::nullopt;
      port = after.substr(1);
      if (port.empty()) return std::nullopt;
    }
  } else {
    size_t colon = rest.find(':');
    if (colon != std::string_view::npos) {
      host = rest.substr(0, colon);
      port = rest.substr(colon + 1);
      if (port.empty()) return std::nullopt;
    }
  }
  if (host.empty() || (host.front() != '[' && host.find_first_of("[]") != std::string_view::npos)) {
    return std::nullopt;
  }
  if (!port.empty()) {
    uint32_t p = 0;
    if (port.size() > 5 || !absl::SimpleAtoi(std::string(port), &p) || p == 0 || p > 65535 ||
        !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return std::nullopt;
    }
  }
  return std::string(endpoint.substr(0, endpoint.size() - (EndsWith(endpoint, "/") ? 1 : 0)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<S3Client>> S3Client::Create(S3Options options) {
  std::optional<std::string> endpoint = CheckEndpoint(options.endpoint);
  if (!endpoint) {
    return absl::InvalidArgumentError(absl::StrCat("S3 endpoint '", options.endpoint,
                                                   "' is not http(s)://host[:port] (no path)"));
  }
  if (options.bucket.empty()) {
    return absl::InvalidArgumentError("S3 bucket is empty");
  }
  if (options.access_key.empty() || options.secret_key.empty()) {
    return absl::InvalidArgumentError("S3 access key or secret key is empty");
  }
  if (options.region.empty() || options.region.find(':') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("S3 region '", options.region, "' is empty or holds ':'"));
  }
  if (options.access_key.find(':') != std::string::npos) {
    return absl::InvalidArgumentError("S3 access key holds ':'");
  }
  if (options.request_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("S3 request timeout is not positive");
  }
  if (!options.ca_file.empty()) {
    if (!StartsWith(*endpoint, "https://")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "an S3 CA file ('", options.ca_file, "') is for an https endpoint, not '",
          *endpoint, "'"));
    }
    std::ifstream ca(options.ca_file);
    if (!ca) {
      return absl::InvalidArgumentError(absl::StrCat("S3 CA file '", options.ca_file,
                                                     "' cannot be read: ", std::strerror(errno)));
    }
  }
  return std::unique_ptr<S3Client>(new CurlS3Client(std::move(options), std::move(*endpoint)));
}

}  // namespace reprod::storage
