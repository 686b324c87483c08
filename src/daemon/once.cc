#include "havenoro_relay/daemon/once.h"

#include <fmt/format.h>

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

}  // namespace

int apply_once(const config::DaemonConfig& config, bool confirm_removals) {
  panel::RelayRules rules{config.allow_private_relays};
  auto snapshot = panel::read_panel(config.panel_root, rules);
  auto relay_model = model::build_relay_model(snapshot);
  print_problems(relay_model);

  apply::Applier applier(config);
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
