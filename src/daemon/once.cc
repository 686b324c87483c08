#include "havenoro_relay/daemon/once.h"

#include <fmt/format.h>

#include <chrono>
#include <iostream>

#include "havenoro_relay/apply/applier.h"
#include "havenoro_relay/model/relay_model.h"
#include "havenoro_relay/panel/panel_reader.h"

namespace havenoro::daemon {
namespace {

void print_problems(const model::RelayModel& m) {
  for (const auto& p : m.problems()) {
    std::cerr << "havenoro-relayd: rejected: " << p.text() << "\n";
  }
  for (const auto& w : m.all_warnings()) {
    std::cerr << "havenoro-relayd: warning: " << w.text() << "\n";
  }
}

std::string summary(const model::RelayModel& m, const apply::ApplyReport& r) {
  const char* event = !r.ok()         ? "apply.failed"
                      : r.unchanged() ? "apply.unchanged"
                                      : "apply.done";
  return fmt::format(
      "{} generation={} relayed={} default={} suspended={} rejected={} "
      "written={} removed={} held_back={} reloaded={}",
      event, r.generation, m.count(model::Route::kRelay),
      m.count(model::Route::kDefault), m.count(model::Route::kSuspended),
      m.problems().size(), r.written.size(), r.removed.size(),
      r.held_back.size(), r.reloaded ? "yes" : "no");
}

// How long --once waits for the daemon's apply to end: a save's takes
// milliseconds, a full resync of 10,000 domains a second, one with an
// Exim reload (and a restart after a failed one) up to reload_timeout_s
// twice. Past that the daemon is stuck or applying without a pause.
constexpr std::chrono::seconds kOnceLockWait{30};

// The one line --once prints when the lock stayed busy. While the daemon
// runs, it is the one to ask: it applies what the panel says too.
std::string busy_line(const apply::Applier::Hold& hold) {
  std::string line = "havenoro-relayd: " + hold.busy();
  if (hold.holder().name == "daemon") {
    line +=
        "; while the daemon runs, apply with havenoro-relayctl reconcile "
        "--wait (add --confirm-removals to confirm a mass removal)";
  }
  return line;
}

}  // namespace

int apply_once(const config::DaemonConfig& config, bool confirm_removals) {
  apply::Applier applier(config);
  applier.set_lock_wait("once", kOnceLockWait);
  // Held from before the panel is read: settings read before the daemon's
  // last apply would put back what an older save said.
  auto hold = applier.hold();
  if (!hold.held()) {
    std::cerr << busy_line(hold) << "\n";
    return 1;
  }

  panel::RelayRules rules{config.allow_private_relays};
  auto snapshot = panel::read_panel(config.panel_root, rules);
  auto relay_model = model::build_relay_model(snapshot);
  print_problems(relay_model);

  auto scope = apply::ApplyScope::all();
  scope.confirm_removals = confirm_removals;
  auto report = applier.apply(relay_model, scope);
  for (const auto& e : report.errors) {
    std::cerr << "havenoro-relayd: apply failed: " << e << "\n";
  }
  for (const auto& h : report.held_back) {
    std::cerr << "havenoro-relayd: held back: " << h << "\n";
  }
  if (!report.exim_state.empty()) {
    std::cerr << "havenoro-relayd: exim: " << report.exim_state << "\n";
  }
  std::cout << summary(relay_model, report) << std::endl;
  bool complete =
      report.ok() && report.held_back.empty() && relay_model.problems().empty();
  return complete ? 0 : 1;
}

}  // namespace havenoro::daemon
