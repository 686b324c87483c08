// Verifies the relay probe against real relays (python3-aiosmtpd) on
// loopback ports: which step fails, why, within what time, and that the
// password never shows in any form.

#include "havenoro_relay/probe/relay_probe.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "havenoro_relay/probe/smtp_reply.h"
#include "relay_process.h"
#include "scripted_relay.h"
#include "silent_listener.h"
#include "test_certs.h"

namespace havenoro::probe {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using panel::Security;
using testing::free_port;
using testing::RelayOptions;
using testing::RelayProcess;
using testing::ScriptedRelay;
using testing::SilentListener;
using testing::test_certs;

// Leading and trailing spaces and a non-ASCII letter: what the user typed
// is what the relay must receive, and none of it may show.
const std::string kUsername = "apikey";
const std::string kPassword = " s3cr^t p\xC3\xA4ss:word ";
// base64 of the password, and of "\0apikey\0" + password (AUTH PLAIN).
const std::string kPasswordBase64 = "IHMzY3JedCBww6Rzczp3b3JkIA==";
const std::string kPlainBase64 = "AGFwaWtleQAgczNjcl50IHDDpHNzOndvcmQg";
const std::string kUsernameBase64 = "YXBpa2V5";

class RelayProbeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char name[] = "/tmp/havenoro-probe-XXXXXX";
    ASSERT_NE(::mkdtemp(name), nullptr);
    dir_ = name;
    fs::permissions(dir_, fs::perms(0755));
  }
  void TearDown() override {
    relays_.clear();
    fs::remove_all(dir_);
  }

  RelayProcess& start_relay(RelayOptions o) {
    if (o.mode != "plain" && o.cert.empty()) {
      o.cert = test_certs().localhost_cert;
      o.key = test_certs().localhost_key;
    }
    auto where = dir_ / ("relay" + std::to_string(relays_.size()));
    relays_.push_back(std::make_unique<RelayProcess>(where, o));
    return *relays_.back();
  }

  static RelayOptions mode(const std::string& m) {
    RelayOptions o;
    o.mode = m;
    return o;
  }
  static RelayOptions mechanisms(const std::string& m) {
    RelayOptions o;
    o.mechanisms = m;
    return o;
  }
  static RelayOptions refusing_auth(const std::string& reply) {
    RelayOptions o;
    o.auth_reply = reply;
    return o;
  }
  static RelayOptions certificate(const fs::path& cert, const fs::path& key) {
    RelayOptions o;
    o.cert = cert;
    o.key = key;
    return o;
  }

  static panel::RelaySettings relay(uint16_t port, Security security) {
    panel::RelaySettings r;
    r.host = "localhost";
    r.port = port;
    r.security = security;
    r.username = kUsername;
    r.password = kPassword;
    return r;
  }

  static ProbeOptions options() {
    ProbeOptions o;
    o.ca_certificates = test_certs().ca;
    o.step_timeout = 2000ms;
    o.total_timeout = 6000ms;
    o.helo_name = "probe.havenoro.test";
    return o;
  }

  static const ProbeStep* step(const ProbeResult& r, const std::string& n) {
    for (const auto& s : r.steps) {
      if (s.name == n) return &s;
    }
    return nullptr;
  }

  static std::vector<std::string> step_names(const ProbeResult& r) {
    std::vector<std::string> names;
    for (const auto& s : r.steps) names.push_back(s.name);
    return names;
  }

  // Everything the panel could show, searched for every form of the
  // password (and the base64 username a LOGIN exchange sends).
  static void expect_no_secret(const ProbeResult& r) {
    std::string all = r.to_json().dump();
    for (const auto& secret :
         {kPassword, std::string("s3cr^t"), kPasswordBase64, kPlainBase64,
          kUsernameBase64}) {
      EXPECT_EQ(all.find(secret), std::string::npos) << secret << " in " << all;
    }
  }

  static bool contains(const std::vector<std::string>& lines,
                       const std::string& wanted) {
    return std::find(lines.begin(), lines.end(), wanted) != lines.end();
  }

  fs::path dir_;
  std::vector<std::unique_ptr<RelayProcess>> relays_;
};

