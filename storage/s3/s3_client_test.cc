// File: storage/s3/s3_client_test.cc
//
// S3Client against a real radosgw: tests/python/test_s3_client.py starts a
// throwaway Ceph (tests/services/) and runs this binary with
// REPROD_TEST_S3_ENDPOINT / _ACCESS_KEY / _SECRET_KEY / _REGION set. Without
// REPROD_TEST_S3_ENDPOINT the server tests skip (visibly); the tests that
// need no server (option checks, a closed port, the XML parser on canned
// responses) always run. Oracles: the bytes written, OpenSSL's MD5 for the
// ETags S3 computes, hand-written XML.
#include "storage/s3/s3_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/s3/internal/s3_xml.h"

namespace reprod::storage {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr size_t kMiB = 1 << 20;
constexpr char kSkip[] =
    "REPROD_TEST_S3_ENDPOINT not set: run tests/python/test_s3_client.py, "
    "which starts Ceph radosgw";

std::string Env(const char* name, const char* fallback = "") {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : std::string(fallback);
}

std::vector<uint8_t> RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(rng() >> 56);
  return out;
}

std::string Md5Hex(absl::Span<const uint8_t> data) {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EXPECT_EQ(EVP_Digest(data.data(), data.size(), d, &len, EVP_md5(), nullptr), 1);
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    absl::StrAppend(&out, absl::Hex(d[i], absl::kZeroPad2));
  }
  return out;
}

std::vector<uint8_t> Md5Raw(absl::Span<const uint8_t> data) {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EXPECT_EQ(EVP_Digest(data.data(), data.size(), d, &len, EVP_md5(), nullptr), 1);
  return std::vector<uint8_t>(d, d + len);
}

std::vector<uint8_t> Slice(const std::vector<uint8_t>& v, size_t offset, size_t n) {
  return std::vector<uint8_t>(v.begin() + offset, v.begin() + offset + n);
}

// A port on 127.0.0.1 that nothing listens on (bound, then closed).
int ClosedPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  close(fd);
  return ntohs(addr.sin_port);
}

class S3ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (Env("REPROD_TEST_S3_ENDPOINT").empty()) GTEST_SKIP() << kSkip;
    // One bucket per test: lower-case test name + pid (S3 bucket names are
    // 3..63 characters of a-z 0-9 - .).
    std::string name =
        absl::AsciiStrToLower(::testing::UnitTest::GetInstance()->current_test_info()->name());
    name = name.substr(0, 40);
    bucket_ = absl::StrCat("s3t-", name, "-", getpid());
    absl::StatusOr<std::unique_ptr<S3Client>> s3 = S3Client::Create(Options());
    ASSERT_TRUE(s3.ok()) << s3.status();
    s3_ = std::move(*s3);
    absl::Status st = s3_->EnsureBucket();
    ASSERT_TRUE(st.ok()) << st;
  }

  S3Options Options() const {
    return S3Options{.endpoint = Env("REPROD_TEST_S3_ENDPOINT"),
                     .bucket = bucket_,
                     .region = Env("REPROD_TEST_S3_REGION", "us-east-1"),
                     .access_key = Env("REPROD_TEST_S3_ACCESS_KEY"),
                     .secret_key = Env("REPROD_TEST_S3_SECRET_KEY"),
                     .ca_file = Env("REPROD_TEST_S3_CA_FILE")};
  }

  // The whole object (HEAD, then a GET of that many bytes).
  std::vector<uint8_t> ReadAll(const std::string& key) {
    absl::StatusOr<uint64_t> size = s3_->HeadObject(key);
    EXPECT_TRUE(size.ok()) << size.status();
    if (!size.ok()) return {};
    std::vector<uint8_t> out(*size);
    absl::Status st = s3_->GetObjectRange(key, 0, absl::MakeSpan(out));
    EXPECT_TRUE(st.ok()) << st;
    return out;
  }

  std::string bucket_;
  std::unique_ptr<S3Client> s3_;
};

TEST_F(S3ClientTest, EnsureBucketTwiceAndObjectsSurvive) {
  std::vector<uint8_t> data = RandomBytes(100, 1);
  ASSERT_TRUE(s3_->PutObject("k", data).ok());
  // Again on the same client and from a new one: the bucket is ours already.
  ASSERT_TRUE(s3_->EnsureBucket().ok());
  absl::StatusOr<std::unique_ptr<S3Client>> other = S3Client::Create(Options());
  ASSERT_TRUE(other.ok());
  absl::Status st = (*other)->EnsureBucket();
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(ReadAll("k"), data);
}

