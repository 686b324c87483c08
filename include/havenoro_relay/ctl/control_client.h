#pragma once

#include <chrono>
#include <filesystem>
#include <stdexcept>

#include "havenoro_relay/daemon/control_protocol.h"

namespace havenoro::ctl {

/// The daemon could not be reached, did not answer in time, or answered
/// with something that is not a reply. The message is one line.
class Unreachable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// One request to the daemon's control socket and its reply, within a
/// time limit for the whole exchange.
class ControlClient {
 public:
  ControlClient(std::filesystem::path socket, std::chrono::milliseconds timeout)
      : socket_(std::move(socket)), timeout_(timeout) {}

  /// Sends `request` and returns the reply. Throws Unreachable.
  daemon::Reply call(const daemon::Request& request) const;

 private:
  std::filesystem::path socket_;
  std::chrono::milliseconds timeout_;
};

}  // namespace havenoro::ctl
