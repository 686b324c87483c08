#include "havenoro_relay/daemon/reconcile_reply.h"

#include <fmt/format.h>

#include <algorithm>

#include "havenoro_relay/daemon/daemon_info.h"

namespace havenoro::daemon {
namespace {

using engine::ApplyOutcome;
using engine::DomainOutcome;
using nlohmann::json;

// The panel shows the text as one line.
std::string one_line(std::string text) {
  std::replace_if(
      text.begin(), text.end(), [](char c) { return c == '\n' || c == '\r'; },
      ' ');
  return text;
}

std::string joined(const std::vector<std::string>& lines) {
  return one_line(fmt::format("{}", fmt::join(lines, "; ")));
}

json domain_json(const DomainOutcome& d) {
  return {{"domain", d.domain},
          {"result", d.result},
          {"route", d.route},
          {"message", d.message}};
}

Reply failed(const ApplyOutcome& o, json arguments) {
  return {Result::kError,
          "not applied: " + joined(o.report.errors) +
              " (the last applied configuration stays live)",
          std::move(arguments)};
}

std::string generation_note(const ApplyOutcome& o) {
  return o.report.generation
             ? fmt::format(", generation {}", o.report.generation)
             : "";
}

Reply domain_reply(const ApplyOutcome& o, const std::string& name,
                   json arguments) {
  auto it = std::find_if(o.domains.begin(), o.domains.end(),
                         [&](const auto& d) { return d.domain == name; });
  if (it == o.domains.end()) {
    if (!o.report.ok()) return failed(o, std::move(arguments));
    return {Result::kSuccess,
            name + ": no settings in the panel, nothing to relay",
            std::move(arguments)};
  }
  const DomainOutcome& d = *it;
  arguments["domain"] = domain_json(d);
  if (d.result == "failed") return failed(o, std::move(arguments));
  if (d.result == "rejected")
    return {Result::kError, one_line(d.message), std::move(arguments)};
  if (d.result == "removed")
    return {Result::kSuccess, name + ": relay removed" + generation_note(o),
            std::move(arguments)};
  if (d.route.empty())
    return {Result::kSuccess,
            name + ": no settings in the panel, nothing to relay",
            std::move(arguments)};
  // "unchanged" often means the daemon saw the save on its own and applied
  // it a moment before this request came: to the panel, it is live.
  const char* state = d.result == "applied" ? "applied" : "live";
  return {Result::kSuccess,
          fmt::format("{}: {} (route {}{})", name, state, d.route,
                      generation_note(o)),
          std::move(arguments)};
}

const json* server_error(const json& status) {
  auto errors = status.find("errors");
  if (errors == status.end() || !errors->is_array()) return nullptr;
  for (const auto& e : *errors) {
    if (e.is_object() && e.value("domain", "x").empty()) return &e;
  }
  return nullptr;
}

Reply server_reply(const ApplyOutcome& o, const json& status, json arguments) {
  if (!o.report.ok()) return failed(o, std::move(arguments));
  if (const json* e = server_error(status)) {
    return {Result::kError, one_line(e->value("error", "rejected")),
            std::move(arguments)};
  }
  auto touched = [](const std::vector<std::string>& paths) {
    return std::any_of(paths.begin(), paths.end(),
                       [](const auto& p) { return p.starts_with("default/"); });
  };
  const char* what = touched(o.report.written)   ? "applied"
                     : touched(o.report.removed) ? "removed"
                                                 : "unchanged";
  return {Result::kSuccess,
          fmt::format("server-wide relay: {}{}", what, generation_note(o)),
          std::move(arguments)};
}

Reply all_reply(const ApplyOutcome& o, json arguments) {
  if (!o.report.ok()) return failed(o, std::move(arguments));
  if (!o.report.held_back.empty()) {
    return {Result::kError, one_line(o.report.held_back.front()),
            std::move(arguments)};
  }
  if (!o.problems.empty()) {
    std::string more =
        o.problems.size() > 1
            ? fmt::format(" (and {} more)", o.problems.size() - 1)
            : "";
    return {Result::kError, one_line(o.problems.front()) + more,
            std::move(arguments)};
  }
  return {Result::kSuccess,
          fmt::format("panel tree {}{}", o.result(), generation_note(o)),
          std::move(arguments)};
}

}  // namespace

std::string ReconcileTarget::describe() const {
  switch (kind) {
    case Kind::kDomain:
      return domain;
    case Kind::kServer:
      return "the server-wide relay";
    case Kind::kAll:
      break;
  }
  return "the panel tree";
}

json outcome_json(const ApplyOutcome& o) {
  json domains = json::array();
  for (const auto& d : o.domains) domains.push_back(domain_json(d));
  return {{"started", iso_time(o.started)},
          {"took_ms", o.took.count()},
          {"full", o.full},
          {"result", o.result()},
          {"generation", o.report.generation},
          {"new_generation", o.report.new_generation},
          {"reloaded", o.report.reloaded},
          {"exim_state", o.report.exim_state},
          {"written", o.report.written},
          {"removed", o.report.removed},
          {"errors", o.report.errors},
          {"held_back", o.report.held_back},
          {"problems", o.problems},
          {"domains", std::move(domains)}};
}

Reply reconcile_reply(const ApplyOutcome& outcome,
                      const ReconcileTarget& target, const json& status) {
  json arguments = {{"apply", outcome_json(outcome)}};
  switch (target.kind) {
    case ReconcileTarget::Kind::kDomain:
      return domain_reply(outcome, target.domain, std::move(arguments));
    case ReconcileTarget::Kind::kServer:
      return server_reply(outcome, status, std::move(arguments));
    case ReconcileTarget::Kind::kAll:
      break;
  }
  return all_reply(outcome, std::move(arguments));
}

}  // namespace havenoro::daemon