TEST_F(S3ClientTest, PutGetByteIdenticalWithOddKeysAndRanges) {
  const std::vector<std::string> keys = {
      "plain",
      "dir/with space/and unicode \xC3\xA9\xE2\x9C\x93",
      "plus+percent%25equals=amp&q?hash#",
      "tilde~star*paren(x)comma,colon:semi;at@dollar$",
      "a//double/slash",
  };
  const std::vector<size_t> sizes = {0, 1, 1000003, 4097, 3};
  for (size_t i = 0; i < keys.size(); ++i) {
    SCOPED_TRACE(keys[i]);
    std::vector<uint8_t> data = RandomBytes(sizes[i], 100 + i);
    absl::Status st = s3_->PutObject(keys[i], data);
    ASSERT_TRUE(st.ok()) << st;
    absl::StatusOr<uint64_t> size = s3_->HeadObject(keys[i]);
    ASSERT_TRUE(size.ok()) << size.status();
    EXPECT_EQ(*size, sizes[i]);
    EXPECT_EQ(ReadAll(keys[i]), data);
  }
  // Ranged reads at odd offsets of the 1000003-byte object.
  const std::vector<uint8_t> big = RandomBytes(1000003, 102);
  const std::vector<std::pair<size_t, size_t>> ranges = {
      {0, 1}, {1, 1}, {7, 13}, {4095, 4099}, {999999, 4}, {1000002, 1}, {333333, 500001}};
  for (auto [offset, n] : ranges) {
    SCOPED_TRACE(absl::StrCat(offset, "+", n));
    std::vector<uint8_t> got(n, 0xEE);
    absl::Status st = s3_->GetObjectRange(keys[2], offset, absl::MakeSpan(got));
    ASSERT_TRUE(st.ok()) << st;
    EXPECT_EQ(got, Slice(big, offset, n));
  }
  // Zero bytes: OK without asking, even past the end or for a missing key.
  std::vector<uint8_t> none;
  EXPECT_TRUE(s3_->GetObjectRange(keys[2], 5000000, absl::MakeSpan(none)).ok());
  EXPECT_TRUE(s3_->GetObjectRange("missing", 0, absl::MakeSpan(none)).ok());

  // The listing has every key, in order, with sizes and MD5 ETags.
  absl::StatusOr<std::vector<S3Object>> list = s3_->ListObjects("");
  ASSERT_TRUE(list.ok()) << list.status();
  std::vector<std::string> sorted = keys;
  std::sort(sorted.begin(), sorted.end());
  ASSERT_EQ(list->size(), keys.size());
  for (size_t i = 0; i < sorted.size(); ++i) {
    EXPECT_EQ((*list)[i].key, sorted[i]);
    size_t k = std::find(keys.begin(), keys.end(), sorted[i]) - keys.begin();
    EXPECT_EQ((*list)[i].size, sizes[k]);
    EXPECT_EQ((*list)[i].etag, Md5Hex(RandomBytes(sizes[k], 100 + k)));
  }
  // Prefixes with characters that need encoding.
  list = s3_->ListObjects("dir/with space/");
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].key, keys[1]);
  list = s3_->ListObjects("plus+percent%25");
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].key, keys[2]);
  list = s3_->ListObjects("nothing-here");
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_TRUE(list->empty());
}

