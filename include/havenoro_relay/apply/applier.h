#pragma once

#include <string>
#include <vector>

#include "havenoro_relay/config/daemon_config.h"
#include "havenoro_relay/model/relay_model.h"

namespace havenoro::apply {

/// What one apply did.
struct ApplyReport {
  unsigned long generation = 0;      ///< live generation afterwards (0: none)
  bool new_generation = false;       ///< the snippets changed
  bool reloaded = false;             ///< Exim was signalled and came back
  std::vector<std::string> written;  ///< files written, relative paths
  std::vector<std::string> removed;  ///< files or directories removed
  std::vector<std::string> errors;   ///< why the apply failed, if it did

  bool ok() const { return errors.empty(); }
  bool unchanged() const {
    return ok() && !new_generation && written.empty() && removed.empty();
  }
};

/// Turns a relay model into the live Exim files: renders the snippets and
/// credential files, checks the candidate with the real Exim, writes what
/// differs from what is live, switches generations in one rename and
/// reloads Exim only when the snippets changed. A candidate Exim rejects
/// changes nothing that is live.
class Applier {
 public:
  explicit Applier(config::DaemonConfig config);

  /// Applies `model`. Expected failures are reported in the result; throws
  /// only for the unexpected (std::system_error from the file system).
  ApplyReport apply(const model::RelayModel& model);

 private:
  config::DaemonConfig config_;
};

}  // namespace havenoro::apply
