// Verifies the engine: incremental applies, what stays live on bad input,
// and what status shows. Candidates are checked by the real Exim.

#include "havenoro_relay/engine/engine.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <map>
#include <thread>

#include "test_dir.h"

namespace havenoro::engine {
namespace {

namespace fs = std::filesystem;
using testing::read_text;
using testing::write_text;

const fs::path kSource = HAVENORO_SOURCE_DIR;
constexpr const char* kPassword = "s3cr^t pass:word";

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    panel_ = tmp_.path() / "panel";
    out_ = tmp_.path() / "out";
    write_text(tmp_.path() / "exim.conf",
               testing::example_exim_config(kSource, out_));
    fs::create_directories(panel_ / "data/users");
    config_.panel_root = panel_;
    config_.output_dir = out_;
    config_.templates_dir = kSource / "exim-templates";
    config_.exim_config = tmp_.path() / "exim.conf";
    config_.exim_pid_file = tmp_.path() / "no-exim.pid";
    config_.allow_private_relays = true;
    user("alice");
  }

  void user(const std::string& name, bool suspended = false) {
    write_text(panel_ / "data/users" / name / "user.json",
               R"({"user":")" + name + R"(","suspended":)" +
                   (suspended ? "true" : "false") + "}");
  }

  fs::path domain_file(const std::string& owner, const std::string& name) {
    return panel_ / "data/users" / owner / "mail" / (name + ".json");
  }

  fs::path relay_domain(const std::string& owner, const std::string& name,
                        int port = 587) {
    auto file = domain_file(owner, name);
    write_text(file, R"({"domain":")" + name +
                         R"(","smtp_relay":{"enabled":true,)"
                         R"("host":"192.0.2.25","port":)" +
                         std::to_string(port) +
                         R"(,"username":"u","password":")" + kPassword +
                         R"("}})");
    return file;
  }

  fs::path credential(const std::string& name) {
    return out_ / "domains" / name / "smtp_relay.conf";
  }

  testing::TestDir tmp_;
  fs::path panel_;
  fs::path out_;
  config::DaemonConfig config_;
};

// Verifies that a resync goes live and that a second one writes nothing.
TEST_F(EngineTest, ResyncThenNoOpWritesNothing) {
  relay_domain("alice", "a.example");
  Engine engine(config_);
  auto first = engine.resync();
  ASSERT_TRUE(first.report.ok()) << first.report.errors.at(0);
  EXPECT_TRUE(first.report.new_generation);
  EXPECT_EQ(first.result(), "applied");
  EXPECT_TRUE(fs::exists(credential("a.example")));

  auto second = engine.resync();
  EXPECT_EQ(second.result(), "unchanged");
  EXPECT_TRUE(second.report.written.empty());
  EXPECT_FALSE(second.report.new_generation);
}

// Verifies that one changed file costs one file: nothing else is written,
// and no new generation is made for data.
TEST_F(EngineTest, NotedFileAppliesOnlyThatDomain) {
  for (auto n : {"a.example", "b.example", "c.example"}) {
    relay_domain("alice", n);
  }
  Engine engine(config_);
  engine.resync();
  engine.note_path(relay_domain("alice", "b.example", 2525));
  ASSERT_TRUE(engine.has_pending());
  auto outcome = engine.apply_pending();
  EXPECT_EQ(outcome.report.written,
            std::vector<std::string>{"domains/b.example/smtp_relay.conf"});
  EXPECT_FALSE(outcome.report.new_generation);
  ASSERT_EQ(outcome.domains.size(), 1u);
  EXPECT_EQ(outcome.domains[0].result, "applied");
  EXPECT_NE(read_text(credential("b.example"))
                .find("route: "
                      "192.0.2.25:2525"),
            std::string::npos);
  EXPECT_FALSE(engine.has_pending());
}

