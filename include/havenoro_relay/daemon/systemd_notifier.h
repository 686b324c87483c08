#pragma once

#include <chrono>
#include <optional>
#include <string_view>

namespace havenoro::daemon {

/// Tells systemd how the daemon is doing (sd_notify): ready after the
/// first apply, a one-line STATUS= kept current, reloading, stopping, and
/// the watchdog's keep-alive. Without NOTIFY_SOCKET (not started by
/// systemd) every call does nothing. Thread-safe.
class SystemdNotifier {
 public:
  SystemdNotifier();

  /// True when systemd listens.
  bool enabled() const { return enabled_; }

  void ready(std::string_view status) const;
  void status(std::string_view status) const;
  void reloading() const;
  void stopping() const;
  void watchdog() const;

  /// How often the watchdog wants to hear from us, when it is on.
  std::optional<std::chrono::microseconds> watchdog_interval() const {
    return watchdog_;
  }

 private:
  void notify(std::string_view message) const;

  bool enabled_ = false;
  std::optional<std::chrono::microseconds> watchdog_;
};

}  // namespace havenoro::daemon