// Verifies a whole successful probe over STARTTLS (auto on a port that is
// not 465), with the certificate verified and PLAIN chosen.
TEST_F(RelayProbeTest, WorksOverStarttls) {
  auto& server = start_relay({});
  ProbeResult r = probe_relay(relay(server.port(), Security::kAuto), options());

  EXPECT_TRUE(r.works) << r.verdict;
  EXPECT_EQ(r.verdict, "works");
  EXPECT_EQ(r.failed_step, "");
  EXPECT_EQ(r.tls_mode, "starttls");
  EXPECT_EQ(step_names(r),
            (std::vector<std::string>{"resolve", "connect", "banner", "ehlo",
                                      "tls", "ehlo", "auth", "quit"}));
  ASSERT_TRUE(r.tls.has_value());
  EXPECT_EQ(r.tls->mode, "starttls");
  EXPECT_TRUE(r.tls->verified) << r.tls->verify_detail;
  EXPECT_EQ(r.tls->subject, "CN=localhost");
  EXPECT_EQ(r.tls->issuer, "CN=Havenoro Probe Test CA");
  EXPECT_EQ(r.auth_mechanism, "PLAIN");
  EXPECT_FALSE(contains(r.capabilities, "STARTTLS"));
  EXPECT_EQ(auth_mechanisms(r.capabilities),
            (std::vector<std::string>{"LOGIN", "PLAIN"}));
  EXPECT_TRUE(contains(r.transcript, "C: STARTTLS"));
  EXPECT_TRUE(contains(r.transcript, "C: AUTH PLAIN <redacted>"));
  expect_no_secret(r);

  auto events = server.auth_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0]["password_b64"], kPasswordBase64);
  EXPECT_EQ(events[0]["username_b64"], kUsernameBase64);
}

// Verifies a successful probe with TLS from the first byte.
TEST_F(RelayProbeTest, WorksOverImplicitTls) {
  auto& server = start_relay(mode("tls"));
  ProbeResult r = probe_relay(relay(server.port(), Security::kTls), options());

  EXPECT_TRUE(r.works) << r.verdict;
  EXPECT_EQ(r.tls_mode, "implicit");
  EXPECT_EQ(step_names(r),
            (std::vector<std::string>{"resolve", "connect", "tls", "banner",
                                      "ehlo", "auth", "quit"}));
  ASSERT_TRUE(r.tls.has_value());
  EXPECT_EQ(r.tls->mode, "implicit");
  EXPECT_TRUE(r.tls->verified);
  EXPECT_FALSE(r.tls->protocol.empty());
  EXPECT_FALSE(contains(r.transcript, "C: STARTTLS"));
  expect_no_secret(r);
}

// Verifies that a refused password fails AUTH with the relay's answer.
TEST_F(RelayProbeTest, ReportsRefusedCredentials) {
  auto& server = start_relay(
      refusing_auth("535 5.7.8 Authentication credentials invalid"));
  ProbeResult r = probe_relay(relay(server.port(), Security::kAuto), options());

  EXPECT_FALSE(r.works);
  EXPECT_EQ(r.failed_step, "auth");
  EXPECT_NE(r.verdict.find("535 5.7.8 Authentication credentials invalid"),
            std::string::npos)
      << r.verdict;
  EXPECT_TRUE(r.hint.starts_with("credentials refused")) << r.hint;
  ASSERT_NE(step(r, "quit"), nullptr);
  expect_no_secret(r);
}

// Verifies that a relay offering only PLAIN gets PLAIN.
TEST_F(RelayProbeTest, UsesPlainOnPlainOnlyRelay) {
  auto& server = start_relay(mechanisms("PLAIN"));
  ProbeResult r = probe_relay(relay(server.port(), Security::kAuto), options());

  EXPECT_TRUE(r.works) << r.verdict;
  EXPECT_EQ(r.auth_mechanism, "PLAIN");
  expect_no_secret(r);
}

