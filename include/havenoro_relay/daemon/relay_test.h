#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>

#include "havenoro_relay/config/daemon_config.h"
#include "havenoro_relay/daemon/apply_loop.h"
#include "havenoro_relay/daemon/control_server.h"

namespace havenoro::daemon {

/// The longest bound a relay-test request may ask for (`timeout_s`). The
/// configured bounds add up to no more (60 s for the probe, 60 s for the
/// message at most), so a client that waits a little longer than this
/// always hears the daemon's verdict rather than its own timeout.
inline constexpr std::chrono::seconds kMaxRelayTestTimeout{120};

/// How long the parts of one relay test may take.
struct RelayTestBounds {
  std::chrono::milliseconds step;     ///< any one step of the probe
  std::chrono::milliseconds probe;    ///< the whole probe
  std::chrono::milliseconds message;  ///< the test message, at most
  std::chrono::milliseconds whole;    ///< the test, from start to reply
};

/// The bounds of one test. Without `requested` they are the configured
/// ones: `probe_step_timeout_s`, `probe_timeout_s`, and with a message
/// `test_message_timeout_s`; `whole` is their sum. With `requested` (the
/// request's `timeout_s`), `whole` is that: the probe may use all of it,
/// or half when a message follows, and the message whatever the probe
/// left. A step never gets more than the probe.
RelayTestBounds relay_test_bounds(
    const config::DaemonConfig& config,
    std::optional<std::chrono::milliseconds> requested, bool with_message);

/// The `relay-test` command (the panel's Test button): probes the relay
/// of a domain (`"domain"`) or the server-wide one (`"server": true`; one
/// of the two, not both) with the settings as the panel stored them,
/// applied or not, and with `"to"` also sends a test message through Exim
/// and follows it; `"timeout_s"` (1-120) bounds the whole test instead of
/// the configuration. Bad arguments get a kBadRequest reply. The test runs
/// on a thread of its own and reads the panel's file itself, so it never
/// waits for an apply and a slow relay never holds one up. At most a few
/// tests run at once. Never a password in the reply.
void relay_test(ApplyLoop& loop, const nlohmann::json& args, Responder respond);

/// Tells the client of every relay test still running that it did not
/// finish because the daemon stops; what the test finds later is dropped
/// (a request is answered once).
void answer_running_relay_tests();

}  // namespace havenoro::daemon
