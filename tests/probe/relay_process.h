#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace havenoro::probe::testing {

/// How a test relay (tests/support/relay_server.py) behaves.
struct RelayOptions {
  std::string mode = "starttls";           ///< "starttls", "tls" or "plain"
  std::string mechanisms = "PLAIN,LOGIN";  ///< empty: offers no AUTH
  std::string auth_reply;  ///< refuse every AUTH with this reply
  std::filesystem::path cert;
  std::filesystem::path key;
};

/// A real aiosmtpd relay on a free loopback port, running while the
/// object lives. It records every AUTH attempt as an event.
class RelayProcess {
 public:
  /// Starts the relay and waits (bounded) until it listens; `dir` holds
  /// its ready file, events and log. Throws std::runtime_error with the
  /// relay's log when it does not come up.
  RelayProcess(const std::filesystem::path& dir, const RelayOptions& options);
  ~RelayProcess();
  RelayProcess(const RelayProcess&) = delete;
  RelayProcess& operator=(const RelayProcess&) = delete;

  uint16_t port() const { return port_; }
  /// The AUTH attempts the relay saw, one JSON object each.
  std::vector<nlohmann::json> auth_events() const;

 private:
  void wait_until_ready();

  std::filesystem::path dir_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
};

/// A loopback TCP port that was free a moment ago.
uint16_t free_port();

}  // namespace havenoro::probe::testing