TEST_F(S3ClientTest, GetPastEndIsDataLossAndWritesNothingPastDst) {
  std::vector<uint8_t> data = RandomBytes(100, 3);
  ASSERT_TRUE(s3_->PutObject("hundred", data).ok());
  // Straddling the end: the server sends 10 bytes of the 20 asked.
  std::vector<uint8_t> got(20, 0xAB);
  absl::Status st = s3_->GetObjectRange("hundred", 90, absl::MakeSpan(got));
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_THAT(st.message(), HasSubstr("hundred"));
  EXPECT_EQ(Slice(got, 0, 10), Slice(data, 90, 10));
  EXPECT_EQ(Slice(got, 10, 10), std::vector<uint8_t>(10, 0xAB));
  // Wholly past the end (HTTP 416).
  for (uint64_t offset : {100u, 1000u}) {
    std::vector<uint8_t> past(5, 0xCD);
    st = s3_->GetObjectRange("hundred", offset, absl::MakeSpan(past));
    EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
    EXPECT_EQ(past, std::vector<uint8_t>(5, 0xCD));
  }
  // The last byte exactly is fine.
  std::vector<uint8_t> last(1);
  ASSERT_TRUE(s3_->GetObjectRange("hundred", 99, absl::MakeSpan(last)).ok());
  EXPECT_EQ(last[0], data[99]);
  // Missing keys.
  std::vector<uint8_t> buf(4, 0x11);
  st = s3_->GetObjectRange("absent", 0, absl::MakeSpan(buf));
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound) << st;
  EXPECT_THAT(st.message(), HasSubstr("NoSuchKey"));
  EXPECT_EQ(buf, std::vector<uint8_t>(4, 0x11));
  EXPECT_EQ(s3_->HeadObject("absent").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(S3ClientTest, MultipartTwoPartsReadBackExactly) {
  const std::vector<uint8_t> p1 = RandomBytes(5 * kMiB, 41);
  const std::vector<uint8_t> p2 = RandomBytes(1234567, 42);
  const std::string key = "multi/part object";
  absl::StatusOr<std::string> id = s3_->CreateMultipartUpload(key);
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_FALSE(id->empty());
  absl::StatusOr<std::string> e1 = s3_->UploadPart(key, *id, 1, p1);
  ASSERT_TRUE(e1.ok()) << e1.status();
  absl::StatusOr<std::string> e2 = s3_->UploadPart(key, *id, 2, p2);
  ASSERT_TRUE(e2.ok()) << e2.status();
  // The part ETags are the parts' MD5s, quotes removed.
  EXPECT_EQ(*e1, Md5Hex(p1));
  EXPECT_EQ(*e2, Md5Hex(p2));
  absl::Status st = s3_->CompleteMultipartUpload(key, *id, {*e1, *e2});
  ASSERT_TRUE(st.ok()) << st;

  std::vector<uint8_t> whole = p1;
  whole.insert(whole.end(), p2.begin(), p2.end());
  EXPECT_EQ(ReadAll(key), whole);
  // Across the part boundary.
  std::vector<uint8_t> mid(1001);
  ASSERT_TRUE(s3_->GetObjectRange(key, 5 * kMiB - 500, absl::MakeSpan(mid)).ok());
  EXPECT_EQ(mid, Slice(whole, 5 * kMiB - 500, 1001));
  // The multipart ETag: MD5 of the parts' MD5s, "-2".
  std::vector<uint8_t> md5s = Md5Raw(p1);
  std::vector<uint8_t> m2 = Md5Raw(p2);
  md5s.insert(md5s.end(), m2.begin(), m2.end());
  absl::StatusOr<std::vector<S3Object>> list = s3_->ListObjects("multi/");
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].key, key);
  EXPECT_EQ((*list)[0].size, whole.size());
  EXPECT_EQ((*list)[0].etag, Md5Hex(md5s) + "-2");
  // Completed: no longer listed as unfinished, and gone for Abort.
  absl::StatusOr<std::vector<S3Upload>> uploads = s3_->ListMultipartUploads("");
  ASSERT_TRUE(uploads.ok()) << uploads.status();
  EXPECT_TRUE(uploads->empty());
  EXPECT_EQ(s3_->AbortMultipartUpload(key, *id).code(), absl::StatusCode::kNotFound);
}

