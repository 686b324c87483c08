#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "havenoro_relay/status/log_tail.h"

namespace havenoro::status {

/// One line of Exim's main log about a message:
/// "2026-12-03 09:02:17 1xZ2hd-00012N-0R => rcpt R=... T=...".
struct LogLine {
  std::string_view time;  ///< "YYYY-MM-DD HH:MM:SS"
  std::string_view id;    ///< the message id
  std::string_view flag;  ///< "<=", "=>", "==", "**", ... or another word
  std::string_view rest;  ///< what follows the flag
};

/// Splits a main log line; nothing for lines not about a message.
std::optional<LogLine> parse_log_line(std::string_view line);

/// The value of ` KEY=value` in a line's rest: a quoted value without its
/// quotes, `H=` with its bracketed address.
std::string log_field(std::string_view rest, std::string_view key);

/// One delivery attempt through a havenoro relay, as Exim logged it.
struct DeliveryEvent {
  std::string time;  ///< Exim's "YYYY-MM-DD HH:MM:SS"
  std::string message_id;
  std::string outcome;   ///< "delivered", "deferred" or "bounced"
  std::string router;    ///< havenoro_relay or havenoro_default
  std::string host;      ///< "name [address]", when Exim named one
  std::string response;  ///< the relay's answer or Exim's reason
};

/// What Exim's main log says about one sender domain's relayed mail.
struct DomainDeliveries {
  std::optional<DeliveryEvent> last_delivery;
  std::optional<DeliveryEvent> last_failure;
};

/// Follows Exim's main log and keeps, per sender domain, the last delivery
/// through a havenoro router and the last failure there. It reads only
/// what was appended since the last call, so its cost follows the mail
/// traffic, not the log's size; a rotated log (new inode, or shorter) is
/// read from its start. Memory is bounded: message ids whose outcome was
/// never logged are forgotten beyond a fixed number.
class DeliveryLog {
 public:
  explicit DeliveryLog(std::filesystem::path main_log);

  /// Reads what was appended since the last call. Returns the number of
  /// lines read. A missing log is not an error.
  size_t poll();

  /// Feeds one log line; poll() calls this, tests may too.
  void absorb(std::string_view line);

  /// The deliveries of one sender domain (lowercase), if any were seen.
  const DomainDeliveries* find(const std::string& domain) const;

 private:
  LogTail tail_;
  // Message id -> sender domain, from the "<=" arrival lines.
  std::unordered_map<std::string, std::string> senders_;
  std::map<std::string, DomainDeliveries> domains_;
};

}  // namespace havenoro::status
