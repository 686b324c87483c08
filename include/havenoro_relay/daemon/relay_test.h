#pragma once

#include <nlohmann/json.hpp>

#include "havenoro_relay/daemon/apply_loop.h"
#include "havenoro_relay/daemon/control_server.h"

namespace havenoro::daemon {

/// The `relay-test` command (the panel's Test button): probes the relay
/// of a domain (`"domain"`) or the server-wide one (`"server": true`) with
/// the settings as the panel stored them, applied or not, and with `"to"`
/// also sends a test message through Exim and follows it. The settings are
/// read on the applying thread (one file); the probe runs on a thread of
/// its own, so a slow relay never holds up applies. At most a few tests
/// run at once. Never a password in the reply.
void relay_test(ApplyLoop& loop, const nlohmann::json& args, Responder respond);

}  // namespace havenoro::daemon