// Verifies that a domain whose file breaks keeps its live relay, and that
// status shows the error with when it was first seen.
TEST_F(EngineTest, BrokenFileKeepsTheLastAppliedRelay) {
  auto file = relay_domain("alice", "a.example");
  Engine engine(config_);
  engine.resync();
  std::string live = read_text(credential("a.example"));

  write_text(file, R"({"domain":"a.example","smtp_relay":{"enabled":true,)"
                   R"("host":"x.example","port":0}})");
  engine.note_path(file);
  auto outcome = engine.apply_pending();
  ASSERT_EQ(outcome.domains.size(), 1u);
  EXPECT_EQ(outcome.domains[0].result, "rejected");
  EXPECT_NE(outcome.domains[0].message.find("smtp_relay.port"),
            std::string::npos);
  EXPECT_EQ(read_text(credential("a.example")), live);

  auto status = engine.status();
  ASSERT_EQ(status["errors"].size(), 1u);
  EXPECT_EQ(status["errors"][0]["domain"], "a.example");
  EXPECT_TRUE(status["errors"][0].contains("first_seen"));
  auto d = engine.domain("a.example");
  EXPECT_FALSE(d["last_error"].is_null());
  // What is still live is said, with the relay Exim uses, no secret.
  EXPECT_NE(d["last_error"]["error"].get<std::string>().find(
                "(the relay last applied for it, 192.0.2.25:587, stays live)"),
            std::string::npos)
      << d["last_error"];
  EXPECT_EQ(d["live"]["route"], "relay");
  EXPECT_EQ(d["live"]["relay"], "192.0.2.25:587");
  EXPECT_EQ(d.dump().find(kPassword), std::string::npos);
}

// Verifies that a domain rejected before anything was applied for it is
// not told that its last applied settings stay live: nothing was, and
// its mail takes the server-wide route; domain-get says the same.
TEST_F(EngineTest, ANewDomainRejectedHasNothingLive) {
  relay_domain("alice", "a.example");
  Engine engine(config_);
  engine.resync();
  engine.note_path(relay_domain("alice", "new.example", 70000));
  auto outcome = engine.apply_pending();
  ASSERT_EQ(outcome.domains.size(), 1u);
  EXPECT_EQ(outcome.domains[0].result, "rejected");
  EXPECT_NE(outcome.domains[0].message.find(
                "(nothing was applied for it before: its mail takes the "
                "server-wide route)"),
            std::string::npos)
      << outcome.domains[0].message;
  EXPECT_EQ(outcome.domains[0].message.find("stay"), std::string::npos);
  auto d = engine.domain("new.example");
  EXPECT_EQ(d["reason"],
            "settings rejected; nothing was applied for it before");
  EXPECT_EQ(d["live"]["route"], "default");
  // A resync with nothing changed says the same, without looking again.
  auto again = engine.resync();
  for (const auto& o : again.domains) {
    if (o.domain == "new.example") {
      EXPECT_EQ(o.message, outcome.domains[0].message);
    }
  }
}

// Verifies that a deleted domain's relay is removed.
TEST_F(EngineTest, DeletedDomainIsRemoved) {
  auto file = relay_domain("alice", "a.example");
  Engine engine(config_);
  engine.resync();
  fs::remove(file);
  engine.note_path(file);
  auto outcome = engine.apply_pending();
  EXPECT_FALSE(fs::exists(out_ / "domains/a.example"));
  ASSERT_EQ(outcome.domains.size(), 1u);
  EXPECT_EQ(outcome.domains[0].result, "removed");
  EXPECT_TRUE(engine.domain("a.example").is_null());
}

// Verifies that suspending a user suspends all of that user's domains.
TEST_F(EngineTest, SuspendedUserRelaysNothing) {
  relay_domain("alice", "a.example");
  relay_domain("alice", "b.example");
  Engine engine(config_);
  engine.resync();
  user("alice", true);
  engine.note_path(panel_ / "data/users/alice/user.json");
  auto outcome = engine.apply_pending();
  EXPECT_EQ(outcome.domains.size(), 2u);
  EXPECT_FALSE(fs::exists(out_ / "domains/a.example"));
  EXPECT_TRUE(fs::exists(out_ / "suspended/a.example"));
  EXPECT_TRUE(fs::exists(out_ / "suspended/b.example"));
  EXPECT_EQ(engine.domain("a.example")["route"], "suspended");
}

// Verifies that a domain that a second user claims loses its relay.
TEST_F(EngineTest, DomainUnderTwoUsersLosesItsRelay) {
  relay_domain("alice", "a.example");
  Engine engine(config_);
  engine.resync();
  user("bob");
  engine.note_path(relay_domain("bob", "a.example"));
  auto outcome = engine.apply_pending();
  EXPECT_EQ(outcome.domains.at(0).result, "rejected");
  EXPECT_FALSE(fs::exists(out_ / "domains/a.example"));
}

// Verifies that reconcile by name finds a domain the daemon never saw.
TEST_F(EngineTest, NoteDomainFindsANewFile) {
  Engine engine(config_);
  engine.resync();
  relay_domain("alice", "new.example");
  engine.note_domain("new.example");
  auto outcome = engine.apply_pending();
  EXPECT_EQ(outcome.domains.at(0).result, "applied");
  EXPECT_TRUE(fs::exists(credential("new.example")));
}