TEST_F(S3ClientTest, MultipartRulesAreEnforced) {
  // A first part under 5 MiB is refused at Complete (EntityTooSmall, 400).
  const std::string key = "small-parts";
  absl::StatusOr<std::string> id = s3_->CreateMultipartUpload(key);
  ASSERT_TRUE(id.ok()) << id.status();
  std::vector<uint8_t> small = RandomBytes(1000, 5);
  absl::StatusOr<std::string> e1 = s3_->UploadPart(key, *id, 1, small);
  absl::StatusOr<std::string> e2 = s3_->UploadPart(key, *id, 2, small);
  ASSERT_TRUE(e1.ok() && e2.ok());
  absl::Status st = s3_->CompleteMultipartUpload(key, *id, {*e1, *e2});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(st.message(), HasSubstr("EntityTooSmall"));
  EXPECT_TRUE(s3_->AbortMultipartUpload(key, *id).ok());
  // Bad arguments are refused before any request.
  EXPECT_EQ(s3_->UploadPart(key, *id, 0, small).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s3_->UploadPart(key, *id, 10001, small).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s3_->CompleteMultipartUpload(key, *id, {}).code(), absl::StatusCode::kInvalidArgument);
  // An unknown upload id.
  EXPECT_EQ(s3_->UploadPart(key, "2~nonexistent", 1, small).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(S3ClientTest, UnfinishedUploadsListedUntilAborted) {
  absl::StatusOr<std::string> a = s3_->CreateMultipartUpload("up/a key");
  absl::StatusOr<std::string> b = s3_->CreateMultipartUpload("up/b+key");
  absl::StatusOr<std::string> c = s3_->CreateMultipartUpload("other/c");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  ASSERT_TRUE(s3_->UploadPart("up/a key", *a, 1, RandomBytes(10, 1)).ok());

  auto list = [&](const std::string& prefix) {
    absl::StatusOr<std::vector<S3Upload>> u = s3_->ListMultipartUploads(prefix);
    EXPECT_TRUE(u.ok()) << u.status();
    std::vector<std::pair<std::string, std::string>> out;
    if (u.ok()) {
      for (const S3Upload& x : *u) out.emplace_back(x.key, x.upload_id);
    }
    return out;
  };
  using P = std::pair<std::string, std::string>;
  EXPECT_THAT(list("up/"), ElementsAre(P("up/a key", *a), P("up/b+key", *b)));
  EXPECT_THAT(list(""), ElementsAre(P("other/c", *c), P("up/a key", *a), P("up/b+key", *b)));
  absl::Status st = s3_->AbortMultipartUpload("up/a key", *a);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_THAT(list("up/"), ElementsAre(P("up/b+key", *b)));
  // Aborted: unknown now.
  st = s3_->AbortMultipartUpload("up/a key", *a);
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound) << st;
  EXPECT_EQ(s3_->UploadPart("up/a key", *a, 2, RandomBytes(10, 2)).status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(s3_->AbortMultipartUpload("up/b+key", *b).ok());
  ASSERT_TRUE(s3_->AbortMultipartUpload("other/c", *c).ok());
  EXPECT_TRUE(list("").empty());
  // Nothing was ever completed: no objects.
  absl::StatusOr<std::vector<S3Object>> objects = s3_->ListObjects("");
  ASSERT_TRUE(objects.ok());
  EXPECT_TRUE(objects->empty());
}

TEST_F(S3ClientTest, ListObjectsFollowsContinuationPastOneThousand) {
  // 1100 keys under p/ (more than one 1000-key page) and 7 under q/.
  constexpr int kKeys = 1100;
  std::vector<std::string> keys;
  for (int i = 0; i < kKeys; ++i) keys.push_back(absl::StrCat("p/", 100000 + i * 7));
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = t; i < kKeys; i += 8) {
        std::vector<uint8_t> body(i % 5, static_cast<uint8_t>(i));
        if (!s3_->PutObject(keys[i], body).ok()) ++failures;
      }
    });
  }
  for (std::thread& th : threads) th.join();
  ASSERT_EQ(failures.load(), 0);
  for (int i = 0; i < 7; ++i) {
    ASSERT_TRUE(s3_->PutObject(absl::StrCat("q/", i), RandomBytes(3, i)).ok());
  }
  absl::StatusOr<std::vector<S3Object>> list = s3_->ListObjects("p/");
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), static_cast<size_t>(kKeys));
  for (int i = 0; i < kKeys; ++i) {  // the keys were made in sorted order
    EXPECT_EQ((*list)[i].key, keys[i]);
    EXPECT_EQ((*list)[i].size, static_cast<uint64_t>(i % 5));
  }
  list = s3_->ListObjects("");
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(list->size(), static_cast<size_t>(kKeys + 7));
  EXPECT_EQ(list->back().key, "q/6");
}

TEST_F(S3ClientTest, DeleteObjectAndDeleteMissingAreOk) {
  ASSERT_TRUE(s3_->PutObject("gone", RandomBytes(10, 9)).ok());
  ASSERT_TRUE(s3_->HeadObject("gone").ok());
  absl::Status st = s3_->DeleteObject("gone");
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(s3_->HeadObject("gone").status().code(), absl::StatusCode::kNotFound);
  st = s3_->DeleteObject("gone");
  EXPECT_TRUE(st.ok()) << st;
  st = s3_->DeleteObject("never existed");
  EXPECT_TRUE(st.ok()) << st;
}

