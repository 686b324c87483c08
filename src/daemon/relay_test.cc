#include "havenoro_relay/daemon/relay_test.h"

#include <fmt/format.h>

#include <atomic>
#include <thread>
#include <variant>

#include "havenoro_relay/panel/panel_reader.h"
#include "havenoro_relay/probe/relay_probe.h"
#include "havenoro_relay/probe/test_message.h"

namespace havenoro::daemon {
namespace {

using nlohmann::json;

// Each test holds a thread and a connection for up to its time bound.
constexpr int kMaxRunning = 4;
std::atomic<int> running{0};

// What one test needs, read on the applying thread.
struct TestJob {
  std::string domain;  ///< empty for the server-wide relay
  std::string to;
  panel::RelaySettings relay;
  probe::ProbeOptions probe;
  probe::TestMessageOptions message;
};

// The relay as the panel stored it now, or why there is none to test.
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

Reply verdict(const TestJob& job, const probe::ProbeResult& p,
              const std::optional<probe::TestMessageResult>& m) {
  json args = {{"domain", job.domain},
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

void run_job(TestJob job, Responder respond) {
  auto result = probe::probe_relay(job.relay, job.probe);
  std::optional<probe::TestMessageResult> message;
  if (result.works && !job.to.empty()) {
    message = probe::send_test_message(
        job.domain.empty() ? "localhost" : job.domain, job.to, job.message);
  }
  respond(verdict(job, result, message));
}

}  // namespace

void relay_test(ApplyLoop& loop, const json& args, Responder respond) {
  std::string domain = args.value("domain", "");
  std::string to = args.value("to", "");
  if (!to.empty() && !probe::is_plain_address(to)) {
    respond(make_reply(Result::kBadRequest,
                       "\"to\" must be one plain address, user@domain"));
    return;
  }
  if (running.fetch_add(1) >= kMaxRunning) {
    running.fetch_sub(1);
    respond(make_reply(Result::kError,
                       "too many relay tests running; "
                       "try again in a few seconds"));
    return;
  }
  loop.run([domain, to, respond](engine::Engine& engine) {
    const auto& c = engine.config();
    auto relay = stored_relay(c, domain);
    if (auto* why = std::get_if<std::string>(&relay)) {
      running.fetch_sub(1);
      respond(make_reply(Result::kError, *why));
      return;
    }
    TestJob job{domain, to, std::get<panel::RelaySettings>(relay), {}, {}};
    job.probe.ca_certificates = c.tls_ca_certificates;
    job.message = {c.exim_binary, c.exim_config, c.exim_main_log,
                   std::chrono::milliseconds(15000)};
    std::thread([job = std::move(job), respond]() mutable {
      run_job(std::move(job), respond);
      running.fetch_sub(1);
    }).detach();
  });
}

}  // namespace havenoro::daemon
