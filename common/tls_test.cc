// common/tls: PEM files read and checked, and the flag rules of both sides.
// The certificates are throwaway self-signed EC P-256 ones made with
//   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes ...
// (valid for 100 years; nothing here checks expiry). End to end, with a
// real CA and reprodd, see tests/python/test_tls.py.
#include "common/tls.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reprod::tls {
namespace {

using ::reprod::testing::IsOkAndHolds;
using ::reprod::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr char kCertA[] = R"pem(-----BEGIN CERTIFICATE-----
MIIBbzCCARWgAwIBAgIUfVC+VO1fv5oUbJP5lIJT1CK7RrwwCgYIKoZIzj0EAwIw
DDEKMAgGA1UEAwwBYTAgFw0yNjEyMDEyMzQ1NTZaGA8yMTI2MTEwNzIzNDU1Nlow
DDEKMAgGA1UEAwwBYTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABKVnWd5Vp0T8
n0EBWFP4WHAG80xsRaME5wUgJMX6RxoUc59pL3CZESpg+Nuhrjwa3gsV/Li/+4ma
yjneBPMnopOjUzBRMB0GA1UdDgQWBBQB5B0tdn7xopcSNREskZhSYQsCZzAfBgNV
HSMEGDAWgBQB5B0tdn7xopcSNREskZhSYQsCZzAPBgNVHRMBAf8EBTADAQH/MAoG
CCqGSM49BAMCA0gAMEUCIGwgrLNxHUjmWWjFulKTikwnoiI9D83pSn6tK6UKIcJB
AiEA4cx9gQEPyFQ1Zqk82YTy1OipCPEdWFjYLHCJzVDd5EY=
-----END CERTIFICATE-----
)pem";
constexpr char kKeyA[] = R"pem(-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgrqVitIkI7mBwDFrC
zYkXdDQm1bgWrUUfeIhkrurwREuhRANCAASlZ1neVadE/J9BAVhT+FhwBvNMbEWj
BOcFICTF+kcaFHOfaS9wmREqYPjboa48Gt4LFfy4v/uJmso53gTzJ6KT
-----END PRIVATE KEY-----
)pem";
constexpr char kCertB[] = R"pem(-----BEGIN CERTIFICATE-----
MIIBbzCCARWgAwIBAgIUE5fnzmXS/o/TKbGKkJ7e7afMGvEwCgYIKoZIzj0EAwIw
DDEKMAgGA1UEAwwBYjAgFw0yNjEyMDEyMzQ1NTZaGA8yMTI2MTEwNzIzNDU1Nlow
DDEKMAgGA1UEAwwBYjBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABH8jOsui7ohl
dvuJKzO4U4b3ep+2mqaSvqh/sCAcRjb9V36aS+cLcnYl2WJXGvCO3J8mHHVIgNWn
6StN2980doijUzBRMB0GA1UdDgQWBBSrH8ijwie97CfrBi2FHrYXklMIPzAfBgNV
HSMEGDAWgBSrH8ijwie97CfrBi2FHrYXklMIPzAPBgNVHRMBAf8EBTADAQH/MAoG
CCqGSM49BAMCA0gAMEUCIQD7UOLu+rcLm/dJHJSuf5e2ir50RLba0CckxhU6k8N6
CQIgT2qgx2qeRdb4WYLf8FBPLj6UrAHpF7/O6iGqsyty/iQ=
-----END CERTIFICATE-----
)pem";
constexpr char kKeyB[] = R"pem(-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgGEbkEEBnV6fraaoY
vvJfI4Yg1iseuO84+7ZMaPznmBehRANCAAR/IzrLou6IZXb7iSszuFOG93qftpqm
kr6of7AgHEY2/Vd+mkvnC3J2JdliVxrwjtyfJhx1SIDVp+krTdvfNHaI
-----END PRIVATE KEY-----
)pem";
constexpr char kEncryptedKeyA[] = R"pem(-----BEGIN ENCRYPTED PRIVATE KEY-----
MIHsMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAg78ImE6E5M5wICCAAw
DAYIKoZIhvcNAgkFADAdBglghkgBZQMEASoEEKyE0cRgtp/HLVl7ySgFOcEEgZCq
pi4m7MW8jCJvRPyr+7ScHzvtODeiO2wJsCahxx6C56vnDE15ct7otyB0a7OksR1o
gDHFMwNZ18fbR/aMVn6w0dDCSBJKMo1Mnc2K2ryHh7J7aoVNaFQ0hqFOZ/WlmZNd
WbDlrgg3kk3Rrwe/cucKfPMmbKmlyHhF9Fjk+vZh//delJMA9R1ybc7scJi5Oxw=
-----END ENCRYPTED PRIVATE KEY-----
)pem";