// Verifies that a relay offering only LOGIN gets LOGIN, with both the
// username and the password lines redacted, and receives them exactly.
TEST_F(RelayProbeTest, UsesLoginOnLoginOnlyRelay) {
  auto& server = start_relay(mechanisms("LOGIN"));
  ProbeResult r = probe_relay(relay(server.port(), Security::kAuto), options());

  EXPECT_TRUE(r.works) << r.verdict;
  EXPECT_EQ(r.auth_mechanism, "LOGIN");
  EXPECT_TRUE(contains(r.transcript, "C: AUTH LOGIN"));
  EXPECT_EQ(
      std::count(r.transcript.begin(), r.transcript.end(), "C: <redacted>"), 2);
  expect_no_secret(r);

  auto events = server.auth_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0]["mechanism"], "LOGIN");
  EXPECT_EQ(events[0]["password_b64"], kPasswordBase64);
}

// Verifies that "tls" against a STARTTLS port fails the handshake at once
// (the relay's banner is no TLS record) with the wrong-mode hint.
TEST_F(RelayProbeTest, TlsAgainstStarttlsRelayFailsFast) {
  auto& server = start_relay({});
  ProbeResult r = probe_relay(relay(server.port(), Security::kTls), options());

  EXPECT_FALSE(r.works);
  EXPECT_EQ(r.failed_step, "tls");
  EXPECT_TRUE(r.hint.starts_with("wrong TLS mode for this port")) << r.hint;
  EXPECT_LT(r.took, 1000ms);
  EXPECT_TRUE(server.auth_events().empty());
  expect_no_secret(r);
}

// Verifies that "starttls" against a TLS-from-the-first-byte port waits
// for a banner that never comes, for a bounded time, and then says so.
TEST_F(RelayProbeTest, StarttlsAgainstImplicitRelayTimesOut) {
  auto& server = start_relay(mode("tls"));
  ProbeOptions o = options();
  o.step_timeout = 1000ms;
  ProbeResult r = probe_relay(relay(server.port(), Security::kStarttls), o);

  EXPECT_FALSE(r.works);
  EXPECT_EQ(r.failed_step, "banner");
  EXPECT_TRUE(r.hint.starts_with("wrong TLS mode for this port")) << r.hint;
  EXPECT_NE(r.hint.find("speaks TLS from the first byte"), std::string::npos)
      << r.hint;
  EXPECT_GE(r.took, 1000ms);
  EXPECT_LT(r.took, 3000ms);
  EXPECT_TRUE(server.auth_events().empty());
  expect_no_secret(r);
}

// Verifies that a closed port fails connect with "nothing listening".
TEST_F(RelayProbeTest, ReportsNothingListening) {
  ProbeResult r = probe_relay(relay(free_port(), Security::kAuto), options());

  EXPECT_FALSE(r.works);
  EXPECT_EQ(r.failed_step, "connect");
  EXPECT_TRUE(r.hint.starts_with("nothing listening")) << r.hint;
  EXPECT_LT(r.took, 1000ms);
  expect_no_secret(r);
}

// Verifies that a listener that accepts and never speaks costs a bounded
// time, and the hint names both likely causes.
TEST_F(RelayProbeTest, SilentListenerIsBounded) {
  SilentListener silent;
  ProbeOptions o = options();
  o.step_timeout = 1000ms;
  ProbeResult r = probe_relay(relay(silent.port(), Security::kAuto), o);

  EXPECT_FALSE(r.works);
  EXPECT_EQ(r.failed_step, "banner");
  EXPECT_TRUE(r.hint.starts_with("wrong TLS mode for this port")) << r.hint;
  EXPECT_NE(r.hint.find("not an SMTP server"), std::string::npos) << r.hint;
  EXPECT_GE(r.took, 1000ms);
  EXPECT_LT(r.took, 3000ms);
  expect_no_secret(r);
}

