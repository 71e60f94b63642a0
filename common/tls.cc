#include "common/tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace reprod::tls {
namespace {

// PEM files of certificates and keys are a few KiB; anything far larger is
// not one (and is not read into memory whole).
constexpr size_t kMaxPemBytes = 1 << 20;

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

absl::Status Bad(const std::string& flag, const std::string& path, const std::string& reason) {
  return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": ", reason));
}

// The oldest OpenSSL error of this thread as text ("" when none); clears the
// queue.
std::string OpenSslError() {
  const unsigned long e = ERR_get_error();  // NOLINT(runtime/int): OpenSSL's type
  ERR_clear_error();
  if (e == 0) return "";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  return buf;
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path, const std::string& flag) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return Bad(flag, path, absl::StrCat("cannot open: ", std::strerror(errno)));
  std::string data;
  char buf[8192];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) {
    data.append(buf, n);
    if (data.size() > kMaxPemBytes) {
      std::fclose(f);
      return Bad(flag, path, "larger than 1 MiB; not a PEM certificate or key");
    }
  }
  const bool failed = std::ferror(f) != 0;
  const int err = errno;
  std::fclose(f);
  if (failed) return Bad(flag, path, absl::StrCat("cannot read: ", std::strerror(err)));
  if (data.empty()) return Bad(flag, path, "empty file");
  return data;
}

BioPtr MemBio(const std::string& text) {
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

X509Ptr FirstCertificate(const std::string& pem) {
  BioPtr bio = MemBio(pem);
  return X509Ptr(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
}

// "Dec  1 12:00:00 2026 GMT".
std::string AsnTimeText(const ASN1_TIME* t) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr || ASN1_TIME_print(bio.get(), t) != 1) return "(unreadable time)";
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);  // NOLINT(runtime/int): OpenSSL's type
  return std::string(data, static_cast<size_t>(n));
}

// A password callback that supplies none: an encrypted key fails to load
// instead of prompting on the terminal.
int NoPassword(char*, int, int, void*) { return 0; }

PkeyPtr ParseKey(const std::string& pem) {
  BioPtr bio = MemBio(pem);
  return PkeyPtr(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassword, nullptr) : nullptr);
}

}  // namespace

absl::StatusOr<std::string> ReadCertificatesPem(const std::string& path, const std::string& flag) {
  absl::StatusOr<std::string> pem = ReadSmallFile(path, flag);
  if (!pem.ok()) return pem.status();
  if (!absl::StrContains(*pem, "-----BEGIN CERTIFICATE-----")) {
    return Bad(flag, path,
               absl::StrContains(*pem, "PRIVATE KEY-----")
                   ? "holds a private key, not a certificate (swapped with --tls-key?)"
                   : "no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)");
  }
  ERR_clear_error();
  BioPtr bio = MemBio(*pem);
  int count = 0;
  while (true) {
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (cert == nullptr) break;
    ++count;
  }
  // The loop ends at the end of the text (PEM_R_NO_START_LINE) or at a
  // certificate that does not parse.
  const unsigned long last = ERR_peek_last_error();  // NOLINT(runtime/int)
  const bool at_end =
      ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE;
  if (!at_end || count == 0) {
    return Bad(flag, path,
               absl::StrCat("certificate ", count + 1, " does not parse: ", OpenSslError()));
  }
  ERR_clear_error();
  return pem;
}

absl::StatusOr<std::string> ReadPrivateKeyPem(const std::string& path, const std::string& flag) {
  absl::StatusOr<std::string> pem = ReadSmallFile(path, flag);
  if (!pem.ok()) return pem.status();
  if (!absl::StrContains(*pem, "PRIVATE KEY-----")) {
    return Bad(flag, path,
               absl::StrContains(*pem, "-----BEGIN CERTIFICATE-----")
                   ? "holds a certificate, not a private key (swapped with --tls-cert?)"
                   : "no PEM private key in it (expected -----BEGIN PRIVATE KEY-----)");
  }
  if (absl::StrContains(*pem, "ENCRYPTED")) {
    return Bad(flag, path,
               "the private key is encrypted; give an unencrypted one (`openssl pkey -in KEY "
               "-out KEY.plain`) and protect it with file permissions");
  }
  ERR_clear_error();
  if (ParseKey(*pem) == nullptr) {
    return Bad(flag, path, absl::StrCat("the private key does not parse: ", OpenSslError()));
  }
  return pem;
}

