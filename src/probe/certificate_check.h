#pragma once

#include <boost/asio/ssl.hpp>
#include <memory>
#include <string>

#include "havenoro_relay/probe/relay_probe.h"

namespace havenoro::probe {

/// Checks the relay's certificate as OpenSSL walks its chain, and keeps
/// what it found: a failed handshake can then say why, and a handshake
/// with verification off can still say what a check would have found.
class CertificateCheck {
 public:
  /// `host` is the relay's host as configured (a name or an address);
  /// with `enforce` false every certificate is accepted, but still checked.
  CertificateCheck(std::string host, bool enforce)
      : host_(std::move(host)), enforce_(enforce) {}

  /// The callback for asio::ssl::stream::set_verify_callback: the chain
  /// as OpenSSL judged it, then asio::ssl::host_name_verification.
  bool verify(bool preverified, boost::asio::ssl::verify_context& context);

  bool enforced() const { return enforce_; }
  /// True once the whole chain and the host name checked out.
  bool passed() const { return reached_leaf_ && problem_.empty(); }
  /// The first problem found; empty when none.
  const std::string& problem() const { return problem_; }
  bool name_mismatch() const { return name_mismatch_; }
  const std::string& subject() const { return subject_; }
  const std::string& issuer() const { return issuer_; }

 private:
  void note_problem(std::string problem);

  std::string host_;
  bool enforce_;
  bool reached_leaf_ = false;
  bool name_mismatch_ = false;
  std::string problem_;
  std::string subject_;
  std::string issuer_;
};

/// A TLS client context that trusts `ca_certificates`: "system" for the
/// system's store, else a PEM file. Throws std::runtime_error naming the
/// file when it cannot be read.
std::unique_ptr<boost::asio::ssl::context> make_tls_context(
    const std::string& ca_certificates);

/// What a finished (or failed) handshake showed. `ssl` may be null.
TlsInfo describe_tls(SSL* ssl, const CertificateCheck& check, std::string mode,
                     const std::string& ca_certificates);

}  // namespace havenoro::probe
