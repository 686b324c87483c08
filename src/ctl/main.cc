// havenoro-relayctl: the panel's side of the control socket
// (shared/panel-contract.md §2). Exit status: 0 done, 1 the daemon said
// no (rejected, failed, unknown domain), 2 the daemon could not be reached
// or did not answer in time, 64 a bad command line.

#include <CLI/CLI.hpp>
#include <functional>
#include <iostream>
#include <optional>

#include "havenoro_relay/ctl/control_client.h"
#include "havenoro_relay/ctl/views.h"
#include "havenoro_relay/daemon/relay_test.h"

namespace {

using namespace havenoro;
using nlohmann::json;
using View = std::function<std::string(const json& arguments)>;

constexpr int kUnreachable = 2;
constexpr int kUsage = 64;
constexpr double kTestMarginS = 5;

struct Options {
  std::string socket = "/run/havenoro-relayd/control.sock";
  std::optional<double> timeout_s;
  bool json = false;
};

// A reconcile that waits may sit behind an Exim check and a reload; the
// other commands answer at once.
std::chrono::milliseconds timeout(const Options& o, double fallback_s) {
  return std::chrono::milliseconds(
      static_cast<long>(o.timeout_s.value_or(fallback_s) * 1000));
}

// A table for a person, or the reply's own text when there is no table
// (or a daemon of another version sent what the table cannot show).
std::string shown(const daemon::Reply& reply, const View& view) {
  if (view) {
    try {
      return view(reply.arguments);
    } catch (const json::exception&) {
    }
  }
  return reply.text + "\n";
}

// Prints the reply as the command asked and returns the exit status. On
// failure the reason is one line on stderr, as the panel shows it.
int finish(const daemon::Reply& reply, const Options& o, const View& view) {
  bool ok = reply.result == daemon::Result::kSuccess;
  if (o.json) {
    json doc = {{"result", static_cast<int>(reply.result)},
                {"text", reply.text},
                {"arguments", reply.arguments}};
    std::cout << doc.dump(2) << "\n";
  } else if (ok || (view && reply.arguments.contains("probe"))) {
    // A failed Test still shows its steps: which one failed is the point.
    std::cout << shown(reply, view);
  }
  if (!ok && !o.json) std::cerr << reply.text << "\n";
  // A stopping daemon applies the change at its next start, as one that
  // could not be reached does once it runs: the same status for the panel.
  if (reply.result == daemon::Result::kStopping) return kUnreachable;
  return ok ? 0 : 1;
}

int call(const Options& o, double timeout_s, const std::string& command,
         json arguments, const View& view) {
  try {
    ctl::ControlClient client(o.socket, timeout(o, timeout_s));
    return finish(client.call({command, std::move(arguments)}), o, view);
  } catch (const ctl::Unreachable& e) {
    // The panel shows this line: say what happens to the saved change.
    std::cerr << e.what()
              << " (the daemon applies saved settings on its own once it "
                 "runs)\n";
    return kUnreachable;
  }
}

struct ReconcileArgs {
  std::string domain;
  bool server = false;
  bool wait = false;
  bool confirm_removals = false;
  bool release_pin = false;
};

struct TestArgs {
  std::string domain;
  bool server = false;
  std::string to;
};

void add_test_command(CLI::App& app, const Options& o, int& status) {
  auto* test = app.add_subcommand(
      "test",
      "probe a domain's relay (the panel's Test button); --timeout S "
      "bounds the whole test (1-120 s)");
  auto t = std::make_shared<TestArgs>();
  auto* name = test->add_option("domain", t->domain, "the domain");
  test->add_flag("--server,--default", t->server, "the server-wide relay")
      ->excludes(name);
  test->add_option("--to", t->to,
                   "also send a test message there through Exim");
  test->callback([&o, &status, t] {
    json args = json::object();
    if (!t->domain.empty()) args["domain"] = t->domain;
    if (t->server) args["server"] = true;
    if (!t->to.empty()) args["to"] = t->to;
    if (t->domain.empty() && !t->server) {
      std::cerr << "give a domain, or --server\n";
      status = kUsage;
      return;
    }
    // The daemon bounds the test itself: by its configuration, or by the
    // --timeout given. Waiting a little longer than that bound lets its
    // verdict ("timed out" included) be what the panel shows.
    Options wait = o;
    if (o.timeout_s) args["timeout_s"] = *o.timeout_s;
    wait.timeout_s =
        o.timeout_s.value_or(daemon::kMaxRelayTestTimeout.count()) +
        kTestMarginS;
    status = call(wait, 0, "relay-test", args, ctl::relay_test_view);
  });
}

void add_rollback_command(CLI::App& app, const Options& o, int& status) {
  auto* rollback = app.add_subcommand(
      "rollback", "make an earlier generation of the snippets live again");
  auto generation = std::make_shared<unsigned long>(0);
  rollback->add_option("generation", *generation,
                       "which one (default: the one before the live one)");
  rollback->callback([&o, &status, generation] {
    json args = json::object();
    if (*generation != 0) args["generation"] = *generation;
    status = call(o, 60, "rollback", args, nullptr);
  });
}

void add_commands(CLI::App& app, const Options& o, int& status) {
  auto* reconcile = app.add_subcommand(
      "reconcile", "apply a domain's (or every) saved settings now");
  auto r = std::make_shared<ReconcileArgs>();
  auto* domain_opt =
      reconcile->add_option("--domain", r->domain, "the domain saved");
  reconcile->add_flag("--server", r->server, "the server-wide relay was saved")
      ->excludes(domain_opt);
  reconcile->add_flag("--wait", r->wait,
                      "wait until the change is applied or rejected");
  reconcile->add_flag("--confirm-removals", r->confirm_removals,
                      "remove relay domains even if most vanished at once");
  reconcile->add_flag("--release-pin", r->release_pin,
                      "end a rollback: render the snippets again");
  reconcile->callback([&o, &status, r] {
    json args = {{"wait", r->wait}};
    if (r->confirm_removals) args["confirm_removals"] = true;
    if (r->release_pin) args["release_pin"] = true;
    if (!r->domain.empty()) args["domain"] = r->domain;
    if (r->server) args["server"] = true;
    status = call(o, r->wait ? 120 : 10, "reconcile", args, nullptr);
  });

  app.add_subcommand("status", "the daemon's state, as a table")
      ->callback([&o, &status] {
        status = call(o, 10, "status-get", json::object(), ctl::status_view);
      });

  auto* domain = app.add_subcommand("domain", "one domain's route and why");
  auto name = std::make_shared<std::string>();
  domain->add_option("name", *name, "the domain")->required();
  domain->callback([&o, &status, name] {
    status = call(o, 10, "domain-get", {{"domain", *name}}, ctl::domain_view);
  });

  app.add_subcommand("domains", "every domain, one line each")
      ->callback([&o, &status] {
        status = call(o, 10, "domain-list", json::object(), [](const json& a) {
          return ctl::domain_list_view(a.value("domains", json::array()));
        });
      });

  app.add_subcommand("plan", "what an apply would change, applying nothing")
      ->callback([&o, &status] {
        status = call(o, 60, "config-test", json::object(), ctl::plan_view);
      });

  add_test_command(app, o, status);
  add_rollback_command(app, o, status);

  app.add_subcommand("version", "the daemon's version")
      ->callback([&o, &status] {
        status = call(o, 10, "version-get", json::object(), nullptr);
      });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"havenoro-relayctl: talk to havenoro-relayd"};
  Options o;
  app.add_option("--socket", o.socket, "the daemon's control socket");
  app.add_option("--timeout", o.timeout_s,
                 "seconds to wait for the reply (default 10; 120 for "
                 "reconcile --wait); for test, the bound of the whole "
                 "test (1-120), waited for a few seconds longer")
      ->check(CLI::PositiveNumber);
  app.add_flag("--json", o.json, "print the whole reply as JSON");
  app.set_version_flag("--version", HAVENORO_VERSION);
  app.require_subcommand(1);
  app.fallthrough();

  int status = 0;
  add_commands(app, o, status);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : kUsage;
  }
  return status;
}
