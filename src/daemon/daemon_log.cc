#include "havenoro_relay/daemon/daemon_log.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>

#include "havenoro_relay/daemon/log_event.h"

namespace havenoro::daemon {
namespace {

// The journal reads a leading <N> as the line's syslog priority
// (sd-daemon(3)), so levels survive without a timestamp or a level word.
class SyslogPriority : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    const char* prefix = "<6>";
    switch (msg.level) {
      case spdlog::level::critical:
        prefix = "<2>";
        break;
      case spdlog::level::err:
        prefix = "<3>";
        break;
      case spdlog::level::warn:
        prefix = "<4>";
        break;
      case spdlog::level::debug:
      case spdlog::level::trace:
        prefix = "<7>";
        break;
      default:
        break;
    }
    dest.append(prefix, prefix + 3);
  }

  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<SyslogPriority>();
  }
};

size_t changed_domains(const engine::ApplyOutcome& o) {
  return static_cast<size_t>(
      std::count_if(o.domains.begin(), o.domains.end(), [](const auto& d) {
        return d.result == "applied" || d.result == "removed";
      }));
}

void log_summary(const engine::ApplyOutcome& o) {
  const auto& r = o.report;
  for (const auto& reason : r.held_back) {
    spdlog::warn(LogEvent("apply.held_back")
                     .add("domains", r.held_domains.size())
                     .add("reason", reason)
                     .add("kept", "their relay files")
                     .str());
  }
  if (!r.ok()) {
    std::string errors;
    for (const auto& e : r.errors) errors += (errors.empty() ? "" : "; ") + e;
    spdlog::error(LogEvent("apply.failed")
                      .add("generation", r.generation)
                      .add("domains", o.domains.size())
                      .add("full", o.full)
                      .add("took_ms", o.took.count())
                      .add("error", errors)
                      .str());
    return;
  }
  LogEvent event(r.unchanged() ? "apply.unchanged" : "apply.done");
  event.add("generation", r.generation)
      .add("domains", o.domains.size())
      .add("changed", changed_domains(o))
      .add("written", r.written.size())
      .add("removed", r.removed.size())
      .add("rejected", o.problems.size())
      .add("reloaded", r.reloaded)
      .add("full", o.full)
      .add("took_ms", o.took.count());
  if (r.unchanged()) {
    spdlog::debug(event.str());
  } else {
    spdlog::info(event.str());
  }
}

}  // namespace

bool under_systemd() {
  return std::getenv("JOURNAL_STREAM") != nullptr ||
         std::getenv("INVOCATION_ID") != nullptr;
}

void setup_logging(spdlog::level::level_enum level) {
  auto logger = std::make_shared<spdlog::logger>(
      "havenoro-relayd", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  if (under_systemd()) {
    formatter->add_flag<SyslogPriority>('*').set_pattern("%*%v");
  } else {
    formatter->set_pattern("%Y-%m-%dT%H:%M:%S.%e %l %v");
  }
  logger->set_formatter(std::move(formatter));
  logger->set_level(level);
  // Every line matters when something goes wrong; stderr is unbuffered
  // anyway, so flushing costs nothing extra.
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(std::move(logger));
}

void OutcomeLog::log(const engine::ApplyOutcome& outcome) {
  std::lock_guard lock(mutex_);
  for (const auto& d : outcome.domains) log_domain(d);
  log_problems(outcome);
  log_summary(outcome);
  if (!outcome.report.exim_log_unread.empty()) {
    spdlog::warn(LogEvent("exim.log_unread")
                     .add("log", outcome.report.exim_log_unread)
                     .add("kept", "reload confirmed by pid and port only")
                     .str());
  }
}

void OutcomeLog::log_domain(const engine::DomainOutcome& d) {
  if (d.result == "rejected") {
    LogEvent event("domain.rejected");
    event.add("domain", d.domain).add("reason", d.message);
    // The same rejection on every resync is one failure, not many.
    auto [it, fresh] = reported_.try_emplace(d.domain, d.message);
    if (fresh || it->second != d.message) {
      it->second = d.message;
      spdlog::error(event.str());
    } else {
      spdlog::debug(event.str());
    }
    return;
  }
  reported_.erase(d.domain);
  if (d.result == "applied") {
    spdlog::info(LogEvent("domain.applied")
                     .add("domain", d.domain)
                     .add("route", d.route)
                     .str());
  } else if (d.result == "removed") {
    spdlog::info(LogEvent("domain.removed").add("domain", d.domain).str());
  }
}

// The problem that belongs to no domain of the outcome: the server-wide
// relay's, which has no DomainOutcome of its own.
void OutcomeLog::log_problems(const engine::ApplyOutcome& outcome) {
  const std::string& server_problem = outcome.server_problem;
  if (server_problem.empty()) {
    if (outcome.full) reported_.erase("");
    return;
  }
  LogEvent event("server.rejected");
  event.add("reason", server_problem);
  auto [it, fresh] = reported_.try_emplace("", server_problem);
  if (fresh || it->second != server_problem) {
    it->second = server_problem;
    spdlog::error(event.str());
  } else {
    spdlog::debug(event.str());
  }
}

}  // namespace havenoro::daemon
