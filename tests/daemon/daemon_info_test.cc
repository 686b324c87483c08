// Verifies what the daemon adds to the Engine's status, and the one-line
// summary systemd shows.

#include "havenoro_relay/daemon/daemon_info.h"

#include <gtest/gtest.h>
#include <unistd.h>

namespace havenoro::daemon {
namespace {

using nlohmann::json;

json engine_status() {
  return {
      {"generation", 42},
      {"domains",
       {{"relayed", 12}, {"default", 4}, {"suspended", 1}, {"rejected", 1}}},
      {"last_apply",
       {{"result", "applied"},
        {"at", "2024-05-01T12:00:01Z"},
        {"took_ms", 12}}},
      {"exim", nullptr}};
}

// Verifies the summary line's wording.
TEST(StatusLine, SumsUpGenerationDomainsAndLastApply) {
  EXPECT_EQ(status_line(engine_status()),
            "generation 42; domains: 12 relayed, 4 default, 1 suspended, 1 "
            "rejected; last apply applied at 2024-05-01T12:00:01Z in 12 ms");
}

// Verifies the summary before the first apply.
TEST(StatusLine, SaysWhenNothingWasAppliedYet) {
  json s = {{"generation", 0}, {"last_apply", nullptr}};
  EXPECT_EQ(status_line(s),
            "generation 0; domains: 0 relayed, 0 default, 0 suspended, 0 "
            "rejected; first apply pending");
}

// Verifies the daemon's own keys.
TEST(DaemonInfo, AddsProcessKeys) {
  DaemonInfo info("/etc/havenoro-relayd/config.json");
  auto s = info.complete(engine_status(), 3, 1);
  EXPECT_EQ(s["pid"], ::getpid());
  EXPECT_EQ(s["applies"], 3);
  EXPECT_EQ(s["queued"], 1);
  EXPECT_EQ(s["config_file"], "/etc/havenoro-relayd/config.json");
  EXPECT_TRUE(s["uptime_s"].is_number());
  EXPECT_TRUE(s["last_failure"].is_null());
}

// Verifies that Exim's last confirmed state survives applies that did
// not reload it.
TEST(DaemonInfo, KeepsLastEximReload) {
  DaemonInfo info("/c.json");
  engine::ApplyOutcome reload;
  reload.report.new_generation = true;
  reload.report.reloaded = true;
  reload.report.exim_state = "exim pid 7 reloaded";
  info.record(reload);
  info.record(engine::ApplyOutcome{});
  auto s = info.complete(engine_status(), 2, 0);
  EXPECT_EQ(s["exim"]["reloaded"], true);
  EXPECT_EQ(s["exim"]["message"], "exim pid 7 reloaded");
}

// Verifies that a failed apply is kept for status.
TEST(DaemonInfo, KeepsLastFailure) {
  DaemonInfo info("/c.json");
  engine::ApplyOutcome failed;
  failed.report.errors = {"panel tree '/x' cannot be read"};
  info.record(failed);
  auto s = info.complete(engine_status(), 1, 0);
  EXPECT_EQ(s["last_failure"]["errors"][0], "panel tree '/x' cannot be read");
}

// Verifies that the version moves only when what complete() adds does, so
// that an encoded status is reused until then.
TEST(DaemonInfo, VersionMovesWithAReloadOrAFailure) {
  DaemonInfo info("/c.json");
  auto v0 = info.version();
  info.record(engine::ApplyOutcome{});
  EXPECT_EQ(info.version(), v0);
  engine::ApplyOutcome reload;
  reload.report.new_generation = true;
  info.record(reload);
  auto v1 = info.version();
  EXPECT_GT(v1, v0);
  engine::ApplyOutcome failed;
  failed.report.errors = {"x"};
  info.record(failed);
  EXPECT_GT(info.version(), v1);
  EXPECT_GE(info.uptime_s(), 0);
}

// Verifies that status-get's `config` says how the last reload went, and
// that each reload moves the version, so the encoded status shows it.
TEST(DaemonInfo, KeepsLastConfigReload) {
  DaemonInfo info("/c.json");
  EXPECT_TRUE(info.complete(engine_status(), 0, 0)["config"].is_null());
  auto v0 = info.version();
  info.record_reload("/c.json: 'exim_group' must name a group of this system");
  auto s = info.complete(engine_status(), 0, 0);
  EXPECT_EQ(s["config"]["result"], "refused");
  EXPECT_EQ(s["config"]["error"],
            "/c.json: 'exim_group' must name a group of this system");
  EXPECT_TRUE(s["config"]["at"].is_string());
  EXPECT_GT(info.version(), v0);
  info.record_reload("");
  s = info.complete(engine_status(), 0, 0);
  EXPECT_EQ(s["config"]["result"], "reloaded");
  EXPECT_TRUE(s["config"]["error"].is_null());
}

// Verifies that the summary line says a rollback's pin, and a refused
// reload until one is taken.
TEST(StatusLine, SaysPinAndRefusedReload) {
  json s = engine_status();
  s["pinned"] = {{"generation", 42}};
  s["config"] = {{"at", "2024-05-01T12:00:00Z"}, {"result", "refused"}};
  EXPECT_EQ(status_line(s),
            "generation 42 (pinned by a rollback); domains: 12 relayed, 4 "
            "default, 1 suspended, 1 rejected; last apply applied at "
            "2024-05-01T12:00:01Z in 12 ms; configuration reload refused at "
            "2024-05-01T12:00:00Z");
  s["config"]["result"] = "reloaded";
  s["pinned"] = nullptr;
  EXPECT_EQ(status_line(s), status_line(engine_status()));
}

}  // namespace
}  // namespace havenoro::daemon