// Verifies that reconcile by name follows a domain to another user when
// its file is gone from the one it had.
TEST_F(EngineTest, NoteDomainFollowsAFileToAnotherUser) {
  auto file = relay_domain("alice", "moved.example");
  Engine engine(config_);
  engine.resync();
  user("bob");
  fs::remove(file);
  relay_domain("bob", "moved.example", 2527);
  engine.note_domain("moved.example");
  auto outcome = engine.apply_pending();
  ASSERT_EQ(outcome.domains.size(), 1u);
  EXPECT_EQ(outcome.domains[0].result, "applied");
  EXPECT_EQ(engine.domain("moved.example")["user"], "bob");
  EXPECT_NE(read_text(credential("moved.example")).find(":2527"),
            std::string::npos);
}

// Verifies that many names reconciled at once are all found, whichever
// users they are under, known or not.
TEST_F(EngineTest, NoteDomainFindsManyNewFilesAtOnce) {
  Engine engine(config_);
  engine.resync();
  relay_domain("alice", "known.example");
  engine.note_domain("known.example");
  engine.apply_pending();
  for (int i = 0; i < 6; ++i) {
    std::string owner = i % 2 ? "alice" : "carol" + std::to_string(i);
    user(owner);
    relay_domain(owner, "n" + std::to_string(i) + ".example", 2600 + i);
    engine.note_domain("n" + std::to_string(i) + ".example");
  }
  relay_domain("alice", "known.example", 2599);
  engine.note_domain("known.example");
  engine.note_domain("nowhere.example");
  auto outcome = engine.apply_pending();
  ASSERT_EQ(outcome.domains.size(), 8u);
  for (const auto& d : outcome.domains) {
    EXPECT_EQ(d.result, d.domain == "nowhere.example" ? "unchanged" : "applied")
        << d.domain;
  }
  EXPECT_NE(read_text(credential("n4.example")).find(":2604"),
            std::string::npos);
  EXPECT_NE(read_text(credential("known.example")).find(":2599"),
            std::string::npos);
  EXPECT_TRUE(engine.domain("nowhere.example").is_null());
}

// Verifies that status lists are cut short with their totals, the server
// relay's rejection first, while domain-list keeps every domain.
TEST_F(EngineTest, StatusListsAreCutWithTheirTotals) {
  for (int i = 0; i < 25; ++i) {
    std::string n = std::to_string(i);
    relay_domain("alice", "ok" + n + ".example");
    write_text(domain_file("alice", "bad" + n + ".example"),
               R"({"domain":"bad)" + n +
                   R"(.example","smtp_relay":{"enabled":true,"port":0}})");
  }
  write_text(panel_ / "conf/mail.json",
             R"({"smtp_relay":{"enabled":true,"host":""}})");
  Engine engine(config_);
  engine.resync();
  auto s = engine.status();
  EXPECT_EQ(s["errors"].size(), 20u);
  EXPECT_EQ(s["errors_total"], 26);
  EXPECT_EQ(s["errors"][0]["domain"], "");
  EXPECT_EQ(s["last_apply"]["changed_domains"].size(), 20u);
  EXPECT_EQ(s["last_apply"]["changed_domains_total"], 25);
  EXPECT_EQ(s["warnings_total"], s["warnings"].size());
  EXPECT_EQ(engine.domain_list().size(), 50u);
}

// Verifies that losing most relay domains at once is held back.
TEST_F(EngineTest, MassRemovalIsHeldBack) {
  for (int i = 0; i < 12; ++i) {
    relay_domain("alice", "d" + std::to_string(i) + ".example");
  }
  Engine engine(config_);
  engine.resync();
  fs::remove_all(panel_ / "data/users/alice/mail");
  relay_domain("alice", "d0.example", 2600);  // one survivor, changed
  auto outcome = engine.resync();
  EXPECT_TRUE(outcome.report.ok());
  EXPECT_EQ(outcome.result(), "rejected");
  ASSERT_EQ(outcome.report.held_back.size(), 1u);
  EXPECT_NE(outcome.report.held_back[0].find("refusing to remove 11 of 12"),
            std::string::npos);
  EXPECT_TRUE(fs::exists(credential("d5.example")));
  // The rest of the apply went live.
  EXPECT_NE(read_text(credential("d0.example")).find(":2600"),
            std::string::npos);
}

