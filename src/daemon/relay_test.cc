#include "havenoro_relay/daemon/relay_test.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <map>
#include <mutex>
#include <system_error>
#include <thread>
#include <variant>

#include "havenoro_relay/daemon/command_arguments.h"
#include "havenoro_relay/daemon/log_event.h"
#include "havenoro_relay/panel/panel_reader.h"
#include "havenoro_relay/probe/relay_probe.h"
#include "havenoro_relay/probe/test_message.h"

namespace havenoro::daemon {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

// Each test holds a thread and a connection for up to its time bound.
constexpr int kMaxRunning = 4;
std::atomic<int> running{0};

// How to answer each test still running, by a number of its own: a stop
// tells them that they did not finish.
std::mutex answers_mutex;
std::map<unsigned long, Responder> answers;
unsigned long next_answer = 0;

unsigned long keep_answer(Responder respond) {
  std::lock_guard lock(answers_mutex);
  answers.emplace(++next_answer, std::move(respond));
  return next_answer;
}

void drop_answer(unsigned long id) {
  std::lock_guard lock(answers_mutex);
  answers.erase(id);
}

// Gives the slot of a running test back however the test ends.
struct RunningSlot {
  explicit RunningSlot(unsigned long id) : id(id) {}
  RunningSlot(const RunningSlot&) = delete;
  RunningSlot& operator=(const RunningSlot&) = delete;
  ~RunningSlot() {
    drop_answer(id);
    running.fetch_sub(1);
  }
  unsigned long id;
};

// What one request asks for.
struct TestRequest {
  std::string domain;  ///< empty for the server-wide relay
  std::string to;
  std::optional<milliseconds> timeout;
};

std::string to_of(const json& args) {
  const json* v = given(args, "to");
  if (!v) return "";
  if (!v->is_string() || !probe::is_plain_address(v->get<std::string>())) {
    throw ArgumentError("\"to\" must be one plain address, user@domain");
  }
  return v->get<std::string>();
}

std::optional<milliseconds> timeout_of(const json& args) {
  const json* v = given(args, "timeout_s");
  if (!v) return std::nullopt;
  double s = v->is_number() ? v->get<double>() : NAN;
  if (!(s >= 1 && s <= kMaxRelayTestTimeout.count())) {
    throw ArgumentError(fmt::format("\"timeout_s\" must be 1-{} seconds",
                                    kMaxRelayTestTimeout.count()));
  }
  return milliseconds(std::lround(s * 1000));
}

// Throws ArgumentError. An empty domain would be ambiguous in a request
// (a client that forgot it), so the server-wide relay is asked for by name.
TestRequest parse_request(const json& args) {
  if (!args.is_object()) throw ArgumentError("arguments must be an object");
  TestRequest r{domain_argument(args).value_or(""), to_of(args),
                timeout_of(args)};
  // A null "server" reads as not given here, as every other argument.
  bool server = given(args, "server") && flag_argument(args, "server");
  if (!r.domain.empty() && server) {
    throw ArgumentError("give \"domain\" or \"server\": true, not both");
  }
  if (r.domain.empty() && !server) {
    throw ArgumentError(
        "relay-test needs \"domain\", or \"server\": true for the "
        "server-wide relay");
  }
  return r;
}

// The relay as the panel stored it now, or why there is none to test.
// Read from the panel's files on the test's own thread, not from the
// engine: the engine holds what it last read, which may be older than the
// admin's save, and asking the applying thread would wait behind a
// running apply.
std::variant<panel::RelaySettings, std::string> stored_relay(
    const config::DaemonConfig& c, const std::string& domain) {
  panel::RelayRules rules{c.allow_private_relays};
  if (domain.empty()) {
    auto server = panel::read_server(c.panel_root, rules);
    if (server.error) {
      return "server-wide relay: " + server.error->field + ": " +
             server.error->message;
    }
    if (!server.value || !*server.value) return "no server-wide relay is set";
    return **server.value;
  }
  auto found = panel::find_domain(c.panel_root, domain, rules);
  if (found.empty()) return domain + ": not in the panel's settings";
  if (found.size() > 1) return domain + ": configured under two users";
  const auto& s = found.front().settings;
  if (s.error) return domain + ": " + s.error->field + ": " + s.error->message;
  if (!s.value->relay) return domain + ": has no relay of its own";
  return *s.value->relay;
}

Reply verdict(const TestRequest& request, const probe::ProbeResult& p,
              const std::optional<probe::TestMessageResult>& m) {
  json args = {{"domain", request.domain},
               {"server", request.domain.empty()},
               {"probe", p.to_json()},
               {"message", m ? m->to_json() : json(nullptr)}};
  if (!p.works) return {Result::kError, p.verdict, std::move(args)};
  if (!m) return {Result::kSuccess, "works", std::move(args)};
  std::string text =
      fmt::format("works; test message {} {}{}", m->message_id, m->outcome,
                  m->response.empty() ? "" : ": " + m->response);
  bool delivered = m->outcome == "delivered";
  return {delivered ? Result::kSuccess : Result::kError, text, std::move(args)};
}

probe::TestMessageResult send_message(const TestRequest& request,
                                      const config::DaemonConfig& c,
                                      milliseconds timeout) {
  probe::TestMessageOptions o{c.exim_binary, c.exim_config, c.exim_main_log,
                              timeout};
  return probe::send_test_message(
      request.domain.empty() ? "localhost" : request.domain, request.to, o);
}

Reply run_test(const TestRequest& request, const config::DaemonConfig& c) {
  auto start = SteadyClock::now();
  auto relay = stored_relay(c, request.domain);
  if (auto* why = std::get_if<std::string>(&relay)) {
    return make_reply(Result::kError, *why);
  }
  auto bounds = relay_test_bounds(c, request.timeout, !request.to.empty());
  probe::ProbeOptions options;
  options.ca_certificates = c.tls_ca_certificates;
  options.step_timeout = bounds.step;
  options.total_timeout = bounds.probe;
  auto result =
      probe::probe_relay(std::get<panel::RelaySettings>(relay), options);

  std::optional<probe::TestMessageResult> message;
  if (result.works && !request.to.empty()) {
    auto spent =
        std::chrono::duration_cast<milliseconds>(SteadyClock::now() - start);
    auto left = std::max(bounds.whole - spent, milliseconds(0));
    message = send_message(request, c, std::min(bounds.message, left));
  }
  return verdict(request, result, message);
}

// The body of a test's thread. Nothing may leave a detached thread: what
// was not foreseen is logged and still answered.
void run_detached(TestRequest request, config::DaemonConfig config,
                  Responder respond, unsigned long id) {
  RunningSlot slot(id);
  try {
    respond(run_test(request, config));
  } catch (const std::exception& e) {
    spdlog::error(LogEvent("daemon.task_failed")
                      .add("error", std::string("relay-test: ") + e.what())
                      .str());
    respond(make_reply(Result::kError,
                       std::string("relay test failed: ") + e.what()));
  }
}

}  // namespace

