#pragma once

#include <chrono>
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace havenoro::probe {

/// Where the Exim that sends the test message is.
struct TestMessageOptions {
  std::filesystem::path exim_binary = "/usr/sbin/exim4";
  std::filesystem::path exim_config;
  std::filesystem::path main_log;
  /// How long to follow the message in the log before saying it is still
  /// queued.
  std::chrono::milliseconds timeout{15000};
};

/// What became of a test message.
struct TestMessageResult {
  std::string sender;      ///< postmaster@<domain>
  std::string message_id;  ///< Exim's id; empty when it was not accepted
  /// "delivered", "deferred", "bounced", "still queued" or "not accepted".
  std::string outcome;
  std::string router;
  std::string host;
  std::string response;  ///< the relay's answer or Exim's reason
  std::chrono::milliseconds took{0};

  nlohmann::json to_json() const;
};

/// True when `address` is one plain mailbox that can go in an SMTP
/// command unchanged: no blanks, no control characters, one "@".
bool is_plain_address(const std::string& address);

/// Hands a short test message from postmaster@<domain> to `to` to Exim,
/// over SMTP on Exim's standard input (`exim -bs`), so that it takes the
/// route the live configuration gives that domain's mail; then follows it
/// in Exim's main log until it is delivered, deferred or bounced, or the
/// timeout passes. `to` must pass is_plain_address.
TestMessageResult send_test_message(const std::string& domain,
                                    const std::string& to,
                                    const TestMessageOptions& options);

}  // namespace havenoro::probe
