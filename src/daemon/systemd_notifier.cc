#include "havenoro_relay/daemon/systemd_notifier.h"

#include <systemd/sd-daemon.h>

#include <cstdlib>
#include <string>

namespace havenoro::daemon {
namespace {

// STATUS= is one line; a stray newline would start another assignment.
std::string one_line(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return out;
}

}  // namespace

SystemdNotifier::SystemdNotifier() {
  enabled_ = std::getenv("NOTIFY_SOCKET") != nullptr;
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0)
    watchdog_ = std::chrono::microseconds(usec);
}

void SystemdNotifier::notify(std::string_view message) const {
  if (enabled_) sd_notify(0, std::string(message).c_str());
}

void SystemdNotifier::ready(std::string_view status) const {
  notify("READY=1\nSTATUS=" + one_line(status));
}

void SystemdNotifier::status(std::string_view status) const {
  notify("STATUS=" + one_line(status));
}

void SystemdNotifier::reloading() const {
  notify("RELOADING=1\nSTATUS=reloading the configuration");
}

void SystemdNotifier::stopping() const {
  notify("STOPPING=1\nSTATUS=stopping");
}

void SystemdNotifier::watchdog() const {
  notify("WATCHDOG=1");
}

}  // namespace havenoro::daemon
