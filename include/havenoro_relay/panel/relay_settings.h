#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace havenoro::panel {

/// How the connection to a relay is secured (contract §1, `security`).
enum class Security { kAuto, kTls, kStarttls, kNone };

/// One relay as the panel stored it, after validation.
struct RelaySettings {
  std::string host;  ///< DNS name, IPv4 or bare IPv6 address
  uint16_t port = 587;
  Security security = Security::kAuto;
  std::string username;  ///< empty: the relay accepts the server by address
  std::string password;
  bool verify_certificate = true;

  /// True when TLS starts with the first byte (port 465 in auto mode).
  bool implicit_tls() const;
  /// True unless the panel chose plain text.
  bool requires_tls() const { return security != Security::kNone; }
  bool authenticates() const { return !username.empty(); }

  bool operator==(const RelaySettings&) const = default;
};

/// A value the panel stored that cannot be used; names the field as the
/// panel's JSON spells it (`smtp_relay.port`). Never quotes a secret.
struct FieldError {
  std::string field;
  std::string message;
};

/// Options that decide what counts as a valid relay.
struct RelayRules {
  bool allow_private_addresses = false;
};

/// The outcome of reading an `smtp_relay` object.
struct RelayParse {
  std::optional<RelaySettings> relay;  ///< empty: no relay (absent, disabled)
  std::optional<FieldError> error;     ///< set when the object is unusable
  std::vector<std::string> warnings;   ///< usable, but worth telling
};

/// Reads the `smtp_relay` member of a domain's or the server's settings.
/// `value` may be null (no relay). Unknown keys are ignored.
RelayParse parse_relay(const nlohmann::json* value, const RelayRules& rules);

/// Checks a DNS name, an IPv4 address or a bare IPv6 address.
std::optional<std::string> check_host(std::string_view host,
                                      const RelayRules& rules);

/// Checks that a username or password can be stored and sent: valid UTF-8
/// without NUL, CR or LF. The message never quotes the value.
std::optional<std::string> check_secret_text(std::string_view value);

/// A value the panel stored, quoted for a one-line message: control
/// characters are shown as \xNN so that a CR or LF cannot split the line.
/// Only for values that are not secrets.
std::string quote_value(std::string_view value);

/// True for a DNS name made of letters, digits and hyphens (and, when
/// `allow_underscore`, underscores), labels of 1-63, 253 at most.
bool is_dns_name(std::string_view name, bool allow_underscore = false);

}  // namespace havenoro::panel
