#pragma once

#include "havenoro_relay/config/daemon_config.h"

namespace havenoro::daemon {

/// `havenoro-relayd --once`: applies the panel's settings once. Prints
/// each problem on one line of standard error and sums up the apply on
/// standard output (docs/configuration.md). Returns the exit status: 0
/// when everything applied, 1 when something was rejected or failed.
int apply_once(const config::DaemonConfig& config,
               bool confirm_removals = false);

}  // namespace havenoro::daemon