RelayTestBounds relay_test_bounds(const config::DaemonConfig& c,
                                  std::optional<milliseconds> requested,
                                  bool with_message) {
  RelayTestBounds b;
  if (requested) {
    b.whole = *requested;
    b.probe = with_message ? *requested / 2 : *requested;
    b.message = with_message ? *requested : milliseconds(0);
  } else {
    b.probe = c.probe_timeout;
    b.message =
        with_message ? milliseconds(c.test_message_timeout) : milliseconds(0);
    b.whole = b.probe + b.message;
  }
  b.step = std::min(milliseconds(c.probe_step_timeout), b.probe);
  return b;
}

void relay_test(ApplyLoop& loop, const json& args, Responder respond) {
  TestRequest request;
  try {
    request = parse_request(args);
  } catch (const ArgumentError& e) {
    respond(make_reply(Result::kBadRequest, e.what()));
    return;
  }
  if (running.fetch_add(1) >= kMaxRunning) {
    running.fetch_sub(1);
    respond(make_reply(Result::kError,
                       "too many relay tests running; "
                       "try again in a few seconds"));
    return;
  }
  unsigned long id = keep_answer(respond);
  try {
    // A copy of the configuration in force: taking it never waits for the
    // applying thread, and the test needs nothing else of the engine.
    std::thread(run_detached, std::move(request), loop.config(), respond, id)
        .detach();
  } catch (const std::system_error& e) {
    drop_answer(id);
    running.fetch_sub(1);
    respond(make_reply(Result::kError,
                       std::string("cannot start a relay test: ") + e.what()));
  }
}

void answer_running_relay_tests() {
  std::map<unsigned long, Responder> told;
  {
    std::lock_guard lock(answers_mutex);
    told.swap(answers);
  }
  for (auto& [id, respond] : told) {
    respond(make_reply(Result::kError,
                       "relay test not finished: havenoro-relayd is "
                       "stopping; run it again once it is back"));
  }
}

}  // namespace havenoro::daemon
