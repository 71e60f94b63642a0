// File: common/tls.h
//
// TLS material for reprod's listeners and clients, read from PEM files and
// checked with OpenSSL before use, so that a bad file is an InvalidArgument
// naming the flag, the file and the reason at startup rather than a failed
// handshake later. Only file handling lives here; the gRPC credentials are
// built by the server (server/server.cc) and the client
// (client/cpp/remote_client.cc), and the HTTP listener can reuse the same
// TlsPem later.
//
//   absl::StatusOr<TlsPem> pem = LoadServerTls(cert, key, client_ca);  // reprodd
//   absl::StatusOr<TlsPem> pem = LoadClientTls(ca, cert, key);         // reprodctl
//
// The flag names in messages are those both binaries use: --tls-cert,
// --tls-key, --tls-client-ca (server), --tls-ca (client).
//
// Thread-safety: reentrant functions.
#ifndef REPROD_COMMON_TLS_H_
#define REPROD_COMMON_TLS_H_

#include <string>

#include "absl/status/statusor.h"

namespace reprod::tls {

// PEM text; an empty member was not given.
struct TlsPem {
  std::string cert_chain;   // leaf certificate first, then intermediates
  std::string private_key;  // the leaf certificate's key
  std::string ca_certs;     // certificates that peers are verified against
};

// Reads `path` and checks that it holds at least one PEM certificate (all of
// them parse). InvalidArgument "FLAG PATH: REASON" otherwise (unreadable,
// empty, not PEM, a certificate that does not parse).
absl::StatusOr<std::string> ReadCertificatesPem(const std::string& path, const std::string& flag);

// Reads `path` and checks that it holds an unencrypted PEM private key.
// InvalidArgument "FLAG PATH: REASON" otherwise.
absl::StatusOr<std::string> ReadPrivateKeyPem(const std::string& path, const std::string& flag);

// OK when the first certificate of `cert_pem` belongs to `key_pem`;
// InvalidArgument naming both files otherwise.
absl::Status CheckKeyMatchesCertificate(const std::string& cert_pem, const std::string& cert_path,
                                        const std::string& key_pem, const std::string& key_path);

// OK when the first certificate of `cert_pem` (--tls-cert `cert_path`) is
// valid now; InvalidArgument with its expiry (or start) date otherwise.
absl::Status CheckCertificateCurrent(const std::string& cert_pem, const std::string& cert_path);

// The server side: `cert_file` and `key_file` (--tls-cert, --tls-key) both or
// neither; `client_ca_file` (--tls-client-ca, mutual TLS) needs them. All
// empty: an empty TlsPem (plaintext). Every file read and checked, the key
// matched to the certificate, the certificate valid now. InvalidArgument on any problem.
absl::StatusOr<TlsPem> LoadServerTls(const std::string& cert_file, const std::string& key_file,
                                     const std::string& client_ca_file);

// The client side: `ca_file` (--tls-ca; empty = the system's roots) and, for
// mutual TLS, `cert_file` and `key_file` (--tls-cert, --tls-key), both or
// neither. Same checks as LoadServerTls.
absl::StatusOr<TlsPem> LoadClientTls(const std::string& ca_file, const std::string& cert_file,
                                     const std::string& key_file);

}  // namespace reprod::tls

#endif  // REPROD_COMMON_TLS_H_
