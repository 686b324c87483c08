#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace havenoro::probe::testing {

/// A plain-text SMTP server on a loopback port that answers from a
/// script: for answers no real relay here gives (unknown AUTH mechanisms,
/// replies that are not SMTP, a password echoed back). Serves one
/// connection, then stops.
class ScriptedRelay {
 public:
  /// `banner` is sent on connect, raw (CR LF included); `replies` maps a
  /// command's first word (upper case) to its raw answer. Unknown commands
  /// get "502 5.5.2 not scripted". QUIT closes after its answer.
  ScriptedRelay(std::string banner, std::map<std::string, std::string> replies);
  ~ScriptedRelay();
  ScriptedRelay(const ScriptedRelay&) = delete;
  ScriptedRelay& operator=(const ScriptedRelay&) = delete;

  uint16_t port() const { return port_; }
  /// The command lines received, CR LF removed.
  std::vector<std::string> received();

 private:
  void serve();
  void converse(int fd);

  std::string banner_;
  std::map<std::string, std::string> replies_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::mutex mutex_;
  std::vector<std::string> received_;
  std::thread thread_;
};

}  // namespace havenoro::probe::testing
