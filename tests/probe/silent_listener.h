#pragma once

#include <cstdint>

namespace havenoro::probe::testing {

/// A loopback port where connections succeed and nothing is ever said:
/// the kernel completes the handshake for the listen backlog, and no one
/// reads or writes. To a client it is a relay that accepted and hangs.
class SilentListener {
 public:
  /// Throws std::runtime_error when no socket can be bound.
  SilentListener();
  ~SilentListener();
  SilentListener(const SilentListener&) = delete;
  SilentListener& operator=(const SilentListener&) = delete;

  uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

}  // namespace havenoro::probe::testing