// Verifies that the server-wide relay is applied from conf/mail.json.
TEST_F(EngineTest, ServerWideRelay) {
  Engine engine(config_);
  engine.resync();
  write_text(panel_ / "conf/mail.json",
             R"({"smtp_relay":{"enabled":true,"host":"192.0.2.26"}})");
  engine.note_path(panel_ / "conf/mail.json");
  auto outcome = engine.apply_pending();
  ASSERT_TRUE(outcome.report.ok()) << outcome.report.errors.at(0);
  EXPECT_TRUE(fs::exists(out_ / "default/smtp_relay.conf"));
  EXPECT_EQ(engine.status()["server_relay"]["host"], "192.0.2.26");
}

// Verifies that no status document holds the password (F10).
TEST_F(EngineTest, F10_StatusNeverShowsThePassword) {
  relay_domain("alice", "a.example");
  auto broken = domain_file("alice", "b.example");
  write_text(broken, std::string(R"({"domain":"b.example","smtp_relay":)") +
                         R"({"enabled":true,"host":"a b","password":")" +
                         kPassword + "\"");
  Engine engine(config_);
  engine.resync();
  std::string all = engine.status().dump() + engine.domain_list().dump() +
                    engine.domain("a.example").dump() + engine.plan().dump();
  EXPECT_EQ(all.find("s3cr"), std::string::npos) << all;
  EXPECT_NE(all.find("password_set"), std::string::npos);
}

// Verifies that a plan writes nothing and names what would change.
TEST_F(EngineTest, PlanChangesNothing) {
  relay_domain("alice", "a.example");
  Engine engine(config_);
  auto plan = engine.plan();
  EXPECT_EQ(plan["check"], "passed");
  EXPECT_TRUE(plan["new_generation"]);
  EXPECT_EQ(plan["would_write"][0], "domains/a.example/smtp_relay.conf");
  EXPECT_FALSE(fs::exists(credential("a.example")));
  EXPECT_FALSE(fs::exists(out_ / "current"));
}

// Verifies rollback: the previous generation goes live, stays pinned
// through later applies, and a resync that releases the pin renders anew.
TEST_F(EngineTest, RollbackPinsThePreviousGeneration) {
  relay_domain("alice", "a.example");
  Engine first(config_);
  first.resync();  // generation 1
  config_.connect_timeout = std::chrono::seconds(7);
  Engine engine(config_);
  ASSERT_EQ(engine.resync().report.generation, 2u);

  auto back = engine.rollback(std::nullopt);
  ASSERT_TRUE(back.report.ok()) << back.report.errors.at(0);
  EXPECT_EQ(back.report.generation, 1u);
  EXPECT_EQ(fs::read_symlink(out_ / "current"), "generations/1");
  EXPECT_EQ(engine.status()["generation"], 1);
  EXPECT_EQ(engine.status()["last_apply"]["pinned"], true);

  engine.note_path(relay_domain("alice", "a.example", 2526));
  auto pinned = engine.apply_pending();
  EXPECT_TRUE(pinned.report.pinned);
  EXPECT_EQ(pinned.report.generation, 1u);
  EXPECT_NE(read_text(credential("a.example")).find(":2526"),
            std::string::npos);

  auto released = engine.resync({.release_pin = true});
  EXPECT_EQ(released.report.generation, 3u);
  EXPECT_EQ(engine.generations().back(), 3u);
  EXPECT_FALSE(engine.rollback(99).report.ok());
}

// Verifies that a resync after the first finds, with no event noted, a
// file edited in place to the same size, a new file, a removed file and a
// user's suspension (which changes every domain of that user).
TEST_F(EngineTest, RescanFindsWhatChangedWithoutEvents) {
  relay_domain("alice", "edited.example", 2525);
  relay_domain("alice", "removed.example");
  user("bob");
  relay_domain("bob", "bob.example");
  Engine engine(config_);
  ASSERT_TRUE(engine.resync().report.ok());

  relay_domain("alice", "edited.example", 2526);  // in place, same size
  relay_domain("alice", "added.example");
  fs::remove(domain_file("alice", "removed.example"));
  user("bob", true);
  auto outcome = engine.resync();
  ASSERT_TRUE(outcome.report.ok()) << outcome.report.errors.at(0);
  EXPECT_NE(read_text(credential("edited.example")).find(":2526"),
            std::string::npos);
  EXPECT_TRUE(fs::exists(credential("added.example")));
  EXPECT_FALSE(fs::exists(out_ / "domains/removed.example"));
  EXPECT_FALSE(fs::exists(credential("bob.example")));
  EXPECT_TRUE(fs::exists(out_ / "suspended/bob.example"));
  EXPECT_EQ(engine.domain("bob.example")["route"], "suspended");

  auto idle = engine.resync();
  EXPECT_EQ(idle.result(), "unchanged");
}

