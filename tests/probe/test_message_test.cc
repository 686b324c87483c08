// Verifies the Test button's test message: handed to a real Exim, it
// takes the domain's live route and its outcome is read from Exim's log.

#include "havenoro_relay/probe/test_message.h"

#include <grp.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "havenoro_relay/engine/engine.h"
#include "relay_process.h"
#include "silent_listener.h"
#include "test_certs.h"

namespace havenoro::probe {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::free_port;
using testing::RelayOptions;
using testing::RelayProcess;
using testing::SilentListener;
using testing::test_certs;

const fs::path kSource = HAVENORO_SOURCE_DIR;
// The domains' password, its base64, and base64 of "\0u\0" + password
// (what AUTH PLAIN sends).
const std::string kPassword = "test-pass";
const std::string kPasswordBase64 = "dGVzdC1wYXNz";
const std::string kPlainBase64 = "AHUAdGVzdC1wYXNz";

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_text(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

std::string replace_all(std::string s, const std::string& from,
                        const std::string& to) {
  for (auto at = s.find(from); at != std::string::npos;
       at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
  return s;
}

// A private Exim configuration with its own spool and log, a real relay,
// and a panel tree with a working and a dead relay domain, applied by the
// engine as the daemon would.
class TestMessageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char name[] = "/tmp/havenoro-msg-XXXXXX";
    dir_ = ::mkdtemp(name);
    fs::permissions(dir_, fs::perms(0755));
    const passwd* exim = ::getpwnam("Debian-exim");
    for (const char* d : {"spool", "log"}) {
      fs::create_directories(dir_ / d);
      ASSERT_EQ(::chown((dir_ / d).c_str(), exim->pw_uid, exim->pw_gid), 0);
    }
    std::string conf =
        replace_all(read_text(kSource / "exim-templates/exim4.conf.example"),
                    "/etc/exim4/havenoro-relay", (dir_ / "out").string());
    write_text(dir_ / "exim.conf",
               "primary_hostname = mail.havenoro.test\n"
               "spool_directory = " +
                   (dir_ / "spool").string() + "\n" + "log_file_path = " +
                   (dir_ / "log").string() + "/%slog\n" + conf);

    RelayOptions o;
    o.cert = test_certs().localhost_cert;
    o.key = test_certs().localhost_key;
    relay_ = std::make_unique<RelayProcess>(dir_ / "relay", o);
    write_text(dir_ / "panel/data/users/alice/user.json",
               R"({"user":"alice"})");
    domain("ok.example", relay_->port());
    domain("dead.example", free_port());
    apply();
  }
  void TearDown() override {
    relay_.reset();
    fs::remove_all(dir_);
  }

  void domain(const std::string& name, int port,
              const std::string& host = "localhost") {
    write_text(dir_ / "panel/data/users/alice/mail" / (name + ".json"),
               R"({"domain":")" + name +
                   R"(","smtp_relay":{"enabled":true,"host":")" + host +
                   R"(","port":)" + std::to_string(port) +
                   R"(,"username":"u","password":")" + kPassword + "\"}}");
  }

  void apply() {
    config::DaemonConfig c;
    c.panel_root = dir_ / "panel";
    c.output_dir = dir_ / "out";
    c.templates_dir = kSource / "exim-templates";
    c.exim_config = dir_ / "exim.conf";
    c.exim_pid_file = dir_ / "none.pid";
    c.exim_main_log = dir_ / "log/mainlog";
    c.tls_ca_certificates = test_certs().ca.string();
    c.allow_private_relays = true;
    auto outcome = engine::Engine(c).resync();
    ASSERT_TRUE(outcome.report.ok()) << outcome.report.errors.at(0);
  }

  TestMessageOptions options() const {
    return {"/usr/sbin/exim4", dir_ / "exim.conf", dir_ / "log/mainlog",
            std::chrono::milliseconds(15000)};
  }

  // What the panel would show of a result, searched for every form of
  // the password.
  static void expect_no_secret(const TestMessageResult& r) {
    std::string all = r.to_json().dump();
    for (const auto& secret : {kPassword, kPasswordBase64, kPlainBase64}) {
      EXPECT_EQ(all.find(secret), std::string::npos) << secret << " in " << all;
    }
  }

  // Waits (bounded) for Exim's main log to hold `text`.
  bool log_shows(const std::string& text, std::chrono::milliseconds within) {
    auto deadline = std::chrono::steady_clock::now() + within;
    while (std::chrono::steady_clock::now() < deadline) {
      if (read_text(dir_ / "log/mainlog").find(text) != std::string::npos)
        return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }

  fs::path dir_;
  std::unique_ptr<RelayProcess> relay_;
};

// Verifies that the test message goes through the domain's relay and is
// reported delivered with the relay's answer and Exim's id.
TEST_F(TestMessageTest, TestMessageIsDeliveredThroughTheDomainsRelay) {
  auto r = send_test_message("ok.example", "someone@example.net", options());
  EXPECT_EQ(r.outcome, "delivered") << r.response;
  EXPECT_EQ(r.sender, "postmaster@ok.example");
  EXPECT_EQ(r.router, "havenoro_relay");
  EXPECT_NE(r.response.find("250"), std::string::npos) << r.response;
  EXPECT_FALSE(r.message_id.empty());
  EXPECT_FALSE(relay_->auth_events().empty());
  expect_no_secret(r);
}

// Verifies that a relay where nothing listens is reported deferred with
// Exim's reason, within the time bound.
TEST_F(TestMessageTest, DeadRelayIsReportedDeferred) {
  auto r = send_test_message("dead.example", "someone@example.net", options());
  EXPECT_EQ(r.outcome, "deferred");
  EXPECT_NE(r.response.find("refused"), std::string::npos) << r.response;
  EXPECT_LT(r.took.count(), 15000);
  expect_no_secret(r);
}

// Verifies "still queued": a relay that accepts the connection and never
// answers holds the message past the bound, which the result reports as
// soon as the bound passes, with the message's id. The message really
// stayed queued: once the relay goes away, Exim defers it.
TEST_F(TestMessageTest, StalledRelayLeavesTheMessageStillQueued) {
  auto stalled = std::make_unique<SilentListener>();
  domain("stalled.example", stalled->port(), "127.0.0.1");
  apply();
  auto o = options();
  o.timeout = 2000ms;

  auto r = send_test_message("stalled.example", "someone@example.net", o);
  EXPECT_EQ(r.outcome, "still queued") << r.response;
  ASSERT_FALSE(r.message_id.empty());
  EXPECT_GE(r.took.count(), 2000);
  EXPECT_LT(r.took.count(), 3500);
  expect_no_secret(r);

  // Closing the listener resets the connection Exim still waits on.
  stalled.reset();
  EXPECT_TRUE(log_shows(r.message_id + " == someone@example.net", 20s))
      << read_text(dir_ / "log/mainlog");
}

// Verifies the check on the recipient, which goes into an SMTP command.
TEST(TestMessageAddress, OnlyPlainMailboxesPass) {
  EXPECT_TRUE(is_plain_address("someone@example.net"));
  for (const char* bad : {"", "no-at", "a@b@c", "@b", "a@", "a b@c",
                          "a@b\r\nRCPT TO:<x@y>", "<a@b>"}) {
    EXPECT_FALSE(is_plain_address(bad)) << bad;
  }
}

}  // namespace
}  // namespace havenoro::probe