TEST_F(S3ClientTest, WrongSecretIsPermissionDenied) {
  ASSERT_TRUE(s3_->PutObject("secret", RandomBytes(10, 7)).ok());
  S3Options options = Options();
  options.secret_key += "x";
  absl::StatusOr<std::unique_ptr<S3Client>> bad = S3Client::Create(options);
  ASSERT_TRUE(bad.ok());
  absl::Status st = (*bad)->PutObject("secret", RandomBytes(10, 8));
  EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied) << st;
  EXPECT_THAT(st.message(), HasSubstr("SignatureDoesNotMatch"));
  std::vector<uint8_t> buf(10);
  EXPECT_EQ((*bad)->GetObjectRange("secret", 0, absl::MakeSpan(buf)).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ((*bad)->EnsureBucket().code(), absl::StatusCode::kPermissionDenied);
  // Unchanged by the failed PUT.
  EXPECT_EQ(ReadAll("secret"), RandomBytes(10, 7));
}

TEST_F(S3ClientTest, EightThreadsPutAndGetAtOnce) {
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 12; ++i) {
        std::string key = absl::StrCat("t", t, "/", i);
        size_t size = 1 + (t * 7919 + i * 104729) % 300000;
        std::vector<uint8_t> data = RandomBytes(size, t * 1000 + i);
        if (!s3_->PutObject(key, data).ok()) {
          ++failures;
          continue;
        }
        std::vector<uint8_t> got(size);
        if (!s3_->GetObjectRange(key, 0, absl::MakeSpan(got)).ok() || got != data) {
          ++failures;
        }
        // A read of the previous object of this thread, ranged.
        if (i > 0) {
          size_t prev = 1 + (t * 7919 + (i - 1) * 104729) % 300000;
          std::vector<uint8_t> pdata = RandomBytes(prev, t * 1000 + i - 1);
          size_t off = prev / 3;
          std::vector<uint8_t> part(prev - off);
          if (!s3_->GetObjectRange(absl::StrCat("t", t, "/", i - 1), off, absl::MakeSpan(part))
                   .ok() ||
              part != Slice(pdata, off, prev - off)) {
            ++failures;
          }
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  absl::StatusOr<std::vector<S3Object>> list = s3_->ListObjects("t");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 8u * 12u);
}

TEST_F(S3ClientTest, SixtyFourMiBThroughput) {
  const std::vector<uint8_t> data = RandomBytes(64 * kMiB, 64);
  auto t0 = std::chrono::steady_clock::now();
  absl::Status st = s3_->PutObject("big", data);
  auto t1 = std::chrono::steady_clock::now();
  ASSERT_TRUE(st.ok()) << st;
  std::vector<uint8_t> got(data.size());
  st = s3_->GetObjectRange("big", 0, absl::MakeSpan(got));
  auto t2 = std::chrono::steady_clock::now();
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_TRUE(got == data);
  double put_s = std::chrono::duration<double>(t1 - t0).count();
  double get_s = std::chrono::duration<double>(t2 - t1).count();
  std::printf("64 MiB object: PUT %.3f s (%.0f MB/s), GET %.3f s (%.0f MB/s)\n", put_s,
              64 * 1.048576 / put_s, get_s, 64 * 1.048576 / get_s);
}

// --- no server needed -------------------------------------------------------