// Verifies that a resync puts back what was changed in the output
// directory behind the daemon's back: content, mode, a removed file.
TEST_F(EngineTest, ResyncRepairsTheLiveFiles) {
  relay_domain("alice", "a.example");
  relay_domain("alice", "b.example");
  relay_domain("alice", "c.example");
  Engine engine(config_);
  ASSERT_TRUE(engine.resync().report.ok());
  std::string good = read_text(credential("a.example"));
  ASSERT_EQ(engine.resync().result(), "unchanged");  // stamps recorded

  write_text(credential("a.example"), "route: 203.0.113.9:25\n");
  fs::permissions(credential("b.example"), fs::perms::others_read,
                  fs::perm_options::add);
  fs::remove(credential("c.example"));
  auto outcome = engine.resync();
  ASSERT_TRUE(outcome.report.ok()) << outcome.report.errors.at(0);
  EXPECT_EQ(outcome.report.written.size(), 3u);
  ASSERT_EQ(engine.resync().result(), "unchanged");

  // Entries nobody asked for, in the directories Exim looks up.
  write_text(out_ / "domains/stray.example/smtp_relay.conf", "route: x\n");
  write_text(out_ / "suspended/a.example", "");
  auto cleaned = engine.resync();
  ASSERT_TRUE(cleaned.report.ok()) << cleaned.report.errors.at(0);
  EXPECT_FALSE(fs::exists(out_ / "domains/stray.example"));
  EXPECT_FALSE(fs::exists(out_ / "suspended/a.example"));
  EXPECT_EQ(read_text(credential("a.example")), good);
  EXPECT_EQ(fs::status(credential("b.example")).permissions() &
                fs::perms::others_read,
            fs::perms::none);
  EXPECT_TRUE(fs::exists(credential("c.example")));
  EXPECT_EQ(engine.resync().result(), "unchanged");
}

// Verifies that a replaced DKIM key is found by a resync even though the
// domain's settings file did not change, and that the key is written.
TEST_F(EngineTest, RescanFindsAReplacedDkimKey) {
  auto file = domain_file("alice", "signed.example");
  write_text(file, R"({"domain":"signed.example",)"
                   R"("dkim":{"enabled":true,"selector":"s1"}})");
  auto key = file.parent_path() / "signed.example.dkim.pem";
  auto pem = [](const std::string& body) {
    return "-----BEGIN PRIVATE KEY-----\n" + body +
           "\n-----END PRIVATE KEY-----\n";
  };
  write_text(key, pem("MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAfirst"));
  Engine engine(config_);
  ASSERT_TRUE(engine.resync().report.ok());
  auto live = out_ / "dkim/signed.example/private.pem";
  ASSERT_NE(read_text(live).find("first"), std::string::npos);

  write_text(key,
             pem("MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAsecond"));
  auto outcome = engine.resync();
  ASSERT_TRUE(outcome.report.ok()) << outcome.report.errors.at(0);
  EXPECT_NE(read_text(live).find("second"), std::string::npos);
}

// Verifies that a confirmed resync removes what a plain one holds back.
TEST_F(EngineTest, ConfirmedResyncRemovesVanishedDomains) {
  for (int i = 0; i < 12; ++i) {
    relay_domain("alice", "d" + std::to_string(i) + ".example");
  }
  Engine engine(config_);
  engine.resync();
  fs::remove_all(panel_ / "data/users/alice/mail");
  auto outcome = engine.resync({.confirm_removals = true});
  EXPECT_TRUE(outcome.report.ok())
      << ::testing::PrintToString(outcome.report.errors);
  EXPECT_EQ(outcome.report.removed.size(), 12u);
  EXPECT_FALSE(fs::exists(out_ / "domains/d0.example"));
}

// Verifies that a port-25 relay is applied with a warning in status, and
// that Exim's log shows up as the domain's last delivery and failure.
TEST_F(EngineTest, F14_StatusShowsWarningsAndEximsLastFailure) {
  relay_domain("alice", "a.example", 25);
  config_.exim_main_log = tmp_.path() / "mainlog";
  Engine engine(config_);
  engine.resync();
  auto d = engine.domain("a.example");
  ASSERT_EQ(d["warnings"].size(), 1u);
  EXPECT_NE(d["warnings"][0].get<std::string>().find("25"), std::string::npos);
  EXPECT_EQ(engine.status()["warnings"].size(), 1u);

  std::ofstream(config_.exim_main_log)
      << "2026-12-03 09:02:09 1xZ2hd-00012N-0R <= bob@a.example H=(vm) "
         "[127.0.0.1] P=esmtp S=416\n"
         "2026-12-03 09:02:10 1xZ2hd-00012N-0R == x@example.net "
         "R=havenoro_relay T=havenoro_relay_smtp defer (-42): SMTP error "
         "from remote mail server after AUTH PLAIN: 535 5.7.8 refused\n";
  EXPECT_EQ(engine.poll_deliveries(), 2u);
  d = engine.domain("a.example");
  EXPECT_EQ(d["last_failure"]["outcome"], "deferred");
  EXPECT_NE(d["last_failure"]["response"].get<std::string>().find("535"),
            std::string::npos);
  EXPECT_TRUE(d["last_delivery"].is_null());
}