std::string BioText(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);  // NOLINT(runtime/int): OpenSSL's type
  return std::string(data, static_cast<size_t>(n));
}

// A self-signed EC P-256 certificate valid from now + `from_s` to now +
// `to_s` seconds, and its key, as PEM {certificate, key}.
std::pair<std::string, std::string> MakeCertificate(long from_s, long to_s) {  // NOLINT
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), from_s);
  X509_gmtime_adj(X509_getm_notAfter(x), to_s);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("t"),
                             -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509_sign(x, key, EVP_sha256());
  BIO* cert_bio = BIO_new(BIO_s_mem());
  BIO* key_bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(cert_bio, x);
  PEM_write_bio_PrivateKey(key_bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::pair<std::string, std::string> out{BioText(cert_bio), BioText(key_bio)};
  BIO_free(cert_bio);
  BIO_free(key_bio);
  X509_free(x);
  EVP_PKEY_free(key);
  return out;
}

class TlsFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("reprod_tls_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }

  std::filesystem::path dir_;
};

TEST_F(TlsFilesTest, ReadsCertificatesAndChains) {
  const std::string one = Write("a.pem", kCertA);
  EXPECT_THAT(ReadCertificatesPem(one, "--tls-ca"), IsOkAndHolds(std::string(kCertA)));
  const std::string chain = Write("chain.pem", std::string(kCertA) + kCertB);
  EXPECT_THAT(ReadCertificatesPem(chain, "--tls-ca"), IsOkAndHolds(std::string(kCertA) + kCertB));
}

