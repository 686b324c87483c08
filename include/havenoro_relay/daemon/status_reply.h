#pragma once

#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "havenoro_relay/daemon/apply_loop.h"
#include "havenoro_relay/daemon/control_protocol.h"
#include "havenoro_relay/daemon/daemon_info.h"

namespace havenoro::daemon {

/// The status-get reply. Its document changes with an apply, not with a
/// request: it is encoded once per change and shared by every request
/// until the next, and a request adds only what moves on its own
/// (`uptime_s`, `applies`, `queued`). A status page polled by many
/// clients costs the daemon a copy of a string each. Thread-safe; `loop`
/// and `info` must outlive it.
class StatusReply {
 public:
  StatusReply(const ApplyLoop& loop, const DaemonInfo& info);

  /// The reply to a status-get now.
  Reply now() const;

 private:
  struct Encoded {
    std::shared_ptr<const nlohmann::json> engine_status;
    unsigned long info_version = 0;
    std::string text;
    EncodedMembers members;
  };

  std::shared_ptr<const Encoded> current() const;

  const ApplyLoop& loop_;
  const DaemonInfo& info_;
  mutable std::mutex mutex_;
  mutable std::shared_ptr<const Encoded> encoded_;
};

}  // namespace havenoro::daemon