// Verifies that a held-back removal goes through once the configured
// number of further full resyncs found the same domains gone, that the
// count starts again when what is gone changes, and that a new Engine (a
// restart, a SIGHUP) counts on.
TEST_F(EngineTest, MassRemovalGoesAfterTheConfiguredResyncs) {
  config_.mass_removal_confirm_resyncs = 2;
  for (int i = 0; i < 12; ++i) {
    relay_domain("alice", "d" + std::to_string(i) + ".example");
  }
  auto held = [](Engine& engine) {
    auto outcome = engine.resync();
    EXPECT_TRUE(outcome.report.ok())
        << ::testing::PrintToString(outcome.report.errors);
    return outcome.report.held_back;
  };
  Engine first(config_);
  first.resync();
  fs::remove_all(panel_ / "data/users/alice/mail");
  relay_domain("alice", "d0.example");
  relay_domain("alice", "d1.example");
  auto why = held(first);  // 10 of 12 gone
  ASSERT_EQ(why.size(), 1u);
  EXPECT_NE(why[0].find("when 2 more full resyncs"), std::string::npos)
      << why[0];
  fs::remove(domain_file("alice", "d1.example"));
  EXPECT_EQ(held(first).size(), 1u);  // 11 gone: counted from 0 again

  Engine second(config_);
  EXPECT_EQ(held(second).size(), 1u);  // one further resync
  EXPECT_TRUE(fs::exists(credential("d5.example")));
  auto outcome = second.resync();  // two: really gone
  EXPECT_TRUE(outcome.report.held_back.empty());
  EXPECT_EQ(outcome.report.removed.size(), 11u);
  EXPECT_EQ(outcome.result(), "applied");
  EXPECT_FALSE(fs::exists(out_ / "domains/d5.example"));
  EXPECT_TRUE(fs::exists(credential("d0.example")));
  EXPECT_FALSE(fs::exists(out_ / "held-removals"));
}

// Verifies that an apply of noted changes holds back a mass removal as a
// resync does (a user's directory gone with most relay domains), while a
// removal of a few domains goes, and that a confirmed resync removes it.
TEST_F(EngineTest, MassRemovalOfOneUserIsHeldBack) {
  user("bob");
  for (int i = 0; i < 8; ++i) {
    relay_domain("alice", "a" + std::to_string(i) + ".example");
  }
  for (int i = 0; i < 4; ++i) {
    relay_domain("bob", "b" + std::to_string(i) + ".example");
  }
  Engine engine(config_);
  engine.resync();
  for (auto name : {"b0.example", "b1.example"}) {
    fs::remove(domain_file("bob", name));
    engine.note_path(domain_file("bob", name));
  }
  auto few = engine.apply_pending();
  EXPECT_TRUE(few.report.held_back.empty());
  EXPECT_EQ(few.report.removed.size(), 2u);

  fs::remove_all(panel_ / "data/users/alice");
  engine.note_path(panel_ / "data/users/alice");
  engine.note_path(relay_domain("bob", "b2.example", 2600));
  auto outcome = engine.apply_pending();
  EXPECT_FALSE(outcome.full);
  EXPECT_TRUE(outcome.report.ok())
      << ::testing::PrintToString(outcome.report.errors);
  EXPECT_EQ(outcome.result(), "rejected");
  ASSERT_EQ(outcome.report.held_back.size(), 1u);
  EXPECT_NE(outcome.report.held_back[0].find("refusing to remove 8 of 10"),
            std::string::npos)
      << outcome.report.held_back[0];
  EXPECT_TRUE(fs::exists(credential("a3.example")));
  EXPECT_NE(read_text(credential("b2.example")).find(":2600"),
            std::string::npos);
  ASSERT_EQ(outcome.domains.size(), 9u);
  for (const auto& d : outcome.domains) {
    EXPECT_EQ(d.result, d.domain == "b2.example" ? "applied" : "held_back")
        << d.domain;
  }

  auto confirmed = engine.resync({.confirm_removals = true});
  EXPECT_TRUE(confirmed.report.held_back.empty());
  EXPECT_EQ(confirmed.report.removed.size(), 8u);
  EXPECT_FALSE(fs::exists(out_ / "domains/a3.example"));
}

