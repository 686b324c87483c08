// Verifies the reading of Exim's main log into per-domain delivery status.

#include "havenoro_relay/status/delivery_log.h"

#include <gtest/gtest.h>

#include <fstream>

#include "test_dir.h"

namespace havenoro::status {
namespace {

constexpr const char* kArrival =
    "2026-12-03 09:02:09 1xZ2hd-00012N-0R <= bob@Example.COM "
    "H=(vm) [127.0.0.1] P=esmtp S=416 id=x@vm";
constexpr const char* kDefer =
    "2026-12-03 09:02:09 1xZ2hd-00012N-0R == x@example.net "
    "R=havenoro_relay T=havenoro_relay_smtp defer (-42): SMTP error from "
    "remote mail server after AUTH PLAIN: 535 5.7.8 credentials invalid";
constexpr const char* kDelivery =
    "2026-12-03 09:02:17 1xZ2hd-00012N-0R => x@example.net "
    "R=havenoro_relay T=havenoro_relay_smtp H=localhost [127.0.0.1] "
    "X=TLS1.3:ECDHE CV=yes A=havenoro_plain C=\"250 OK queued as test\"";

// Verifies that a deferral and a delivery are kept for the sender's
// domain, lowercased, with the relay's answer (F14).
TEST(DeliveryLog, KeepsLastDeliveryAndFailurePerSenderDomain) {
  DeliveryLog log("/nonexistent");
  log.absorb(kArrival);
  log.absorb(kDefer);
  const auto* d = log.find("example.com");
  ASSERT_TRUE(d);
  ASSERT_TRUE(d->last_failure);
  EXPECT_EQ(d->last_failure->outcome, "deferred");
  EXPECT_NE(d->last_failure->response.find("535 5.7.8"), std::string::npos);
  EXPECT_FALSE(d->last_delivery);

  log.absorb(kDelivery);
  ASSERT_TRUE(d->last_delivery);
  EXPECT_EQ(d->last_delivery->host, "localhost [127.0.0.1]");
  EXPECT_EQ(d->last_delivery->response, "250 OK queued as test");
  EXPECT_EQ(d->last_delivery->time, "2026-12-03 09:02:17");
}

// Verifies that deliveries by other routers are not counted as relayed.
TEST(DeliveryLog, IgnoresOtherRouters) {
  DeliveryLog log("/nonexistent");
  log.absorb(kArrival);
  log.absorb(
      "2026-12-03 09:02:17 1xZ2hd-00012N-0R => x@example.net "
      "R=dnslookup T=remote_smtp H=mx.example.net [192.0.2.1]");
  EXPECT_EQ(log.find("example.com"), nullptr);
}

// Verifies incremental reading: only appended lines are read, a line
// split across two polls counts once, and a rotated log starts over.
TEST(DeliveryLog, FollowsAppendsAndRotation) {
  testing::TestDir tmp;
  auto path = tmp.path() / "mainlog";
  std::ofstream(path) << kArrival << "\n" << std::string(kDefer).substr(0, 50);
  DeliveryLog log(path);
  EXPECT_EQ(log.poll(), 1u);
  std::ofstream(path, std::ios::app) << std::string(kDefer).substr(50) << "\n";
  EXPECT_EQ(log.poll(), 1u);
  ASSERT_TRUE(log.find("example.com"));
  EXPECT_TRUE(log.find("example.com")->last_failure);
  EXPECT_EQ(log.poll(), 0u);

  std::filesystem::remove(path);
  std::ofstream(path) << kArrival << "\n" << kDelivery << "\n";
  EXPECT_EQ(log.poll(), 2u);
  EXPECT_TRUE(log.find("example.com")->last_delivery);
}

}  // namespace
}  // namespace havenoro::status
