#include "havenoro_relay/daemon/control_commands.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "havenoro_relay/daemon/command_arguments.h"
#include "havenoro_relay/daemon/reconcile_reply.h"
#include "havenoro_relay/daemon/relay_test.h"
#include "havenoro_relay/daemon/status_reply.h"

namespace havenoro::daemon {
namespace {

using nlohmann::json;
using AfterPanelChanges = std::function<void(std::function<void()>)>;

// Turns argument errors into kBadRequest replies, so each handler below
// only reads what it needs.
CommandHandler checked(CommandHandler handler) {
  return [handler](const json& args, Responder respond) {
    try {
      handler(args, respond);
    } catch (const ArgumentError& e) {
      respond(make_reply(Result::kBadRequest, e.what()));
    }
  };
}

void version_get(Responder respond) {
  respond({Result::kSuccess,
           "havenoro-relayd " HAVENORO_VERSION,
           {{"name", "havenoro-relayd"}, {"version", HAVENORO_VERSION}}});
}

void domain_list(ApplyLoop& loop, Responder respond) {
  json list = loop.domain_list();
  std::string text = fmt::format("{} domains", list.size());
  respond({Result::kSuccess, text, {{"domains", std::move(list)}}});
}

void domain_get(ApplyLoop& loop, const json& args, Responder respond) {
  auto name = domain_argument(args);
  if (!name) throw ArgumentError("domain-get needs \"domain\"");
  json d = loop.domain(*name);
  if (d.is_null()) {
    respond(
        make_reply(Result::kNotFound, *name + ": not in the panel's settings"));
    return;
  }
  std::string text =
      fmt::format("{}: route {}", *name, d.value("route", "unknown"));
  respond({Result::kSuccess, text, std::move(d)});
}

// Answers a request on the applying thread with what `answer` makes of
// the engine; an exception is an error reply, its text after
// `failed_prefix`. When the stopping daemon drops the task the client
// hears that instead of losing the connection: unlike a reconcile's
// change, what it asked for is not done by the next start on its own.
void answer_on_loop(ApplyLoop& loop, const char* command,
                    std::string failed_prefix,
                    std::function<Reply(engine::Engine&)> answer,
                    Responder respond) {
  loop.run(
      [failed_prefix, answer, respond](engine::Engine& engine) {
        try {
          respond(answer(engine));
        } catch (const std::exception& e) {
          respond(make_reply(Result::kError, failed_prefix + e.what()));
        }
      },
      [command, respond] {
        respond(make_reply(
            Result::kError,
            fmt::format("{} not run: havenoro-relayd is stopping; ask "
                        "again once it is back",
                        command)));
      });
}

ReconcileTarget reconcile_target(const json& args) {
  auto domain = domain_argument(args);
  bool server = flag_argument(args, "server");
  if (domain && server)
    throw ArgumentError("give \"domain\" or \"server\", not both");
  if (domain) return {ReconcileTarget::Kind::kDomain, *domain};
  if (server) return {ReconcileTarget::Kind::kServer, ""};
  return {};
}

// A full reconcile that confirms a held-back mass removal or ends a
// rollback's pin runs as a task with those options; it always waits.
void forced_resync(ApplyLoop& loop, engine::Engine::ResyncOptions options,
                   Responder respond) {
  auto answer = [options](engine::Engine& engine) {
    auto outcome = engine.resync(options);
    ReconcileTarget all;
    all.release_pin = options.release_pin;
    all.confirm_removals = options.confirm_removals;
    return reconcile_reply(outcome, all, encode_summary(outcome));
  };
  answer_on_loop(loop, "reconcile", "", answer, std::move(respond));
}

// Told on the applying thread, once per waiting request: each reply is
// its domain's outcome and the apply's summary, encoded once for all. Or
// told no outcome by a stopping daemon, which dropped the request.
ApplyDone reply_when_done(ApplyLoop& loop,
                          std::shared_ptr<ApplySummaries> summaries,
                          ReconcileTarget target, Responder respond) {
  return [&loop, summaries, target, respond](const SharedOutcome& outcome) {
    if (!outcome) {
      respond(stopping_reply(target));
      return;
    }
    std::optional<std::string> server_error;
    if (target.kind == ReconcileTarget::Kind::kServer)
      server_error = loop.server_error();
    respond(reconcile_reply(*outcome, target, summaries->of(outcome),
                            server_error));
  };
}

void reconcile(ApplyLoop& loop,
               const std::shared_ptr<ApplySummaries>& summaries,
               const AfterPanelChanges& after_panel_changes, const json& args,
               Responder respond) {
  auto target = reconcile_target(args);
  bool wait = flag_argument(args, "wait");
  engine::Engine::ResyncOptions options{flag_argument(args, "confirm_removals"),
                                        flag_argument(args, "release_pin")};
  if (options.confirm_removals || options.release_pin) {
    if (target.kind != ReconcileTarget::Kind::kAll) {
      throw ArgumentError(
          "\"confirm_removals\" and \"release_pin\" apply to a full "
          "reconcile only");
    }
    forced_resync(loop, options, respond);
    return;
  }
  ApplyDone done;
  if (wait) done = reply_when_done(loop, summaries, target, respond);
  auto queue = [&loop, target, done = std::move(done)]() mutable {
    if (target.kind == ReconcileTarget::Kind::kAll) {
      loop.resync(std::move(done));
    } else {
      loop.reconcile_domain(target.domain, std::move(done));
    }
  };
  if (after_panel_changes) {
    after_panel_changes(std::move(queue));
  } else {
    queue();
  }
  if (!wait) {
    respond(make_reply(Result::kSuccess,
                       "queued: " + target.describe() + " will be applied"));
  }
}

Reply plan_reply(json plan) {
  bool passed = plan.value("check", "") == "passed";
  auto count = [&](const char* key) {
    return plan.value(key, json::array()).size();
  };
  std::string text = fmt::format(
      "would write {} and remove {} files; Exim check {}; {} rejected",
      count("would_write"), count("would_remove"), passed ? "passed" : "failed",
      count("problems"));
  return {passed ? Result::kSuccess : Result::kError, text, std::move(plan)};
}

Reply rollback_reply(engine::Engine& engine,
                     std::optional<unsigned long> generation) {
  auto outcome = engine.rollback(generation);
  const auto& r = outcome.report;
  json args = {{"generation", r.generation}, {"pinned", r.pinned},
               {"reloaded", r.reloaded},     {"exim", r.exim_state},
               {"errors", r.errors},         {"kept", engine.generations()}};
  if (!r.ok()) {
    return {Result::kError,
            fmt::format("rollback failed: {}", fmt::join(r.errors, "; ")),
            std::move(args)};
  }
  return {Result::kSuccess,
          fmt::format("generation {} is live and pinned; a reconcile "
                      "with release_pin renders the snippets again",
                      r.generation),
          std::move(args)};
}

void rollback(ApplyLoop& loop, const json& args, Responder respond) {
  std::optional<unsigned long> generation;
  if (auto it = args.find("generation"); it != args.end()) {
    if (!it->is_number_unsigned() || it->get<unsigned long>() == 0) {
      throw ArgumentError("\"generation\" must be a generation number");
    }
    generation = it->get<unsigned long>();
  }
  // An exception: the output directory failed under the rollback (a
  // planted symlink); the client hears it now, not after its timeout.
  answer_on_loop(
      loop, "rollback", "rollback failed: ",
      [generation](engine::Engine& e) { return rollback_reply(e, generation); },
      std::move(respond));
}

void config_test(ApplyLoop& loop, Responder respond) {
  answer_on_loop(
      loop, "config-test", "",
      [](engine::Engine& engine) { return plan_reply(engine.plan()); },
      std::move(respond));
}

}  // namespace

CommandTable make_commands(ApplyLoop& loop, const DaemonInfo& info,
                           AfterPanelChanges after_panel_changes) {
  auto status = std::make_shared<const StatusReply>(loop, info);
  auto summaries = std::make_shared<ApplySummaries>();
  return {
      {"status-get", [status](const json&, Responder r) { r(status->now()); }},
      {"version-get", [](const json&, Responder r) { version_get(r); }},
      {"domain-list",
       [&loop](const json&, Responder r) { domain_list(loop, r); }},
      {"domain-get", checked([&loop](const json& a, Responder r) {
         domain_get(loop, a, r);
       })},
      {"reconcile", checked([&loop, summaries, after_panel_changes](
                                const json& a, Responder r) {
         reconcile(loop, summaries, after_panel_changes, a, r);
       })},
      {"config-test",
       [&loop](const json&, Responder r) { config_test(loop, r); }},
      {"rollback",
       checked([&loop](const json& a, Responder r) { rollback(loop, a, r); })},
      // relay-test checks its own arguments (server, timeout_s).
      {"relay-test",
       [&loop](const json& a, Responder r) { relay_test(loop, a, r); }},
  };
}

}  // namespace havenoro::daemon
