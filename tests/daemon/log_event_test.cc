// Verifies log lines: an event name, then key=value fields that split back
// apart whatever the values hold.

#include "havenoro_relay/daemon/log_event.h"

#include <gtest/gtest.h>

namespace havenoro::daemon {
namespace {

// Verifies that plain values stay bare and numbers print as numbers.
TEST(LogEvent, PlainFieldsAreBare) {
  auto line = LogEvent("apply.done")
                  .add("generation", 42)
                  .add("domains", size_t{17})
                  .add("changed", 1)
                  .add("took_ms", 12L)
                  .str();
  EXPECT_EQ(line, "apply.done generation=42 domains=17 changed=1 took_ms=12");
}

// Verifies that booleans read yes and no, like the --once summary.
TEST(LogEvent, BooleansAreYesOrNo) {
  EXPECT_EQ(LogEvent("e").add("reloaded", true).add("full", false).str(),
            "e reloaded=yes full=no");
}

// Verifies that a value with spaces, quotes or equals signs is quoted.
TEST(LogEvent, ValuesThatWouldSplitAreQuoted) {
  EXPECT_EQ(log_value("domain 'x' (user bob)"), "\"domain 'x' (user bob)\"");
  EXPECT_EQ(log_value("a=b"), "\"a=b\"");
  EXPECT_EQ(log_value("say \"hi\"\\"), "\"say \\\"hi\\\"\\\\\"");
  EXPECT_EQ(log_value(""), "\"\"");
}

// Verifies that a newline in a value cannot start a forged log line.
TEST(LogEvent, ControlCharactersAreEscaped) {
  EXPECT_EQ(log_value("a\nb\r\x01"), "\"a\\x0ab\\x0d\\x01\"");
}

// Verifies that UTF-8 text is kept as it is.
TEST(LogEvent, Utf8IsKept) {
  EXPECT_EQ(log_value("pässwörd-domain"), "pässwörd-domain");
}

}  // namespace
}  // namespace havenoro::daemon