// Verifies that the whole probe's limit holds even when each step's
// limit is longer.
TEST_F(RelayProbeTest, TotalTimeoutBoundsTheProbe) {
  SilentListener silent;
  ProbeOptions o = options();
  o.step_timeout = 5000ms;
  o.total_timeout = 1000ms;
  ProbeResult r = probe_relay(relay(silent.port(), Security::kTls), o);

  EXPECT_FALSE(r.works);
  EXPECT_EQ(r.failed_step, "tls");
  EXPECT_TRUE(r.hint.starts_with("timed out")) << r.hint;
  EXPECT_NE(r.verdict.find("limit of 1000 ms"), std::string::npos) << r.verdict;
  EXPECT_GE(r.took, 1000ms);
  EXPECT_LT(r.took, 2000ms);
}

// Verifies that a certificate from an unknown CA fails TLS when
// verification is on, and says why.
TEST_F(RelayProbeTest, UntrustedCertificateFailsWithVerification) {
  auto& server = start_relay({});
  ProbeOptions o = options();
  o.ca_certificates = "system";
  ProbeResult r = probe_relay(relay(server.port(), Security::kAuto), o);

  EXPECT_FALSE(r.works);
  EXPECT_EQ(r.failed_step, "tls");
  EXPECT_TRUE(r.hint.starts_with("the relay's certificate is not trusted"))
      << r.hint;
  ASSERT_TRUE(r.tls.has_value());
  EXPECT_FALSE(r.tls->verified);
  EXPECT_EQ(r.tls->subject, "CN=localhost");
  EXPECT_TRUE(server.auth_events().empty());
  expect_no_secret(r);
}

// Verifies that the same certificate works with verification off, and is
// reported as not verified.
TEST_F(RelayProbeTest, UntrustedCertificateWorksWithoutVerification) {
  auto& server = start_relay({});
  ProbeOptions o = options();
  o.ca_certificates = "system";
  auto settings = relay(server.port(), Security::kAuto);
  settings.verify_certificate = false;
  ProbeResult r = probe_relay(settings, o);

  EXPECT_TRUE(r.works) << r.verdict;
  ASSERT_TRUE(r.tls.has_value());
  EXPECT_FALSE(r.tls->verified);
  EXPECT_NE(r.tls->verify_detail.find("verify_certificate is off"),
            std::string::npos)
      << r.tls->verify_detail;
  expect_no_secret(r);
}

// Verifies that a trusted certificate for another name fails the host
// name check.
TEST_F(RelayProbeTest, CertificateForAnotherNameFails) {
  auto& server =
      start_relay(certificate(test_certs().other_cert, test_certs().other_key));
  ProbeResult r = probe_relay(relay(server.port(), Security::kAuto), options());

  EXPECT_FALSE(r.works);
  EXPECT_EQ(r.failed_step, "tls");
  EXPECT_TRUE(r.hint.starts_with("the relay's certificate does not name"))
      << r.hint;
  EXPECT_NE(r.verdict.find("'localhost'"), std::string::npos) << r.verdict;
}

// Verifies that the certificate is checked against an address when the
// relay is given by address (the SAN holds IP:127.0.0.1).
TEST_F(RelayProbeTest, VerifiesCertificateForAddress) {
  auto& server = start_relay({});
  auto settings = relay(server.port(), Security::kAuto);
  settings.host = "127.0.0.1";
  ProbeResult r = probe_relay(settings, options());

  EXPECT_TRUE(r.works) << r.verdict;
  EXPECT_TRUE(r.tls && r.tls->verified);
}

// Verifies that a CA file that cannot be read fails TLS with its own hint.
TEST_F(RelayProbeTest, ReportsUnreadableCaFile) {
  auto& server = start_relay({});
  ProbeOptions o = options();
  o.ca_certificates = (dir_ / "missing.pem").string();
  ProbeResult r = probe_relay(relay(server.port(), Security::kAuto), o);

  EXPECT_EQ(r.failed_step, "tls");
  EXPECT_TRUE(r.hint.starts_with("the CA certificates cannot be read"))
      << r.hint;
}

