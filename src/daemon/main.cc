// havenoro-relayd: turns Havenoro CP's relay settings into Exim
// configuration. The work happens in the library; this file only reads the
// command line, runs one apply and reports.

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "havenoro_relay/apply/applier.h"
#include "havenoro_relay/config/daemon_config.h"
#include "havenoro_relay/model/relay_model.h"
#include "havenoro_relay/panel/panel_reader.h"

namespace {

using namespace havenoro;

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
      "written={} removed={} reloaded={}",
      event, r.generation, m.count(model::Route::kRelay),
      m.count(model::Route::kDefault), m.count(model::Route::kSuspended),
      m.problems().size(), r.written.size(), r.removed.size(),
      r.reloaded ? "yes" : "no");
}

int apply_once(const config::DaemonConfig& config) {
  panel::RelayRules rules{config.allow_private_relays};
  auto snapshot = panel::read_panel(config.panel_root, rules);
  auto relay_model = model::build_relay_model(snapshot);
  print_problems(relay_model);

  apply::Applier applier(config);
  auto report = applier.apply(relay_model);
  for (const auto& e : report.errors) {
    std::cerr << "havenoro-relayd: apply failed: " << e << "\n";
  }
  std::cout << summary(relay_model, report) << std::endl;
  return report.ok() && relay_model.problems().empty() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"havenoro-relayd: outgoing SMTP relays for Exim"};
  std::string config_file = "/etc/havenoro-relayd/config.json";
  bool once = false;
  app.add_option("-c,--config", config_file, "configuration file (JSON)");
  app.add_flag("--once", once, "apply the panel's settings once, then exit");
  app.set_version_flag("--version", HAVENORO_VERSION);
  CLI11_PARSE(app, argc, argv);

  try {
    auto config = config::load_daemon_config(config_file);
    if (!once) {
      // TODO(#3): the long-running daemon (inotify, control socket).
      std::cerr << "havenoro-relayd: only --once is available so far\n";
      return 2;
    }
    return apply_once(config);
  } catch (const std::exception& e) {
    std::cerr << "havenoro-relayd: " << e.what() << "\n";
    return 1;
  }
}
