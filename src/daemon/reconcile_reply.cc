#include "havenoro_relay/daemon/reconcile_reply.h"

#include <fmt/format.h>

#include <algorithm>

#include "havenoro_relay/daemon/daemon_info.h"

namespace havenoro::daemon {
namespace {

using engine::ApplyOutcome;
using engine::DomainOutcome;
using nlohmann::json;

// Lists in a summary are cut to this many entries, with their totals.
constexpr size_t kListLimit = 20;
// A reply's text names this many of an apply's errors.
constexpr size_t kTextErrors = 3;

json first_of(const std::vector<std::string>& lines) {
  auto end = lines.begin() + std::min(lines.size(), kListLimit);
  return json(std::vector<std::string>(lines.begin(), end));
}

// The panel shows the text as one line.
std::string one_line(std::string text) {
  std::replace_if(
      text.begin(), text.end(), [](char c) { return c == '\n' || c == '\r'; },
      ' ');
  return text;
}

// A failed apply of a bulk edit may have an error per domain: the text
// stays one short line, the summary has more.
std::string joined(const std::vector<std::string>& lines) {
  auto end = lines.begin() + std::min(lines.size(), kTextErrors);
  std::string text = fmt::format(
      "{}", fmt::join(std::vector<std::string>(lines.begin(), end), "; "));
  if (lines.size() > kTextErrors)
    text += fmt::format(" (and {} more)", lines.size() - kTextErrors);
  return one_line(text);
}

json domain_json(const DomainOutcome& d) {
  return {{"domain", d.domain},
          {"result", d.result},
          {"route", d.route},
          {"message", d.message}};
}

// When every error is one file's (a planted symlink), the files of the
// other domains went live, and the text says so.
Reply failed(const ApplyOutcome& o, json arguments) {
  const char* kept = o.report.failed_whole()
                         ? " (the last applied configuration stays live)"
                         : " (the other changes went live)";
  return {Result::kError, "not applied: " + joined(o.report.errors) + kept,
          std::move(arguments)};
}

// Whether a file of the server-wide relay could not be written.
bool server_failed(const ApplyOutcome& o) {
  return o.report.failed_whole() ||
         std::any_of(o.report.path_errors.begin(), o.report.path_errors.end(),
                     [](const auto& e) {
                       return apply::domain_of_path(e.first).empty();
                     });
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
    if (o.report.failed_whole()) return failed(o, std::move(arguments));
    return {Result::kSuccess,
            name + ": no settings in the panel, nothing to relay",
            std::move(arguments)};
  }
  const DomainOutcome& d = *it;
  arguments["domain"] = domain_json(d);
  if (d.result == "failed" && o.report.failed_whole())
    return failed(o, std::move(arguments));
  if (d.result == "failed")
    return {Result::kError, name + ": not applied: " + one_line(d.message),
            std::move(arguments)};
  if (d.result == "rejected" || d.result == "held_back")
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

Reply server_reply(const ApplyOutcome& o,
                   const std::optional<std::string>& server_error,
                   json arguments) {
  if (server_failed(o)) return failed(o, std::move(arguments));
  if (server_error) {
    return {Result::kError, one_line(*server_error), std::move(arguments)};
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

// The relay domains an apply removed: each is its credential directory.
size_t relays_removed(const ApplyOutcome& o) {
  const std::string prefix = "domains/";
  return std::count_if(o.report.removed.begin(), o.report.removed.end(),
                       [&](const std::string& path) {
                         return path.starts_with(prefix) &&
                                path.find('/', prefix.size()) ==
                                    std::string::npos;
                       });
}

// "applied: generation 4 live, Exim reloaded", or "nothing to change:
// generation 4 live"; the pin when it held the snippets back.
std::string live_text(const ApplyOutcome& o) {
  const apply::ApplyReport& r = o.report;
  std::string text = fmt::format(
      "{}: generation {} live", r.unchanged() ? "nothing to change" : "applied",
      r.generation);
  if (r.new_generation) {
    text += r.reloaded ? ", Exim reloaded"
                       : ", Exim not reloaded" +
                             (r.exim_state.empty() ? "" : ": " + r.exim_state);
  }
  if (r.pinned) text += ", its snippets pinned by a rollback";
  return text;
}

// What a full reconcile did, said before what it left out: a result of 1
// for one rejected domain must not hide that the pin was released, the
// removals done and a new generation is live.
std::string done_text(const ApplyOutcome& o, const ReconcileTarget& t) {
  std::vector<std::string> parts;
  if (t.release_pin) parts.push_back("pin released");
  if (t.confirm_removals) {
    size_t n = relays_removed(o);
    parts.push_back(fmt::format("removals confirmed: {} relay domain{} removed",
                                n, n == 1 ? "" : "s"));
  }
  parts.push_back(live_text(o));
  return fmt::format("{}", fmt::join(parts, "; "));
}

Reply all_reply(const ApplyOutcome& o, const ReconcileTarget& t,
                json arguments) {
  if (!o.report.ok()) {
    // The pin is gone before the resync reads anything, whatever follows.
    Reply reply = failed(o, std::move(arguments));
    if (t.release_pin) reply.text = "pin released; " + reply.text;
    return reply;
  }
  std::string text = done_text(o, t);
  if (!o.report.held_back.empty())
    text += "; held back: " + o.report.held_back.front();
  if (!o.problems.empty()) {
    text += "; rejected: " + o.problems.front();
    if (o.problems.size() > 1)
      text += fmt::format(" (and {} more)", o.problems.size() - 1);
  }
  // Result 1 when something was left out: panel-contract.md §2.
  bool left_out = !o.report.held_back.empty() || !o.problems.empty();
  return {left_out ? Result::kError : Result::kSuccess, one_line(text),
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

json summary_json(const ApplyOutcome& o) {
  return {{"started", iso_time(o.started)},
          {"took_ms", o.took.count()},
          {"full", o.full},
          {"result", o.result()},
          {"generation", o.report.generation},
          {"new_generation", o.report.new_generation},
          {"reloaded", o.report.reloaded},
          {"exim_state", o.report.exim_state},
          {"written", o.report.written.size()},
          {"removed", o.report.removed.size()},
          {"domains", o.domains.size()},
          {"errors", first_of(o.report.errors)},
          {"errors_total", o.report.errors.size()},
          {"held_back", first_of(o.report.held_back)},
          {"problems", first_of(o.problems)},
          {"problems_total", o.problems.size()}};
}

EncodedMembers encode_summary(const ApplyOutcome& outcome) {
  return encode_members({{"apply", summary_json(outcome)}});
}

EncodedMembers ApplySummaries::of(
    const std::shared_ptr<const ApplyOutcome>& outcome) {
  std::lock_guard lock(mutex_);
  // The same control block is the same outcome, even one gone by now: a
  // weak pointer keeps the block, so no later outcome can reuse it.
  bool same =
      !outcome_.owner_before(outcome) && !outcome.owner_before(outcome_);
  if (!summary_ || !same) {
    summary_ = encode_summary(*outcome);
    outcome_ = outcome;
  }
  return summary_;
}

Reply reconcile_reply(const ApplyOutcome& outcome,
                      const ReconcileTarget& target, EncodedMembers summary,
                      const std::optional<std::string>& server_error) {
  Reply reply = [&]() -> Reply {
    switch (target.kind) {
      case ReconcileTarget::Kind::kDomain:
        return domain_reply(outcome, target.domain, json::object());
      case ReconcileTarget::Kind::kServer:
        return server_reply(outcome, server_error, json::object());
      case ReconcileTarget::Kind::kAll:
        break;
    }
    return all_reply(outcome, target, json::object());
  }();
  reply.encoded = std::move(summary);
  return reply;
}

Reply stopping_reply(const ReconcileTarget& target) {
  return make_reply(Result::kStopping,
                    target.describe() +
                        ": not applied yet: havenoro-relayd is stopping; "
                        "the change will be applied when it starts again");
}

}  // namespace havenoro::daemon
