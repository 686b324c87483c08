#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace havenoro::probe {

/// What replaces a secret wherever it would be shown.
inline constexpr std::string_view kRedacted = "<redacted>";

/// Hides secrets in text that came from the network or was built around
/// it: each registered secret, byte for byte, becomes "<redacted>".
class Redactor {
 public:
  /// Registers a secret; empty ones are ignored.
  void add_secret(std::string secret);
  /// Registers a password together with the forms it travels in: its
  /// base64 (AUTH LOGIN) and the base64 of the AUTH PLAIN response.
  void add_credentials(const std::string& username,
                       const std::string& password);

  /// The text with every secret replaced.
  std::string redact(std::string_view text) const;
  /// redact() and then printable(): fit for a transcript, a reply or a
  /// log. Secrets go first so that an escaped secret cannot slip through.
  std::string clean(std::string_view text) const;

 private:
  std::vector<std::string> secrets_;
};

/// The text with bytes outside printable ASCII written as "\xNN", so that
/// whatever a server sends stays one readable line of valid UTF-8.
std::string printable(std::string_view text);

/// The SMTP dialogue as an admin reads it: "C: " for what the probe sent,
/// "S: " for what the relay answered, "* " for events such as "TLS
/// started". No line ever holds a secret.
class Transcript {
 public:
  explicit Transcript(Redactor redactor) : redactor_(std::move(redactor)) {}

  /// A command the probe sent that holds no credential.
  void client(std::string_view line);
  /// A line that carries a credential: recorded as `shown` followed by
  /// "<redacted>" ("AUTH PLAIN " + "<redacted>", or "" for a LOGIN line).
  void client_redacted(std::string_view shown);
  /// A reply line as the relay sent it.
  void server(std::string_view line);
  /// An event of the connection, not part of the dialogue.
  void note(std::string_view text);

  const std::vector<std::string>& lines() const { return lines_; }
  const Redactor& redactor() const { return redactor_; }

 private:
  Redactor redactor_;
  std::vector<std::string> lines_;
};

}  // namespace havenoro::probe
