#pragma once

#include "havenoro_relay/daemon/apply_loop.h"
#include "havenoro_relay/daemon/control_server.h"
#include "havenoro_relay/daemon/daemon_info.h"

namespace havenoro::daemon {

/// The control socket's commands (docs/control-protocol.md): status-get,
/// domain-list, domain-get, reconcile, config-test and version-get. Reads
/// go to the Engine's thread-safe status; reconcile and config-test are
/// queued for the applying thread and answer when it is done. `loop` and
/// `info` must outlive the table. `after_panel_changes` (may be empty)
/// is given each reconcile before it is queued, to run it once the
/// applying thread has what the watcher saw until then, which the request
/// comes after; the watcher lives on another thread than the socket.
CommandTable make_commands(
    ApplyLoop& loop, const DaemonInfo& info,
    std::function<void(std::function<void()>)> after_panel_changes = {});

}  // namespace havenoro::daemon
