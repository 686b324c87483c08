// havenoro-relayd: turns Havenoro CP's relay settings into Exim
// configuration. The work happens in the library and in src/daemon; this
// file only reads the command line and starts one of the two modes.

#include <malloc.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <map>

#include "havenoro_relay/config/daemon_config.h"
#include "havenoro_relay/daemon/daemon.h"
#include "havenoro_relay/daemon/daemon_log.h"
#include "havenoro_relay/daemon/log_event.h"
#include "havenoro_relay/daemon/once.h"

namespace {

using namespace havenoro;

int run_daemon(const std::string& config_file,
               const config::DaemonConfig& config) {
  try {
    daemon::Daemon d(config_file, config);
    return d.run();
  } catch (const std::exception& e) {
    spdlog::critical(
        daemon::LogEvent("daemon.failed").add("error", e.what()).str());
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  // One malloc arena: the applying thread and the short-lived threads of
  // an apply (Exim checks, the rescan's halves) would otherwise each keep
  // an arena of freed memory, and the daemon's resident size is what a
  // busy server notices; the threads allocate little and briefly.
  ::mallopt(M_ARENA_MAX, 1);
  CLI::App app{"havenoro-relayd: outgoing SMTP relays for Exim"};
  std::string config_file = "/etc/havenoro-relayd/config.json";
  bool once = false;
  bool confirm_removals = false;
  auto level = spdlog::level::info;
  app.add_option("-c,--config", config_file, "configuration file (JSON)");
  app.add_flag("--once", once, "apply the panel's settings once, then exit");
  app.add_flag("--confirm-removals", confirm_removals,
               "with --once: remove relay domains even when most of them "
               "vanished at once");
  app.add_option("--log-level", level, "error, warn, info or debug")
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, spdlog::level::level_enum>{
              {"error", spdlog::level::err},
              {"warn", spdlog::level::warn},
              {"info", spdlog::level::info},
              {"debug", spdlog::level::debug}}));
  app.set_version_flag("--version", HAVENORO_VERSION);
  CLI11_PARSE(app, argc, argv);

  // Before --once too: the library's rare log lines (a repaired output
  // directory) go to stderr like the daemon's, never into the summary.
  daemon::setup_logging(level);
  config::DaemonConfig config;
  try {
    config = config::load_daemon_config(config_file);
    if (once) return daemon::apply_once(config, confirm_removals);
  } catch (const std::exception& e) {
    std::cerr << "havenoro-relayd: " << e.what() << "\n";
    return 1;
  }
  return run_daemon(config_file, config);
}
