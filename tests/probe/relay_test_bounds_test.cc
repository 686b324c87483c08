// Verifies the Test button's time bounds: the configuration keys that set
// them, and how a request's timeout_s divides the whole test.

#include <gtest/gtest.h>

#include "havenoro_relay/config/daemon_config.h"
#include "havenoro_relay/daemon/relay_test.h"

namespace havenoro::daemon {
namespace {

using namespace std::chrono_literals;
using config::ConfigError;
using config::parse_daemon_config;

// Verifies the defaults: 5 s a step, 15 s the probe, 15 s the message.
TEST(RelayTestBounds, DefaultsAreAFewSeconds) {
  config::DaemonConfig c;
  auto probe_only = relay_test_bounds(c, std::nullopt, false);
  EXPECT_EQ(probe_only.step, 5000ms);
  EXPECT_EQ(probe_only.probe, 15000ms);
  EXPECT_EQ(probe_only.whole, 15000ms);
  auto with_message = relay_test_bounds(c, std::nullopt, true);
  EXPECT_EQ(with_message.message, 15000ms);
  EXPECT_EQ(with_message.whole, 30000ms);
}

// Verifies that the three keys set the bounds, and that a step never gets
// more than the whole probe.
TEST(RelayTestBounds, ComeFromTheConfiguration) {
  auto c = parse_daemon_config(
      R"({"probe_step_timeout_s": 9, "probe_timeout_s": 4,
          "test_message_timeout_s": 20})",
      "test");
  auto b = relay_test_bounds(c, std::nullopt, true);
  EXPECT_EQ(b.step, 4000ms);
  EXPECT_EQ(b.probe, 4000ms);
  EXPECT_EQ(b.message, 20000ms);
  EXPECT_EQ(b.whole, 24000ms);
}

// Verifies that a requested timeout is the whole test: all of it for the
// probe alone, half of it for the probe when a message follows.
TEST(RelayTestBounds, RequestedTimeoutBoundsTheWholeTest) {
  config::DaemonConfig c;
  auto alone = relay_test_bounds(c, 40000ms, false);
  EXPECT_EQ(alone.whole, 40000ms);
  EXPECT_EQ(alone.probe, 40000ms);
  EXPECT_EQ(alone.step, 5000ms);
  auto shared = relay_test_bounds(c, 4000ms, true);
  EXPECT_EQ(shared.whole, 4000ms);
  EXPECT_EQ(shared.probe, 2000ms);
  EXPECT_EQ(shared.step, 2000ms);
  EXPECT_LE(shared.message, shared.whole);
}

// Verifies the keys' bounds: whole seconds, 1-60 each, so that the
// configured whole test stays within what a request may ask for.
TEST(RelayTestBounds, KeysAreCheckedWithTheirRange) {
  for (const char* key :
       {"probe_step_timeout_s", "probe_timeout_s", "test_message_timeout_s"}) {
    for (const char* bad : {"0", "61", "2.5", "\"5\""}) {
      std::string text = std::string("{\"") + key + "\": " + bad + "}";
      try {
        parse_daemon_config(text, "relayd.json");
        ADD_FAILURE() << text << " was accepted";
      } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find(key), std::string::npos)
            << e.what();
      }
    }
  }
  auto most = parse_daemon_config(
      R"({"probe_timeout_s": 60, "test_message_timeout_s": 60})", "test");
  EXPECT_LE(relay_test_bounds(most, std::nullopt, true).whole,
            kMaxRelayTestTimeout);
}

}  // namespace
}  // namespace havenoro::daemon
