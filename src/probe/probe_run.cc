#include "probe_run.h"

#include <fmt/format.h>

#include <boost/asio/ip/host_name.hpp>

#include "probe_hints.h"
#include "resolve.h"

namespace havenoro::probe {
namespace {

namespace asio = boost::asio;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

Redactor redactor_for(const panel::RelaySettings& relay) {
  Redactor redactor;
  if (relay.authenticates())
    redactor.add_credentials(relay.username, relay.password);
  return redactor;
}

const char* tls_mode(const panel::RelaySettings& relay) {
  return relay.implicit_tls()   ? "implicit"
         : relay.requires_tls() ? "starttls"
                                : "none";
}

std::string endpoint_text(const asio::ip::tcp::endpoint& endpoint) {
  return relay_address(endpoint.address().to_string(), endpoint.port());
}

std::string keywords(const std::vector<std::string>& capabilities) {
  std::string out;
  for (const auto& line : capabilities) out += (out.empty() ? "" : ", ") + line;
  return out;
}

}  // namespace

std::string relay_address(const std::string& host, uint16_t port) {
  if (host.find(':') != std::string::npos)
    return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

ProbeRun::ProbeRun(const panel::RelaySettings& relay,
                   const ProbeOptions& options)
    : relay_(relay),
      options_(options),
      started_(Clock::now()),
      step_started_(started_),
      transcript_(redactor_for(relay)),
      certificate_check_(relay.host, relay.verify_certificate) {
  result_.relay = relay_address(relay.host, relay.port);
  result_.tls_mode = tls_mode(relay);
}

// The steps Exim's smtp transport takes for these settings, in its order.
std::vector<ProbeRun::Step> ProbeRun::plan() const {
  Step resolve{"resolve", &ProbeRun::resolve};
  Step connect{"connect", &ProbeRun::connect};
  Step banner{"banner", &ProbeRun::banner};
  Step ehlo{"ehlo", &ProbeRun::ehlo};
  Step auth{"auth", &ProbeRun::authenticate};
  if (relay_.implicit_tls()) {
    Step tls{"tls", &ProbeRun::implicit_tls};
    return {resolve, connect, tls, banner, ehlo, auth};
  }
  if (relay_.requires_tls()) {
    Step tls{"tls", &ProbeRun::starttls};
    return {resolve, connect, banner, ehlo, tls, ehlo, auth};
  }
  Step plain{"tls", &ProbeRun::plain_text};
  return {resolve, connect, banner, ehlo, plain, auth};
}

ProbeResult ProbeRun::run() {
  bool works = true;
  for (const auto& step : plan()) {
    if (!run_step(step, true)) {
      works = false;
      break;
    }
  }
  // A polite end, also after a refused AUTH; whether the relay answers it
  // does not change the verdict.
  if (session_open_ && Clock::now() < started_ + options_.total_timeout)
    run_step({"quit", &ProbeRun::quit}, false);

  result_.works = works;
  conclude();
  return std::move(result_);
}

// Unexpected errors (a thread that cannot start, memory) end the probe as
// a failed step rather than escaping to the caller mid-dialogue.
bool ProbeRun::run_step(const Step& step, bool decides_verdict) {
  step_started_ = Clock::now();
  Outcome outcome;
  try {
    outcome = (this->*step.run)();
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    outcome = {false, fmt::format("internal error: {}", e.what()), ""};
  }
  const Redactor& redactor = transcript_.redactor();
  ProbeStep record{step.name, outcome.ok,
                   duration_cast<milliseconds>(Clock::now() - step_started_),
                   redactor.clean(outcome.detail)};
  result_.steps.push_back(record);
  if (!outcome.ok && decides_verdict && result_.failed_step.empty()) {
    result_.failed_step = step.name;
    result_.hint = redactor.clean(outcome.hint);
  }
  return outcome.ok;
}

void ProbeRun::conclude() {
  result_.transcript = transcript_.lines();
  result_.took = duration_cast<milliseconds>(Clock::now() - started_);
  if (result_.works) {
    result_.verdict = "works";
    return;
  }
  const ProbeStep* failed = nullptr;
  for (const auto& step : result_.steps) {
    if (step.name == result_.failed_step && !step.ok) failed = &step;
  }
  result_.verdict = fmt::format("{} failed: {}", result_.failed_step,
                                failed ? failed->detail : "");
  if (!result_.hint.empty()) result_.verdict += "; hint: " + result_.hint;
}

ProbeRun::Outcome ProbeRun::resolve() {
  Resolution r = resolve_host(relay_.host, relay_.port, deadline());
  if (r.timed_out) return {false, timeout_text("DNS"), hint::kDnsTimeout};
  if (r.error) {
    return {false,
            fmt::format("'{}' does not resolve: {}", relay_.host,
                        r.error.message()),
            hint::kNoSuchHost};
  }
  endpoints_ = std::move(r.endpoints);
  std::string addresses;
  for (const auto& entry : endpoints_) {
    addresses += addresses.empty() ? "" : ", ";
    addresses += entry.endpoint().address().to_string();
  }
  return {true, fmt::format("{}: {}", relay_.host, addresses), ""};
}

ProbeRun::Outcome ProbeRun::connect() {
  asio::ip::tcp::endpoint connected;
  IoOutcome io = connection_.connect(endpoints_, deadline(), connected);
  if (io.timed_out)
    return {false, timeout_text("the connection"), hint::kConnectTimeout};
  if (io.error == asio::error::connection_refused) {
    return {false, fmt::format("{} refused the connection", result_.relay),
            hint::kNothingListening};
  }
  if (io.error) {
    return {false,
            fmt::format("cannot connect to {}: {}", result_.relay,
                        io.error.message()),
            hint::kUnreachable};
  }
  std::string text = "connected to " + endpoint_text(connected);
  transcript_.note(text);
  return {true, text, ""};
}

ProbeRun::Outcome ProbeRun::banner() {
  SmtpReply reply;
  IoOutcome io = await_reply(reply);
  if (io.timed_out && !connection_.tls_active()) return no_banner();
  if (!io.ok()) return io_failure(io, "the banner");
  if (reply.code != 220) {
    return {false, "the relay greeted with " + reply.text(),
            reply.code >= 400 && reply.code < 500 ? hint::kTemporary
                                                  : hint::kRefusedUs};
  }
  return {true, reply.text(), ""};
}

ProbeRun::Outcome ProbeRun::ehlo() {
  std::string name =
      options_.helo_name.empty() ? asio::ip::host_name() : options_.helo_name;
  SmtpReply reply;
  IoOutcome io = command("EHLO " + name, reply);
  if (!io.ok()) return io_failure(io, "the answer to EHLO");
  if (reply.code != 250) {
    return {false, "the relay answered EHLO with " + reply.text(),
            hint::kRefusedUs};
  }
  capabilities_ = ehlo_capabilities(reply);
  result_.capabilities.clear();
  for (const auto& line : capabilities_)
    result_.capabilities.push_back(transcript_.redactor().clean(line));
  const char* when = connection_.tls_active() ? "over TLS"
                     : relay_.requires_tls()  ? "before TLS"
                                              : "in plain text";
  return {true, fmt::format("{}: {}", when, keywords(result_.capabilities)),
          ""};
}

ProbeRun::Outcome ProbeRun::quit() {
  SmtpReply reply;
  IoOutcome io = command("QUIT", reply);
  if (io.error == asio::error::eof ||
      io.error == asio::ssl::error::stream_truncated) {
    return {true, "the relay closed the connection", ""};
  }
  if (!io.ok()) return io_failure(io, "the answer to QUIT");
  return {reply.code == 221, reply.text(), ""};
}

// The step's own limit, or what is left of the whole probe's if less.
Clock::time_point ProbeRun::deadline() const {
  return std::min(step_started_ + options_.step_timeout,
                  started_ + options_.total_timeout);
}

std::string ProbeRun::timeout_text(std::string_view waiting_for) const {
  if (started_ + options_.total_timeout <=
      step_started_ + options_.step_timeout) {
    return fmt::format(
        "timed out waiting for {}: the test's limit of {} ms "
        "ran out",
        waiting_for, options_.total_timeout.count());
  }
  return fmt::format("timed out waiting for {}: no answer within {} ms",
                     waiting_for, options_.step_timeout.count());
}

IoOutcome ProbeRun::await_reply(SmtpReply& reply) {
  IoOutcome io = connection_.read_reply(
      reply, deadline(), [this](std::string_view l) { transcript_.server(l); });
  session_open_ = io.ok();
  return io;
}

IoOutcome ProbeRun::command(std::string_view line, SmtpReply& reply) {
  transcript_.client(line);
  return exchange(line, reply);
}

// `shown` is what the transcript gets in front of "<redacted>".
IoOutcome ProbeRun::secret_command(std::string_view line,
                                   std::string_view shown, SmtpReply& reply) {
  transcript_.client_redacted(shown);
  return exchange(line, reply);
}

IoOutcome ProbeRun::exchange(std::string_view line, SmtpReply& reply) {
  IoOutcome io = connection_.send_line(line, deadline());
  if (!io.ok()) {
    session_open_ = false;
    return io;
  }
  return await_reply(reply);
}

ProbeRun::Outcome ProbeRun::io_failure(const IoOutcome& io,
                                       std::string_view waiting_for) {
  if (io.timed_out) {
    transcript_.note(timeout_text(waiting_for));
    return {false, timeout_text(waiting_for), hint::kTimedOut};
  }
  if (io.error == asio::error::eof ||
      io.error == asio::ssl::error::stream_truncated) {
    return {false,
            fmt::format("the relay closed the connection instead of "
                        "sending {}",
                        waiting_for),
            hint::kClosed};
  }
  if (io.error == asio::error::invalid_argument)
    return {false, fmt::format("{} is not SMTP", waiting_for), hint::kNotSmtp};
  if (io.error == asio::error::not_found) {
    return {false, fmt::format("{} has a line longer than 64 KiB", waiting_for),
            hint::kNotSmtp};
  }
  return {
      false,
      fmt::format("error waiting for {}: {}", waiting_for, io.error.message()),
      hint::kClosed};
}

}  // namespace havenoro::probe