// Verifies that with STARTTLS required and not offered, the credentials
// are not sent in clear.
TEST_F(RelayProbeTest, NeverSendsPasswordWithoutStarttls) {
  auto& server = start_relay(mode("plain"));
  ProbeResult r = probe_relay(relay(server.port(), Security::kAuto), options());

  EXPECT_FALSE(r.works);
  EXPECT_EQ(r.failed_step, "tls");
  EXPECT_TRUE(r.hint.starts_with("the relay does not offer STARTTLS"))
      << r.hint;
  EXPECT_EQ(step(r, "auth"), nullptr);
  EXPECT_TRUE(server.auth_events().empty());
  expect_no_secret(r);
}

// Verifies that "none" speaks plain text, as the panel chose, and still
// redacts the credentials.
TEST_F(RelayProbeTest, WorksInPlainTextWhenSecurityIsNone) {
  auto& server = start_relay(mode("plain"));
  ProbeResult r = probe_relay(relay(server.port(), Security::kNone), options());

  EXPECT_TRUE(r.works) << r.verdict;
  EXPECT_EQ(r.tls_mode, "none");
  EXPECT_FALSE(r.tls.has_value());
  EXPECT_TRUE(step(r, "tls")->detail.starts_with("skipped"));
  EXPECT_EQ(server.auth_events().size(), 1u);
  expect_no_secret(r);
}

// Verifies that a relay that lets this server in by address works
// without credentials, the AUTH step skipped.
TEST_F(RelayProbeTest, WorksWithoutCredentials) {
  auto& server = start_relay(mechanisms(""));
  auto settings = relay(server.port(), Security::kAuto);
  settings.username.clear();
  settings.password.clear();
  ProbeResult r = probe_relay(settings, options());

  EXPECT_TRUE(r.works) << r.verdict;
  EXPECT_TRUE(step(r, "auth")->detail.starts_with("skipped"));
  EXPECT_TRUE(server.auth_events().empty());
}

// Verifies that AUTH mechanisms other than PLAIN and LOGIN are not tried.
TEST_F(RelayProbeTest, ReportsUnsupportedMechanisms) {
  ScriptedRelay server(
      "220 scripted\r\n",
      {{"EHLO", "250-scripted\r\n250 AUTH CRAM-MD5 XOAUTH2\r\n"},
       {"QUIT", "221 bye\r\n"}});
  ProbeResult r = probe_relay(relay(server.port(), Security::kNone), options());

  EXPECT_EQ(r.failed_step, "auth");
  EXPECT_TRUE(r.hint.starts_with("relay offers no AUTH mechanism we support"))
      << r.hint;
  EXPECT_NE(r.verdict.find("CRAM-MD5 XOAUTH2"), std::string::npos) << r.verdict;
  EXPECT_EQ(server.received(),
            (std::vector<std::string>{"EHLO probe.havenoro.test", "QUIT"}));
}

// Verifies that a relay offering no AUTH at all gets the same hint.
TEST_F(RelayProbeTest, ReportsRelayWithoutAuth) {
  ScriptedRelay server("220 scripted\r\n",
                       {{"EHLO", "250 scripted\r\n"}, {"QUIT", "221 bye\r\n"}});
  ProbeResult r = probe_relay(relay(server.port(), Security::kNone), options());

  EXPECT_EQ(r.failed_step, "auth");
  EXPECT_TRUE(r.hint.starts_with("relay offers no AUTH mechanism we support"))
      << r.hint;
}

// Verifies that a password the relay echoes back in any form is hidden
// from the transcript, the steps and the verdict.
TEST_F(RelayProbeTest, RedactsPasswordEchoedByRelay) {
  ScriptedRelay server(
      "220 scripted\r\n",
      {{"EHLO", "250-scripted\r\n250 AUTH PLAIN\r\n"},
       {"AUTH", "535-you sent " + kPlainBase64 + "\r\n535 that is " +
                    kPassword + " or " + kPasswordBase64 + "\r\n"},
       {"QUIT", "221 bye\r\n"}});
  ProbeResult r = probe_relay(relay(server.port(), Security::kNone), options());

  EXPECT_EQ(r.failed_step, "auth");
  EXPECT_TRUE(contains(r.transcript, "S: 535 that is <redacted> or <redacted>"))
      << r.to_json().dump(2);
  expect_no_secret(r);
}

