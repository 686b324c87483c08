#include "havenoro_relay/daemon/daemon_info.h"

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <unistd.h>

namespace havenoro::daemon {
namespace {

using nlohmann::json;

int count(const json& status, const char* route) {
  const json& domains = status.value("domains", json::object());
  return domains.is_object() ? domains.value(route, 0) : 0;
}

}  // namespace

std::string iso_time(engine::Clock::time_point t) {
  return fmt::format("{:%Y-%m-%dT%H:%M:%SZ}",
                     fmt::gmtime(engine::Clock::to_time_t(t)));
}

DaemonInfo::DaemonInfo(std::filesystem::path config_file)
    : config_file_(std::move(config_file)),
      pid_(::getpid()),
      started_(engine::Clock::now()),
      started_steady_(std::chrono::steady_clock::now()) {}

void DaemonInfo::record(const engine::ApplyOutcome& outcome) {
  std::lock_guard lock(mutex_);
  if (outcome.report.new_generation) {
    exim_ = {{"reloaded", outcome.report.reloaded},
             {"message", outcome.report.exim_state},
             {"at", iso_time(outcome.started)}};
    ++version_;
  }
  if (!outcome.report.ok()) {
    last_failure_ = {{"at", iso_time(outcome.started)},
                     {"errors", outcome.report.errors}};
    ++version_;
  }
}

void DaemonInfo::record_reload(const std::string& error) {
  std::lock_guard lock(mutex_);
  reload_ = {{"at", iso_time(engine::Clock::now())},
             {"result", error.empty() ? "reloaded" : "refused"},
             {"error", error.empty() ? json(nullptr) : json(error)}};
  ++version_;
}

long DaemonInfo::uptime_s() const {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::steady_clock::now() - started_steady_)
      .count();
}

json DaemonInfo::complete(json status, unsigned long applies,
                          size_t queued) const {
  status["started"] = iso_time(started_);
  status["uptime_s"] = uptime_s();
  status["pid"] = pid_;
  status["config_file"] = config_file_.string();
  status["applies"] = applies;
  status["queued"] = queued;

  std::lock_guard lock(mutex_);
  // The Engine reports Exim only for an apply that reloaded it; the last
  // confirmed state stays true until the next reload.
  if (status.value("exim", json()).is_null()) status["exim"] = exim_;
  status["last_failure"] = last_failure_;
  status["config"] = reload_;
  return status;
}

std::string status_line(const json& status) {
  const json& pinned = status.value("pinned", json());
  std::string line = fmt::format(
      "generation {}{}; domains: {} relayed, {} default, {} suspended, {} "
      "rejected",
      status.value("generation", 0UL),
      pinned.is_object() ? " (pinned by a rollback)" : "",
      count(status, "relayed"), count(status, "default"),
      count(status, "suspended"), count(status, "rejected"));
  const json& last = status.value("last_apply", json());
  if (!last.is_object()) {
    line += "; first apply pending";
  } else {
    line +=
        fmt::format("; last apply {} at {} in {} ms", last.value("result", "?"),
                    last.value("at", "?"), last.value("took_ms", 0));
  }
  // Until a reload is taken: the journal line alone scrolls away.
  const json& reload = status.value("config", json());
  if (reload.is_object() && reload.value("result", "") == "refused")
    line += fmt::format("; configuration reload refused at {}",
                        reload.value("at", "?"));
  return line;
}

}  // namespace havenoro::daemon
