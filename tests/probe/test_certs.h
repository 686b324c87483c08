#pragma once

#include <filesystem>

namespace havenoro::probe::testing {

/// A throwaway CA and the certificates it signed, made once per test
/// binary with the openssl CLI in a temporary directory (mode 0755, so a
/// relay under another user could read them), removed at exit.
struct TestCerts {
  std::filesystem::path dir;
  std::filesystem::path ca;  ///< the CA certificate (PEM)
  /// CN=localhost, SAN DNS:localhost, IP:127.0.0.1.
  std::filesystem::path localhost_cert;
  std::filesystem::path localhost_key;
  /// CN=other.test, SAN DNS:other.test: valid, but for another name.
  std::filesystem::path other_cert;
  std::filesystem::path other_key;
};

/// The certificates, made on first use. Throws std::runtime_error when
/// openssl fails.
const TestCerts& test_certs();

}  // namespace havenoro::probe::testing
