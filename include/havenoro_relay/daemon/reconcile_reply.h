#pragma once

#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
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
  /// For kAll: the reconcile ended a rollback's pin (release_pin) ...
  bool release_pin = false;
  /// ... or confirmed a held-back mass removal (confirm_removals).
  bool confirm_removals = false;

  /// "example.com", "the server-wide relay" or "the panel tree".
  std::string describe() const;
};

/// An apply as a reconcile reply sums it up: result, timing, generation,
/// how many files and domains, its errors and rejected settings (the
/// first few, with their totals). Nothing in it grows with the tree, and
/// no secret.
nlohmann::json summary_json(const engine::ApplyOutcome& outcome);

/// `"apply": summary_json(outcome)`, encoded for Reply::encoded.
EncodedMembers encode_summary(const engine::ApplyOutcome& outcome);

/// Encodes each apply's summary once for all the requests that waited
/// for it: a bulk edit's hundreds of save hooks share one. Thread-safe.
class ApplySummaries {
 public:
  /// The encoded summary of `outcome`.
  EncodedMembers of(const std::shared_ptr<const engine::ApplyOutcome>& outcome);

 private:
  std::mutex mutex_;
  std::weak_ptr<const engine::ApplyOutcome> outcome_;  ///< not kept alive
  EncodedMembers summary_;
};

/// The reply to a reconcile that waited for `outcome`: success when the
/// target's change went live and Exim confirmed it (or nothing needed to
/// change), an error with the reason on one line when its settings were
/// rejected or the apply failed. A full reconcile's text first says what
/// was done ("pin released; applied: generation 4 live, Exim reloaded"),
/// then what was rejected or held back, so that a result of 1 still
/// tells that the rest went live. `arguments` holds the target domain's
/// own outcome, `summary` (from encode_summary or ApplySummaries) is
/// added as `apply`. `server_error` says why the server-wide relay is
/// rejected after the apply, if it is; only a server target reads it.
Reply reconcile_reply(const engine::ApplyOutcome& outcome,
                      const ReconcileTarget& target, EncodedMembers summary,
                      const std::optional<std::string>& server_error = {});

/// The reply to a reconcile that waited for an apply that will not come:
/// the daemon is stopping and dropped the request, and the next start's
/// resync applies the change. An error, so that the save hook's client
/// does not take the change for live.
Reply stopping_reply(const ReconcileTarget& target);

}  // namespace havenoro::daemon