TEST(S3ClientNoServerTest, CreateChecksOptions) {
  S3Options ok{
      .endpoint = "http://127.0.0.1:7480", .bucket = "b", .access_key = "a", .secret_key = "s"};
  EXPECT_TRUE(S3Client::Create(ok).ok());
  for (const char* endpoint : {"http://h", "https://s3.example.org/", "http://[::1]:80"}) {
    S3Options o = ok;
    o.endpoint = endpoint;
    EXPECT_TRUE(S3Client::Create(o).ok()) << endpoint;
  }
  for (const char* endpoint :
       {"", "127.0.0.1:7480", "ftp://h", "http://", "http://h/path", "http://h:", "http://h:99999",
        "http://h:8x", "http://u@h", "http://h?q"}) {
    S3Options o = ok;
    o.endpoint = endpoint;
    EXPECT_EQ(S3Client::Create(o).status().code(), absl::StatusCode::kInvalidArgument) << endpoint;
  }
  S3Options o = ok;
  o.bucket = "";
  EXPECT_EQ(S3Client::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = ok;
  o.secret_key = "";
  EXPECT_EQ(S3Client::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = ok;
  o.access_key = "";
  EXPECT_EQ(S3Client::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(S3ClientNoServerTest, CaFileIsForHttpsAndMustBeReadable) {
  const std::string ca = ::testing::TempDir() + "/s3_client_test_ca.pem";
  {
    std::FILE* f = std::fopen(ca.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("-----BEGIN CERTIFICATE-----\n", f);
    std::fclose(f);
  }
  S3Options o{.endpoint = "https://127.0.0.1:7480",
              .bucket = "b",
              .access_key = "a",
              .secret_key = "s",
              .ca_file = ca};
  EXPECT_TRUE(S3Client::Create(o).ok());
  o.endpoint = "http://127.0.0.1:7480";
  absl::Status st = S3Client::Create(o).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(std::string(st.message()), ::testing::HasSubstr("for an https endpoint")) << st;
  o.endpoint = "https://127.0.0.1:7480";
  o.ca_file = ca + ".missing";
  st = S3Client::Create(o).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(std::string(st.message()), ::testing::HasSubstr(o.ca_file)) << st;
  std::remove(ca.c_str());
}

TEST(S3ClientNoServerTest, ClosedPortIsUnavailable) {
  S3Options o{.endpoint = absl::StrCat("http://127.0.0.1:", ClosedPort()),
              .bucket = "b",
              .access_key = "a",
              .secret_key = "s",
              .request_timeout = absl::Seconds(10)};
  absl::StatusOr<std::unique_ptr<S3Client>> s3 = S3Client::Create(o);
  ASSERT_TRUE(s3.ok());
  absl::Status st = (*s3)->EnsureBucket();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  std::vector<uint8_t> buf(3);
  EXPECT_EQ((*s3)->GetObjectRange("k", 0, absl::MakeSpan(buf)).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ((*s3)->PutObject("k", buf).code(), absl::StatusCode::kUnavailable);
}

TEST(S3XmlTest, UnescapeAndEscape) {
  EXPECT_EQ(internal::XmlUnescape("a&amp;b&lt;c&gt;d&quot;e&apos;f"), "a&b<c>d\"e'f");
  EXPECT_EQ(internal::XmlUnescape("&#65;&#x42;&#xe9;&#x2713;"), "AB\xC3\xA9\xE2\x9C\x93");
  // Unknown or broken entities stay as written.
  EXPECT_EQ(internal::XmlUnescape("&nbsp; & &amp &#xZZ;"), "&nbsp; & &amp &#xZZ;");
  EXPECT_EQ(internal::XmlEscape("<a&'\">"), "&lt;a&amp;&#39;&quot;&gt;");
}

TEST(S3XmlTest, ListObjectsV2PageWithContinuation) {
  const char* xml = R"(<?xml version="1.0" encoding="UTF-8"?>)"
                    R"(<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">)"
                    "<Name>b</Name><Prefix>p/</Prefix><KeyCount>2</KeyCount>"
                    "<MaxKeys>2</MaxKeys><IsTruncated>true</IsTruncated>"
                    "<ContinuationToken>tok0</ContinuationToken>"
                    "<NextContinuationToken>p/b &amp; c</NextContinuationToken>"
                    "<Contents><Key>p/a&lt;1&gt;</Key><LastModified>2026-01-01T00:00:00.000Z"
                    "</LastModified><ETag>&quot;0cc175b9c0f1b6a831c399e269772661&quot;</ETag>"
                    "<Size>1</Size><StorageClass>STANDARD</StorageClass>"
                    "<Owner><ID>u</ID><DisplayName>U</DisplayName></Owner></Contents>"
                    "<Contents><Key>p/b &amp; c</Key><ETag>\"abc-2\"</ETag>"
                    "<Size>5368709120</Size></Contents>"
                    "</ListBucketResult>";
  absl::StatusOr<internal::S3ListPage> page = internal::ParseListObjectsV2(xml);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->objects.size(), 2u);
  EXPECT_EQ(page->objects[0].key, "p/a<1>");
  EXPECT_EQ(page->objects[0].size, 1u);
  EXPECT_EQ(page->objects[0].etag, "0cc175b9c0f1b6a831c399e269772661");
  EXPECT_EQ(page->objects[1].key, "p/b & c");
  EXPECT_EQ(page->objects[1].size, 5368709120u);
  EXPECT_EQ(page->objects[1].etag, "abc-2");
  EXPECT_TRUE(page->truncated);
  EXPECT_EQ(page->next_continuation_token, "p/b & c");

  // The last page; an empty one.
  page = internal::ParseListObjectsV2(
      "<ListBucketResult><IsTruncated>false</IsTruncated>"
      "<Contents><Key>z</Key><Size>0</Size><ETag/></Contents></ListBucketResult>");
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_FALSE(page->truncated);
  ASSERT_EQ(page->objects.size(), 1u);
  EXPECT_EQ(page->objects[0].etag, "");
  page = internal::ParseListObjectsV2(
      "<ListBucketResult><KeyCount>0</KeyCount><IsTruncated>false</IsTruncated>"
      "</ListBucketResult>");
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->objects.empty());

  // Malformed: not a listing, truncated without a token, bad size.
  EXPECT_FALSE(internal::ParseListObjectsV2("<Error><Code>X</Code></Error>").ok());
  EXPECT_FALSE(internal::ParseListObjectsV2("<ListBucketResult><IsTruncated>true</IsTruncated>"
                                            "</ListBucketResult>")
                   .ok());
  EXPECT_FALSE(
      internal::ParseListObjectsV2("<ListBucketResult><Contents><Key>k</Key><Size>-1</Size>"
                                   "</Contents></ListBucketResult>")
          .ok());
}

TEST(S3XmlTest, ListMultipartUploadsInitiateAndError) {
  absl::StatusOr<internal::S3UploadsPage> page = internal::ParseListMultipartUploads(
      R"(<ListMultipartUploadsResult xmlns="x"><Bucket>b</Bucket>)"
      "<KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>"
      "<NextKeyMarker>u/b&amp;</NextKeyMarker>"
      "<NextUploadIdMarker>2~id2</NextUploadIdMarker>"
      "<MaxUploads>2</MaxUploads><IsTruncated>true</IsTruncated>"
      "<Upload><Key>u/a</Key><UploadId>2~id1</UploadId>"
      "<Initiator><ID>u</ID></Initiator><Owner><ID>u</ID></Owner>"
      "<StorageClass>STANDARD</StorageClass></Upload>"
      "<Upload><Key>u/b&amp;</Key><UploadId>2~id2</UploadId></Upload>"
      "</ListMultipartUploadsResult>");
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->uploads.size(), 2u);
  EXPECT_EQ(page->uploads[0].key, "u/a");
  EXPECT_EQ(page->uploads[0].upload_id, "2~id1");
  EXPECT_EQ(page->uploads[1].key, "u/b&");
  EXPECT_TRUE(page->truncated);
  EXPECT_EQ(page->next_key_marker, "u/b&");
  EXPECT_EQ(page->next_upload_id_marker, "2~id2");
  EXPECT_FALSE(internal::ParseListMultipartUploads(
                   "<ListMultipartUploadsResult><Upload><Key>k</Key></Upload>"
                   "</ListMultipartUploadsResult>")
                   .ok());

  absl::StatusOr<std::string> id = internal::ParseInitiateMultipartUpload(
      "<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key>"
      "<UploadId>2~abc&amp;d</UploadId></InitiateMultipartUploadResult>");
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(*id, "2~abc&d");
  EXPECT_FALSE(
      internal::ParseInitiateMultipartUpload("<InitiateMultipartUploadResult><UploadId></UploadId>"
                                             "</InitiateMultipartUploadResult>")
          .ok());

  std::optional<internal::S3Error> error = internal::ParseError(
      "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code>"
      "<Message>The key &apos;k&apos; does not exist</Message>"
      "<BucketName>b</BucketName><RequestId>r</RequestId></Error>");
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code, "NoSuchKey");
  EXPECT_EQ(error->message, "The key 'k' does not exist");
  EXPECT_FALSE(internal::ParseError("").has_value());
  EXPECT_FALSE(internal::ParseError("<ListBucketResult/>").has_value());
}

}  // namespace
}  // namespace reprod::storage
