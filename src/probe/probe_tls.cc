// The TLS steps of a probe: TLS from the first byte, STARTTLS, or the
// plain text the panel chose, and what a failed handshake means.

#include <fmt/format.h>

#include "probe_hints.h"
#include "probe_run.h"

namespace havenoro::probe {
namespace {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;

// A TLS server answers a ClientHello at once; this is only how long to
// give one when the banner did not come.
constexpr std::chrono::milliseconds kSniffTimeout{2000};

bool is_ip_address(const std::string& host) {
  boost::system::error_code error;
  asio::ip::make_address(host, error);
  return !error;
}

std::string tls_summary(const TlsInfo& tls) {
  return fmt::format("{} {}, certificate '{}' issued by '{}', {}", tls.protocol,
                     tls.cipher, tls.subject, tls.issuer, tls.verify_detail);
}

}  // namespace

ProbeRun::Outcome ProbeRun::implicit_tls() {
  return handshake("implicit");
}

ProbeRun::Outcome ProbeRun::starttls() {
  if (!has_capability(capabilities_, "STARTTLS")) {
    return {false, "the relay does not offer STARTTLS", hint::kNoStarttls};
  }
  SmtpReply reply;
  IoOutcome io = command("STARTTLS", reply);
  if (!io.ok()) return io_failure(io, "the answer to STARTTLS");
  if (reply.code != 220) {
    return {false, "the relay answered STARTTLS with " + reply.text(),
            hint::kStarttlsRefused};
  }
  return handshake("starttls");
}

// Exim's transport avoids TLS for "none" even where the relay offers it,
// and the probe does as Exim will.
ProbeRun::Outcome ProbeRun::plain_text() {
  return {true, "skipped: security is \"none\", the session stays plain text",
          ""};
}

ProbeRun::Outcome ProbeRun::handshake(const char* mode) {
  session_open_ = false;
  try {
    tls_context_ = make_tls_context(options_.ca_certificates);
  } catch (const std::runtime_error& e) {
    return {false, e.what(), hint::kCaFile};
  }

  TlsPeer peer;
  // RFC 6066 allows no address as a server name.
  if (!is_ip_address(relay_.host)) peer.sni = relay_.host;
  peer.verify_mode =
      relay_.verify_certificate ? ssl::verify_peer : ssl::verify_none;
  CertificateCheck* check = &certificate_check_;
  peer.verify = [check](bool preverified, ssl::verify_context& context) {
    return check->verify(preverified, context);
  };

  IoOutcome io = connection_.start_tls(*tls_context_, peer, deadline());
  TlsInfo info = describe_tls(connection_.tls_handle(), certificate_check_,
                              mode, options_.ca_certificates);
  if (!info.subject.empty()) result_.tls = info;
  if (!io.ok()) return handshake_failure(io, mode);

  result_.tls = info;
  transcript_.note(
      fmt::format("TLS started ({}): {}", mode, tls_summary(info)));
  // After STARTTLS the relay waits for EHLO; in implicit mode, nothing
  // has been said yet.
  session_open_ = std::string_view(mode) == "starttls";
  return {true, fmt::format("{}: {}", mode, tls_summary(info)), ""};
}

ProbeRun::Outcome ProbeRun::handshake_failure(const IoOutcome& io,
                                              const char* mode) {
  const CertificateCheck& check = certificate_check_;
  if (check.enforced() && !check.problem().empty()) {
    transcript_.note("TLS refused: " + check.problem());
    return {false,
            fmt::format("the certificate '{}' issued by '{}' is not "
                        "accepted: {}",
                        check.subject(), check.issuer(), check.problem()),
            check.name_mismatch() ? hint::kWrongName : hint::kUntrusted};
  }
  std::string what = io.timed_out ? timeout_text("the TLS handshake")
                                  : fmt::format("TLS handshake failed: {}",
                                                io.error.message());
  transcript_.note(what);
  // In implicit mode a plain SMTP server's "220" banner is what breaks
  // the handshake.
  bool implicit = std::string_view(mode) == "implicit";
  return {false, what,
          implicit && !io.timed_out ? hint::kNotImplicitTls
          : io.timed_out            ? hint::kTimedOut
                                    : hint::kTlsFailed};
}

// No banner on a plain connection: either the relay waits for a TLS
// ClientHello (TLS from the first byte, the wrong mode for these settings)
// or it is not talking at all. A handshake without any credential tells
// which, so the hint can be definite.
ProbeRun::Outcome ProbeRun::no_banner() {
  std::string what = timeout_text("the banner");
  transcript_.note(what);

  ssl::context sniff_context(ssl::context::tls_client);
  TlsPeer peer;
  if (!is_ip_address(relay_.host)) peer.sni = relay_.host;
  auto sniff_deadline =
      std::min(deadline() + std::min(options_.step_timeout, kSniffTimeout),
               started_ + options_.total_timeout);
  IoOutcome io = connection_.start_tls(sniff_context, peer, sniff_deadline);
  session_open_ = false;
  if (io.ok()) {
    transcript_.note("the relay answered a TLS handshake instead");
    return {false, what + "; the relay answered a TLS handshake instead",
            hint::kSpeaksImplicitTls};
  }
  return {false, what, hint::kSilentServer};
}

}  // namespace havenoro::probe
