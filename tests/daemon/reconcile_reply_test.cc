// Verifies what a waiting reconcile answers for each outcome: the exit
// statuses of panel-contract §2 depend on it.

#include "havenoro_relay/daemon/reconcile_reply.h"

#include <gtest/gtest.h>

namespace havenoro::daemon {
namespace {

using engine::ApplyOutcome;
using nlohmann::json;
using Kind = ReconcileTarget::Kind;

ApplyOutcome outcome_with(std::vector<engine::DomainOutcome> domains) {
  ApplyOutcome o;
  o.report.generation = 7;
  o.domains = std::move(domains);
  return o;
}

const ReconcileTarget kShop{Kind::kDomain, "shop.example"};

// Verifies that an applied domain is a success naming its route.
TEST(ReconcileReply, AppliedDomainSucceeds) {
  auto o = outcome_with({{"shop.example", "applied", "relay", ""}});
  o.report.written = {"domains/shop.example/smtp_relay.conf"};
  auto r = reconcile_reply(o, kShop, json::object());
  EXPECT_EQ(r.result, Result::kSuccess);
  EXPECT_EQ(r.text, "shop.example: applied (route relay, generation 7)");
  EXPECT_EQ(r.arguments["domain"]["result"], "applied");
  EXPECT_EQ(r.arguments["apply"]["generation"], 7);
}

// Verifies that nothing to change is a success too.
TEST(ReconcileReply, UnchangedDomainSucceeds) {
  auto o = outcome_with({{"shop.example", "unchanged", "default", ""}});
  EXPECT_EQ(reconcile_reply(o, kShop, json::object()).result, Result::kSuccess);
}

// Verifies that a rejected domain is an error whose text is one line.
TEST(ReconcileReply, RejectedDomainIsOneLineError) {
  auto o = outcome_with(
      {{"shop.example", "rejected", "",
        "domain 'shop.example' (user a): smtp_relay.port: 70000 is out of "
        "range\n1-65535"}});
  auto r = reconcile_reply(o, kShop, json::object());
  EXPECT_EQ(r.result, Result::kError);
  EXPECT_EQ(r.text.find('\n'), std::string::npos);
  EXPECT_NE(r.text.find("smtp_relay.port"), std::string::npos);
}

// Verifies that an apply Exim refused is an error saying the old
// configuration stays.
TEST(ReconcileReply, FailedApplyIsAnError) {
  auto o = outcome_with({{"shop.example", "failed", "relay", "x"}});
  o.report.errors = {"exim -bV rejected the candidate: line 3"};
  auto r = reconcile_reply(o, kShop, json::object());
  EXPECT_EQ(r.result, Result::kError);
  EXPECT_EQ(r.text,
            "not applied: exim -bV rejected the candidate: line 3 (the last "
            "applied configuration stays live)");
}

// Verifies that a deleted domain's removal is a success.
TEST(ReconcileReply, RemovedDomainSucceeds) {
  auto o = outcome_with({{"shop.example", "removed", "", ""}});
  auto r = reconcile_reply(o, kShop, json::object());
  EXPECT_EQ(r.result, Result::kSuccess);
  EXPECT_EQ(r.text, "shop.example: relay removed, generation 7");
}

// Verifies that a domain the panel does not have is no error: a save hook
// after a delete finds nothing to relay.
TEST(ReconcileReply, UnknownDomainHasNothingToRelay) {
  auto r = reconcile_reply(outcome_with({}), kShop, json::object());
  EXPECT_EQ(r.result, Result::kSuccess);
  EXPECT_EQ(r.text, "shop.example: no settings in the panel, nothing to relay");
}

// Verifies that the server-wide relay's rejection comes from the status.
TEST(ReconcileReply, ServerRejectionIsAnError) {
  json status = json::object();
  status["errors"] =
      json::array({json{{"domain", "shop.example"}, {"error", "other"}},
                   json{{"domain", ""},
                        {"error",
                         "server-wide relay (conf/mail.json): "
                         "smtp_relay.host: empty"}}});
  auto r = reconcile_reply(outcome_with({}), {Kind::kServer, ""}, status);
  EXPECT_EQ(r.result, Result::kError);
  EXPECT_NE(r.text.find("conf/mail.json"), std::string::npos);
}

// Verifies that a written server-wide file is reported as applied.
TEST(ReconcileReply, ServerAppliedSucceeds) {
  auto o = outcome_with({});
  o.report.written = {"default/smtp_relay.conf"};
  auto r = reconcile_reply(o, {Kind::kServer, ""}, json::object());
  EXPECT_EQ(r.result, Result::kSuccess);
  EXPECT_EQ(r.text, "server-wide relay: applied, generation 7");
}

// Verifies that a full reconcile with rejections names the first and
// counts the rest.
TEST(ReconcileReply, FullReconcileSumsUpRejections) {
  auto o = outcome_with({});
  o.problems = {"domain 'a.example' (user x): smtp_relay.port: bad",
                "domain 'b.example' (user x): smtp_relay.host: bad"};
  auto r = reconcile_reply(o, {}, json::object());
  EXPECT_EQ(r.result, Result::kError);
  EXPECT_EQ(r.text,
            "domain 'a.example' (user x): smtp_relay.port: bad (and 1 more)");
}

// Verifies that the outcome JSON carries what the apply did.
TEST(ReconcileReply, OutcomeJsonListsTheApply) {
  auto o = outcome_with({{"shop.example", "applied", "relay", ""}});
  o.full = true;
  o.report.new_generation = true;
  o.report.reloaded = true;
  auto j = outcome_json(o);
  EXPECT_EQ(j["result"], "applied");
  EXPECT_EQ(j["full"], true);
  EXPECT_EQ(j["reloaded"], true);
  EXPECT_EQ(j["domains"][0]["domain"], "shop.example");
}

}  // namespace
}  // namespace havenoro::daemon
