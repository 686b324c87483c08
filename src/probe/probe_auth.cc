// The AUTH step of a probe: the mechanism Exim would choose, the
// credentials sent only where they may go, and what the answer means.

#include <fmt/format.h>

#include "base64.h"
#include "havenoro_relay/render/credential_file.h"
#include "probe_hints.h"
#include "probe_run.h"

namespace havenoro::probe {
namespace {

std::string joined(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& word : words) out += (out.empty() ? "" : " ") + word;
  return out;
}

const char* hint_for(int code) {
  switch (code) {
    case 535:
      return hint::kCredentialsRefused;
    case 534:
    case 538:
      return hint::kStrongerAuth;
    default:
      return code >= 400 && code < 500 ? hint::kTemporary : hint::kAuthRefused;
  }
}

}  // namespace

ProbeRun::Outcome ProbeRun::authenticate() {
  if (!relay_.authenticates()) {
    return {true,
            "skipped: no username set, the relay must accept this server "
            "by its address",
            ""};
  }
  // The plan never gets here without TLS unless the panel chose "none";
  // this keeps it so whatever the plan becomes.
  if (relay_.requires_tls() && !connection_.tls_active())
    return {false, "refusing to send the credentials without TLS", ""};

  std::vector<std::string> offered = auth_mechanisms(capabilities_);
  std::string mechanism = choose_mechanism(offered);
  if (mechanism.empty()) {
    if (offered.empty())
      return {false, "the relay offers no AUTH", hint::kNoAuth};
    return {false, "the relay offers AUTH " + joined(offered) + " only",
            hint::kNoMechanism};
  }
  result_.auth_mechanism = mechanism;

  SmtpReply reply;
  IoOutcome io = mechanism == "PLAIN" ? auth_plain(reply) : auth_login(reply);
  if (!io.ok()) return io_failure(io, "the answer to AUTH " + mechanism);
  return auth_answer(reply);
}

// RFC 4616 with the initial response on the command line, as Exim sends it.
IoOutcome ProbeRun::auth_plain(SmtpReply& reply) {
  std::string response = plain_response(relay_.username, relay_.password);
  return secret_command("AUTH PLAIN " + response, "AUTH PLAIN ", reply);
}

// The LOGIN exchange: two 334 prompts, answered with the base64 username
// and password. Any other answer ends it.
IoOutcome ProbeRun::auth_login(SmtpReply& reply) {
  IoOutcome io = command("AUTH LOGIN", reply);
  if (!io.ok() || reply.code != 334) return io;
  io = secret_command(render::base64_encode(relay_.username), "", reply);
  if (!io.ok() || reply.code != 334) return io;
  return secret_command(render::base64_encode(relay_.password), "", reply);
}

ProbeRun::Outcome ProbeRun::auth_answer(const SmtpReply& reply) {
  if (reply.code == 235) {
    return {
        true,
        fmt::format("{} accepted: {}", result_.auth_mechanism, reply.text()),
        ""};
  }
  return {false, "the relay answered " + reply.text(), hint_for(reply.code)};
}

}  // namespace havenoro::probe