absl::Status CheckKeyMatchesCertificate(const std::string& cert_pem, const std::string& cert_path,
                                        const std::string& key_pem, const std::string& key_path) {
  ERR_clear_error();
  X509Ptr cert = FirstCertificate(cert_pem);
  PkeyPtr key = ParseKey(key_pem);
  if (cert == nullptr || key == nullptr || X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat("--tls-key ", key_path,
                                                   " is not the key of the certificate in "
                                                   "--tls-cert ",
                                                   cert_path));
  }
  return absl::OkStatus();
}

absl::Status CheckCertificateCurrent(const std::string& cert_pem, const std::string& cert_path) {
  ERR_clear_error();
  X509Ptr cert = FirstCertificate(cert_pem);
  if (cert == nullptr) {
    return Bad("--tls-cert", cert_path,
               absl::StrCat("certificate 1 does not parse: ", OpenSslError()));
  }
  const ASN1_TIME* not_before = X509_get0_notBefore(cert.get());
  const ASN1_TIME* not_after = X509_get0_notAfter(cert.get());
  if (X509_cmp_current_time(not_after) < 0) {
    return Bad("--tls-cert", cert_path,
               absl::StrCat("the certificate expired on ", AsnTimeText(not_after),
                            "; peers refuse it (make a new one)"));
  }
  if (X509_cmp_current_time(not_before) > 0) {
    return Bad("--tls-cert", cert_path,
               absl::StrCat("the certificate is not valid before ", AsnTimeText(not_before),
                            " (is this machine's clock right?)"));
  }
  return absl::OkStatus();
}

namespace {

// Reads --tls-cert and --tls-key (both given) and matches them.
absl::Status LoadKeyPair(const std::string& cert_file, const std::string& key_file, TlsPem* out) {
  absl::StatusOr<std::string> cert = ReadCertificatesPem(cert_file, "--tls-cert");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPrivateKeyPem(key_file, "--tls-key");
  if (!key.ok()) return key.status();
  if (absl::Status s = CheckKeyMatchesCertificate(*cert, cert_file, *key, key_file); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckCertificateCurrent(*cert, cert_file); !s.ok()) return s;
  out->cert_chain = *std::move(cert);
  out->private_key = *std::move(key);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TlsPem> LoadServerTls(const std::string& cert_file, const std::string& key_file,
                                     const std::string& client_ca_file) {
  TlsPem pem;
  if (cert_file.empty() != key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert and --tls-key go together: give both (TLS) or neither (plaintext)");
  }
  if (cert_file.empty()) {
    if (!client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key: the server must "
          "present a certificate too");
    }
    return pem;
  }
  if (absl::Status s = LoadKeyPair(cert_file, key_file, &pem); !s.ok()) return s;
  if (!client_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadCertificatesPem(client_ca_file, "--tls-client-ca");
    if (!ca.ok()) return ca.status();
    pem.ca_certs = *std::move(ca);
  }
  return pem;
}

absl::StatusOr<TlsPem> LoadClientTls(const std::string& ca_file, const std::string& cert_file,
                                     const std::string& key_file) {
  TlsPem pem;
  if (cert_file.empty() != key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert and --tls-key go together: the client certificate of mutual TLS needs "
        "its key");
  }
  if (!ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadCertificatesPem(ca_file, "--tls-ca");
    if (!ca.ok()) return ca.status();
    pem.ca_certs = *std::move(ca);
  }
  if (!cert_file.empty()) {
    if (absl::Status s = LoadKeyPair(cert_file, key_file, &pem); !s.ok()) return s;
  }
  return pem;
}

}  // namespace reprod::tls