TEST_F(TlsFilesTest, BadCertificateFilesNameFlagFileAndReason) {
  const std::string missing = (dir_ / "missing.pem").string();
  EXPECT_THAT(ReadCertificatesPem(missing, "--tls-cert"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--tls-cert " + missing + ": cannot open: No such file")));
  EXPECT_THAT(ReadCertificatesPem(Write("empty.pem", ""), "--tls-ca"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty file")));
  EXPECT_THAT(ReadCertificatesPem(Write("key.pem", kKeyA), "--tls-cert"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("holds a private key, not a certificate")));
  EXPECT_THAT(ReadCertificatesPem(Write("text.pem", "hello\n"), "--tls-ca"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no PEM certificate")));
  // The second certificate of a chain is cut short: named by its position.
  std::string cut = kCertB;
  cut.erase(cut.size() / 2, 40);
  EXPECT_THAT(
      ReadCertificatesPem(Write("cut.pem", std::string(kCertA) + cut), "--tls-ca"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("certificate 2 does not parse")));
}

TEST_F(TlsFilesTest, PrivateKeys) {
  EXPECT_TRUE(ReadPrivateKeyPem(Write("a.key", kKeyA), "--tls-key").ok());
  EXPECT_THAT(ReadPrivateKeyPem(Write("enc.key", kEncryptedKeyA), "--tls-key"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("encrypted")));
  EXPECT_THAT(ReadPrivateKeyPem(Write("a.pem", kCertA), "--tls-key"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("holds a certificate, not a private key")));
  std::string cut = kKeyA;
  cut.erase(40, 30);
  EXPECT_THAT(
      ReadPrivateKeyPem(Write("cut.key", cut), "--tls-key"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("the private key does not parse")));
}

TEST_F(TlsFilesTest, KeyMustMatchTheCertificate) {
  EXPECT_TRUE(CheckKeyMatchesCertificate(kCertA, "a.pem", kKeyA, "a.key").ok());
  EXPECT_THAT(CheckKeyMatchesCertificate(kCertA, "a.pem", kKeyB, "b.key"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--tls-key b.key is not the key of the certificate in "
                                 "--tls-cert a.pem")));
}

TEST(CheckCertificateCurrent, ExpiredAndNotYetValidAreRefusedWithTheDate) {
  const auto [fresh, fresh_key] = MakeCertificate(-60, 86400);
  EXPECT_TRUE(CheckCertificateCurrent(fresh, "fresh.pem").ok());
  const auto [expired, expired_key] = MakeCertificate(-2 * 86400, -86400);
  EXPECT_THAT(CheckCertificateCurrent(expired, "old.pem"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("--tls-cert old.pem: the certificate expired on "),
                             HasSubstr(" GMT"))));
  const auto [future, future_key] = MakeCertificate(86400, 2 * 86400);
  EXPECT_THAT(CheckCertificateCurrent(future, "new.pem"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("is not valid before")));
}

TEST_F(TlsFilesTest, AnExpiredServerCertificateStopsLoadServerTls) {
  const auto [cert, key] = MakeCertificate(-2 * 86400, -86400);
  EXPECT_THAT(LoadServerTls(Write("old.pem", cert), Write("old.key", key), ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expired on")));
}

TEST_F(TlsFilesTest, ServerFlagRules) {
  const std::string cert = Write("a.pem", kCertA);
  const std::string key = Write("a.key", kKeyA);
  const std::string ca = Write("b.pem", kCertB);
  ASSERT_OK_AND_ASSIGN(TlsPem none, LoadServerTls("", "", ""));
  EXPECT_TRUE(none.cert_chain.empty() && none.private_key.empty() && none.ca_certs.empty());
  ASSERT_OK_AND_ASSIGN(TlsPem tls, LoadServerTls(cert, key, ""));
  EXPECT_EQ(tls.cert_chain, kCertA);
  EXPECT_EQ(tls.private_key, kKeyA);
  EXPECT_TRUE(tls.ca_certs.empty());
  ASSERT_OK_AND_ASSIGN(TlsPem mutual, LoadServerTls(cert, key, ca));
  EXPECT_EQ(mutual.ca_certs, kCertB);
  EXPECT_THAT(LoadServerTls(cert, "", ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("go together")));
  EXPECT_THAT(LoadServerTls("", key, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("go together")));
  EXPECT_THAT(LoadServerTls("", "", ca),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--tls-client-ca (mutual TLS) needs --tls-cert")));
  EXPECT_THAT(LoadServerTls(cert, Write("b.key", kKeyB), ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("is not the key")));
}

TEST_F(TlsFilesTest, ClientFlagRules) {
  const std::string ca = Write("b.pem", kCertB);
  const std::string cert = Write("a.pem", kCertA);
  const std::string key = Write("a.key", kKeyA);
  ASSERT_OK_AND_ASSIGN(TlsPem server_only, LoadClientTls(ca, "", ""));
  EXPECT_EQ(server_only.ca_certs, kCertB);
  EXPECT_TRUE(server_only.cert_chain.empty());
  ASSERT_OK_AND_ASSIGN(TlsPem mutual, LoadClientTls(ca, cert, key));
  EXPECT_EQ(mutual.cert_chain, kCertA);
  EXPECT_EQ(mutual.private_key, kKeyA);
  ASSERT_OK_AND_ASSIGN(TlsPem system_roots, LoadClientTls("", cert, key));
  EXPECT_TRUE(system_roots.ca_certs.empty());
  EXPECT_THAT(LoadClientTls(ca, cert, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("go together")));
  EXPECT_THAT(LoadClientTls(Write("a.key", kKeyA), "", ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--tls-ca ")));
}

}  // namespace
}  // namespace reprod::tls
