#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "certificate_check.h"
#include "havenoro_relay/probe/relay_probe.h"
#include "havenoro_relay/probe/transcript.h"
#include "smtp_connection.h"

namespace havenoro::probe {

/// One probe of one relay: the steps planned for its settings, run in
/// order until one fails, then QUIT while the session still stands.
/// Steps live in probe_run.cc (network and SMTP), probe_tls.cc and
/// probe_auth.cc.
class ProbeRun {
 public:
  ProbeRun(const panel::RelaySettings& relay, const ProbeOptions& options);

  /// Runs the probe once.
  ProbeResult run();

 private:
  /// What a step found besides its time.
  struct Outcome {
    bool ok = false;
    std::string detail;
    std::string hint;
  };
  using StepFunction = Outcome (ProbeRun::*)();
  struct Step {
    const char* name;
    StepFunction run;
  };

  std::vector<Step> plan() const;
  bool run_step(const Step& step, bool decides_verdict);
  void conclude();

  Outcome resolve();
  Outcome connect();
  Outcome banner();
  Outcome ehlo();
  Outcome quit();

  Outcome implicit_tls();  // probe_tls.cc
  Outcome starttls();
  Outcome plain_text();
  Outcome handshake(const char* mode);
  Outcome handshake_failure(const IoOutcome& io, const char* mode);
  Outcome no_banner();

  Outcome authenticate();  // probe_auth.cc
  IoOutcome auth_plain(SmtpReply& reply);
  IoOutcome auth_login(SmtpReply& reply);
  Outcome auth_answer(const SmtpReply& reply);

  Clock::time_point deadline() const;
  IoOutcome await_reply(SmtpReply& reply);
  IoOutcome command(std::string_view line, SmtpReply& reply);
  IoOutcome secret_command(std::string_view line, std::string_view shown,
                           SmtpReply& reply);
  IoOutcome exchange(std::string_view line, SmtpReply& reply);
  Outcome io_failure(const IoOutcome& io, std::string_view waiting_for);
  std::string timeout_text(std::string_view waiting_for) const;

  const panel::RelaySettings& relay_;
  const ProbeOptions& options_;
  Clock::time_point started_;
  Clock::time_point step_started_;
  Transcript transcript_;
  SmtpConnection connection_;
  CertificateCheck certificate_check_;
  std::unique_ptr<boost::asio::ssl::context> tls_context_;
  boost::asio::ip::tcp::resolver::results_type endpoints_;
  std::vector<std::string> capabilities_;
  // True while the last exchange ended with a whole reply, so that the
  // relay would understand a QUIT.
  bool session_open_ = false;
  ProbeResult result_;
};

/// "host:port", with an IPv6 address in brackets.
std::string relay_address(const std::string& host, uint16_t port);

}  // namespace havenoro::probe