// Verifies that when a broken domain's error was first seen survives a
// new Engine on the same directories (a restart; a SIGHUP builds one
// too), kept in the output directory 0640 with its group and without the
// password, and that it goes once the file is fixed.
TEST_F(EngineTest, ErrorFirstSeenSurvivesANewEngine) {
  relay_domain("alice", "a.example");
  write_text(domain_file("alice", "bad.example"),
             R"({"domain":"bad.example","smtp_relay":{"enabled":true,)"
             R"("host":"192.0.2.25","username":"u","password":")" +
                 std::string(kPassword) + R"(\nsecond line"}})");
  std::string first_seen;
  {
    Engine engine(config_);
    engine.resync();
    auto errors = engine.status()["errors"];
    ASSERT_EQ(errors.size(), 1u);
    first_seen = errors[0]["first_seen"];
  }
  // Times are shown to the second: a new one would differ by now.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  fs::path state = out_ / "errors.json";
  struct stat st, dir;
  ASSERT_EQ(::lstat(state.c_str(), &st), 0);
  ASSERT_EQ(::lstat((out_ / "domains").c_str(), &dir), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_gid, dir.st_gid);
  EXPECT_NE(read_text(state).find("smtp_relay.password"), std::string::npos);
  EXPECT_EQ(read_text(state).find("s3cr^t"), std::string::npos);

  Engine restarted(config_);
  restarted.resync();
  auto errors = restarted.status()["errors"];
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0]["domain"], "bad.example");
  EXPECT_EQ(errors[0]["first_seen"], first_seen);
  EXPECT_EQ(restarted.domain("bad.example")["last_error"]["first_seen"],
            first_seen);

  relay_domain("alice", "bad.example");
  restarted.resync();
  EXPECT_TRUE(restarted.status()["errors"].empty());
  EXPECT_FALSE(fs::exists(state));
  EXPECT_TRUE(Engine(config_).status()["errors"].empty());
  // The document of the last apply, with the time added at each request.
  EXPECT_TRUE(restarted.status().contains("uptime_s"));
  EXPECT_FALSE(restarted.status_snapshot()->contains("uptime_s"));
}

// Verifies that a file that cannot be written (a symlink planted for its
// domain's directory) fails that domain only: the other domain of the
// same apply went live and is reported applied.
TEST_F(EngineTest, FailedWriteFailsOnlyItsDomain) {
  relay_domain("alice", "a.example");
  relay_domain("alice", "b.example");
  Engine engine(config_);
  engine.resync();
  fs::path outside = tmp_.path() / "outside";
  fs::create_directories(outside);
  fs::remove_all(out_ / "domains/b.example");
  fs::create_directory_symlink(outside, out_ / "domains/b.example");
  engine.note_path(relay_domain("alice", "a.example", 2600));
  engine.note_path(relay_domain("alice", "b.example", 2600));
  auto outcome = engine.apply_pending();
  EXPECT_FALSE(outcome.report.ok());
  EXPECT_FALSE(outcome.report.failed_whole());
  EXPECT_EQ(outcome.result(), "failed");
  std::map<std::string, DomainOutcome> by_name;
  for (const auto& d : outcome.domains) by_name[d.domain] = d;
  EXPECT_EQ(by_name["a.example"].result, "applied");
  EXPECT_EQ(by_name["b.example"].result, "failed");
  EXPECT_NE(by_name["b.example"].message.find("domains/b.example"),
            std::string::npos)
      << by_name["b.example"].message;
  EXPECT_NE(read_text(credential("a.example")).find(":2600"),
            std::string::npos);
  EXPECT_EQ(outcome.report.written,
            std::vector<std::string>{"domains/a.example/smtp_relay.conf"});
  EXPECT_TRUE(fs::is_empty(outside));
}

