#pragma once

#include <chrono>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "havenoro_relay/panel/relay_settings.h"

namespace havenoro::probe {

/// How a probe runs. The defaults suit the panel's Test button: an answer
/// within seconds, even from a relay that never says a word.
struct ProbeOptions {
  /// "system" for the system's CA store, or the path of a PEM file of CA
  /// certificates (the daemon's `tls_ca_certificates`).
  std::string ca_certificates = "system";
  /// The longest any one step (resolve, connect, one reply) may take.
  std::chrono::milliseconds step_timeout{5000};
  /// The longest the whole probe may take.
  std::chrono::milliseconds total_timeout{15000};
  /// The name given in EHLO; empty means this machine's host name.
  std::string helo_name;
};

/// What the TLS session showed about the relay.
struct TlsInfo {
  std::string mode;      ///< "implicit" (from the first byte) or "starttls"
  std::string protocol;  ///< "TLSv1.3"
  std::string cipher;
  std::string subject;  ///< the relay certificate's subject, RFC 2253
  std::string issuer;
  /// True only when verification was on and the certificate chains to a
  /// trusted CA and names the relay's host.
  bool verified = false;
  /// Why it is (not) verified, or what a check would have found when
  /// verification is off.
  std::string verify_detail;
};

/// One step of the probe: "resolve", "connect", "tls", "banner", "ehlo",
/// "auth", "quit". A step that does not apply to these settings is
/// reported as ok with a detail that starts with "skipped".
struct ProbeStep {
  std::string name;
  bool ok = false;
  std::chrono::milliseconds took{0};
  std::string detail;
};

/// The outcome of a probe. No member ever holds the password or a form of
/// it that the relay could decode (base64 included).
struct ProbeResult {
  /// Every step up to AUTH succeeded. A relay that does not answer QUIT
  /// still works; its quit step shows it.
  bool works = false;
  std::string relay;     ///< "smtp.example.com:587"
  std::string tls_mode;  ///< "implicit", "starttls" or "none"
  std::vector<ProbeStep> steps;
  /// The SMTP dialogue, credentials shown as "<redacted>".
  std::vector<std::string> transcript;
  /// One line for the panel: "works", or the failed step, the relay's
  /// answer and the hint.
  std::string verdict;
  std::string failed_step;  ///< empty when it works
  std::string hint;         ///< what to change; empty when it works
  std::optional<TlsInfo> tls;
  std::vector<std::string> capabilities;  ///< of the last EHLO
  std::string auth_mechanism;             ///< "PLAIN", "LOGIN" or empty
  std::chrono::milliseconds took{0};

  /// The result as the control socket's `relay-test` reply carries it.
  nlohmann::json to_json() const;
};

/// Connects to the relay with these settings and goes through the steps
/// Exim would take, up to AUTH, then says QUIT. Sends no message. Never
/// sends credentials without TLS unless `security` is "none", and talks
/// to nobody but the configured host. Expected failures are values in the
/// result; throws only what it cannot report (std::bad_alloc).
ProbeResult probe_relay(const panel::RelaySettings& relay,
                        const ProbeOptions& options);

}  // namespace havenoro::probe