// Verifies that a relay refusing STARTTLS fails the tls step, and the
// credentials stay unsent.
TEST_F(RelayProbeTest, ReportsRefusedStarttls) {
  ScriptedRelay server("220 scripted\r\n",
                       {{"EHLO", "250-scripted\r\n250 STARTTLS\r\n"},
                        {"STARTTLS", "454 4.7.0 TLS not available\r\n"},
                        {"QUIT", "221 bye\r\n"}});
  ProbeResult r = probe_relay(relay(server.port(), Security::kAuto), options());

  EXPECT_EQ(r.failed_step, "tls");
  EXPECT_TRUE(r.hint.starts_with("the relay refused STARTTLS")) << r.hint;
  EXPECT_NE(r.verdict.find("454 4.7.0 TLS not available"), std::string::npos);
  EXPECT_EQ(server.received(),
            (std::vector<std::string>{"EHLO probe.havenoro.test", "STARTTLS",
                                      "QUIT"}));
}

// Verifies that a server that does not speak SMTP fails with its own hint.
TEST_F(RelayProbeTest, ReportsAnswerThatIsNotSmtp) {
  ScriptedRelay server("SSH-2.0-OpenSSH_9.2\r\n", {});
  ProbeResult r = probe_relay(relay(server.port(), Security::kAuto), options());

  EXPECT_EQ(r.failed_step, "banner");
  EXPECT_TRUE(r.hint.starts_with("the relay's answer is not SMTP")) << r.hint;
  EXPECT_TRUE(contains(r.transcript, "S: SSH-2.0-OpenSSH_9.2"));
}

// Verifies that a relay refusing this server in its banner says so.
TEST_F(RelayProbeTest, ReportsRefusingBanner) {
  ScriptedRelay server("554 5.7.1 no access from your address\r\n",
                       {{"QUIT", "221 bye\r\n"}});
  ProbeResult r = probe_relay(relay(server.port(), Security::kAuto), options());

  EXPECT_EQ(r.failed_step, "banner");
  EXPECT_TRUE(r.hint.starts_with("the relay refuses this server")) << r.hint;
  EXPECT_NE(r.verdict.find("554 5.7.1 no access"), std::string::npos);
}

// Verifies that a name that does not resolve fails the first step.
TEST_F(RelayProbeTest, ReportsUnresolvableHost) {
  auto settings = relay(25, Security::kAuto);
  settings.host = "no-such-relay.invalid";
  ProbeResult r = probe_relay(settings, options());

  EXPECT_FALSE(r.works);
  EXPECT_EQ(r.failed_step, "resolve");
  EXPECT_EQ(r.steps.size(), 1u);
  EXPECT_LT(r.took, 3000ms);
}

// Verifies the JSON shape the control socket passes on.
TEST_F(RelayProbeTest, JsonCarriesEverything) {
  auto& server = start_relay({});
  nlohmann::json j =
      probe_relay(relay(server.port(), Security::kAuto), options()).to_json();

  EXPECT_EQ(j["works"], true);
  EXPECT_EQ(j["verdict"], "works");
  EXPECT_TRUE(j["failed_step"].is_null());
  EXPECT_TRUE(j["hint"].is_null());
  EXPECT_EQ(j["relay"], "localhost:" + std::to_string(server.port()));
  EXPECT_EQ(j["steps"][0]["name"], "resolve");
  EXPECT_TRUE(j["steps"][0]["took_ms"].is_number());
  EXPECT_EQ(j["tls"]["subject"], "CN=localhost");
  EXPECT_EQ(j["tls"]["verified"], true);
  EXPECT_EQ(j["auth_mechanism"], "PLAIN");
  EXPECT_TRUE(j["transcript"].is_array());
}

}  // namespace
}  // namespace havenoro::probe