// Verifies which Exim checks a save gets: a new password is read back by
// Exim (-be) without a routing probe, since the router reads only the
// route and transport lines, which stay; a new port is probed (-bt) as
// well; and a live file whose route line was changed behind the daemon's
// back is probed although the panel moved nothing.
TEST_F(EngineTest, OnlyASaveThatMayRouteElsewhereIsProbed) {
  fs::path calls = tmp_.path() / "exim-calls";
  fs::path wrapper = tmp_.path() / "exim-wrapper";
  write_text(wrapper, "#!/bin/sh\necho \"$@\" >> " + calls.string() +
                          "\nexec /usr/sbin/exim4 \"$@\"\n");
  fs::permissions(wrapper, fs::perms(0755));
  config_.exim_binary = wrapper;
  relay_domain("alice", "a.example");
  Engine engine(config_);
  ASSERT_TRUE(engine.resync().report.ok());
  auto modes = [&] {
    std::string text = read_text(calls);
    fs::remove(calls);
    std::string seen;
    for (const char* mode : {"-be", "-bt"}) {
      if (text.find(std::string(" ") + mode) != std::string::npos) {
        seen += seen.empty() ? mode : std::string(" ") + mode;
      }
    }
    return seen;
  };
  modes();
  auto save = [&](const std::string& password, int port) {
    auto file = domain_file("alice", "a.example");
    write_text(file, R"({"domain":"a.example","smtp_relay":{"enabled":true,)"
                     R"("host":"192.0.2.25","port":)" +
                         std::to_string(port) +
                         R"(,"username":"u","password":")" + password +
                         R"("}})");
    engine.note_path(file);
    auto outcome = engine.apply_pending();
    EXPECT_TRUE(outcome.report.ok())
        << ::testing::PrintToString(outcome.report.errors);
    EXPECT_EQ(outcome.report.written,
              std::vector<std::string>{"domains/a.example/smtp_relay.conf"});
  };
  save("Rotated-Secret-1", 587);
  EXPECT_EQ(modes(), "-be");
  save("Rotated-Secret-1", 2525);
  EXPECT_EQ(modes(), "-be -bt");
  std::string live = read_text(credential("a.example"));
  auto at = live.find(":2525");
  ASSERT_NE(at, std::string::npos);
  live.replace(at, 5, ":2526");
  write_text(credential("a.example"), live);
  save("Rotated-Secret-2", 2525);
  EXPECT_EQ(modes(), "-be -bt");
}

// Verifies that keep_generations bounds the generations on disk after more
// snippet changes than that, keeping the live one and the newest, and that
// a pinned generation is kept however old it gets: the live one after a
// rollback, or one a rollback pinned before Exim failed to come back on it
// (that pin is written here as the rollback writes it).
TEST_F(EngineTest, PruneKeepsTheLiveTheNewestAndThePinnedGeneration) {
  relay_domain("alice", "a.example");
  config_.keep_generations = 3;
  auto snippet_change = [&](int timeout_s, bool release_pin = false) {
    config_.connect_timeout = std::chrono::seconds(timeout_s);
    Engine engine(config_);
    auto outcome = engine.resync({.release_pin = release_pin});
    EXPECT_TRUE(outcome.report.ok())
        << ::testing::PrintToString(outcome.report.errors);
    return engine.generations();
  };
  auto live = [&] { return fs::read_symlink(out_ / "current").string(); };
  using Gens = std::vector<unsigned long>;
  for (int i = 1; i <= 4; ++i) snippet_change(10 + i);
  EXPECT_EQ(snippet_change(15), (Gens{3, 4, 5}));  // keep + 2 applies

  Engine engine(config_);
  ASSERT_TRUE(engine.rollback(3).report.ok());
  EXPECT_EQ(snippet_change(16), (Gens{3, 4, 5}));  // the pin holds
  EXPECT_EQ(live(), "generations/3");
  EXPECT_EQ(snippet_change(17, true), (Gens{4, 5, 6}));
  EXPECT_EQ(live(), "generations/6");

  write_text(out_ / "pinned", "4\n");
  EXPECT_EQ(snippet_change(18), (Gens{4, 6, 7}));
  EXPECT_EQ(snippet_change(19), (Gens{4, 7, 8}));
  EXPECT_EQ(live(), "generations/8");
}

// Verifies that a domain's file missing because the panel tree is gone
// (moved away, unmounted) is not taken for a deleted domain: the apply
// fails, the relay stays live, and it is all there once the tree is back.
TEST_F(EngineTest, MissingPanelTreeRemovesNothing) {
  auto file = relay_domain("alice", "a.example");
  Engine engine(config_);
  ASSERT_TRUE(engine.resync().report.ok());
  std::string live = read_text(credential("a.example"));

  fs::rename(panel_, tmp_.path() / "panel.away");
  engine.note_path(file);
  engine.note_domain("a.example");
  EXPECT_THROW(engine.apply_pending(), panel::PanelError);
  EXPECT_EQ(read_text(credential("a.example")), live);

  fs::rename(tmp_.path() / "panel.away", panel_);
  auto back = engine.apply_pending();
  EXPECT_TRUE(back.report.ok());
  EXPECT_EQ(read_text(credential("a.example")), live);
}

}  // namespace
}  // namespace havenoro::engine
