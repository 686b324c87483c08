#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "havenoro_relay/daemon/control_protocol.h"
#include "havenoro_relay/engine/engine.h"

namespace havenoro::daemon {

/// What a reconcile asked for: one domain, the server-wide relay, or the
/// whole tree.
struct ReconcileTarget {
  enum class Kind { kDomain, kServer, kAll };
  Kind kind = Kind::kAll;
  std::string domain;  ///< for kDomain

  /// "example.com", "the server-wide relay" or "the panel tree".
  std::string describe() const;
};

/// An apply outcome as JSON: what it covered and did. No secret.
nlohmann::json outcome_json(const engine::ApplyOutcome& outcome);

/// The reply to a reconcile that waited for `outcome`: success when the
/// target's change went live and Exim confirmed it (or nothing needed to
/// change), an error with the reason on one line when its settings were
/// rejected or the apply failed. `status` is the Engine's status after
/// the apply; it says whether the server-wide relay was rejected.
Reply reconcile_reply(const engine::ApplyOutcome& outcome,
                      const ReconcileTarget& target,
                      const nlohmann::json& status);

}  // namespace havenoro::daemon
