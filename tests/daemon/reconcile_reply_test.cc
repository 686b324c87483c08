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

Reply reply_to(const ApplyOutcome& o, const ReconcileTarget& target,
               const std::optional<std::string>& server_error = {}) {
  return reconcile_reply(o, target, encode_summary(o), server_error);
}

// The reply as the client reads it.
json sent(const Reply& reply) {
  return json::parse(encode_reply(reply));
}

// Verifies that an applied domain is a success naming its route.
TEST(ReconcileReply, AppliedDomainSucceeds) {
  auto o = outcome_with({{"shop.example", "applied", "relay", ""}});
  o.report.written = {"domains/shop.example/smtp_relay.conf"};
  auto r = reply_to(o, kShop);
  EXPECT_EQ(r.result, Result::kSuccess);
  EXPECT_EQ(r.text, "shop.example: applied (route relay, generation 7)");
  EXPECT_EQ(r.arguments["domain"]["result"], "applied");
  EXPECT_EQ(sent(r)["arguments"]["apply"]["generation"], 7);
}

// Verifies that nothing to change is a success too.
TEST(ReconcileReply, UnchangedDomainSucceeds) {
  auto o = outcome_with({{"shop.example", "unchanged", "default", ""}});
  EXPECT_EQ(reply_to(o, kShop).result, Result::kSuccess);
}

// Verifies that a rejected domain is an error whose text is one line.
TEST(ReconcileReply, RejectedDomainIsOneLineError) {
  auto o = outcome_with(
      {{"shop.example", "rejected", "",
        "domain 'shop.example' (user a): smtp_relay.port: 70000 is out of "
        "range\n1-65535"}});
  auto r = reply_to(o, kShop);
  EXPECT_EQ(r.result, Result::kError);
  EXPECT_EQ(r.text.find('\n'), std::string::npos);
  EXPECT_NE(r.text.find("smtp_relay.port"), std::string::npos);
}

// Verifies that an apply Exim refused is an error saying the old
// configuration stays.
TEST(ReconcileReply, FailedApplyIsAnError) {
  auto o = outcome_with({{"shop.example", "failed", "relay", "x"}});
  o.report.errors = {"exim -bV rejected the candidate: line 3"};
  auto r = reply_to(o, kShop);
  EXPECT_EQ(r.result, Result::kError);
  EXPECT_EQ(r.text,
            "not applied: exim -bV rejected the candidate: line 3 (the last "
            "applied configuration stays live)");
}

// Verifies that a deleted domain's removal is a success.
TEST(ReconcileReply, RemovedDomainSucceeds) {
  auto o = outcome_with({{"shop.example", "removed", "", ""}});
  auto r = reply_to(o, kShop);
  EXPECT_EQ(r.result, Result::kSuccess);
  EXPECT_EQ(r.text, "shop.example: relay removed, generation 7");
}

// Verifies that a domain the panel does not have is no error: a save hook
// after a delete finds nothing to relay.
TEST(ReconcileReply, UnknownDomainHasNothingToRelay) {
  auto r = reply_to(outcome_with({}), kShop);
  EXPECT_EQ(r.result, Result::kSuccess);
  EXPECT_EQ(r.text, "shop.example: no settings in the panel, nothing to relay");
}

// Verifies that the server-wide relay's rejection is an error, and that
// a domain's reply does not look at it.
TEST(ReconcileReply, ServerRejectionIsAnError) {
  std::string error =
      "server-wide relay (conf/mail.json): smtp_relay.host:\nempty";
  auto r = reply_to(outcome_with({}), {Kind::kServer, ""}, error);
  EXPECT_EQ(r.result, Result::kError);
  EXPECT_NE(r.text.find("conf/mail.json"), std::string::npos);
  EXPECT_EQ(r.text.find('\n'), std::string::npos);
  auto o = outcome_with({{"shop.example", "applied", "relay", ""}});
  EXPECT_EQ(reply_to(o, kShop, error).result, Result::kSuccess);
}

// Verifies that a written server-wide file is reported as applied.
TEST(ReconcileReply, ServerAppliedSucceeds) {
  auto o = outcome_with({});
  o.report.written = {"default/smtp_relay.conf"};
  auto r = reply_to(o, {Kind::kServer, ""});
  EXPECT_EQ(r.result, Result::kSuccess);
  EXPECT_EQ(r.text, "server-wide relay: applied, generation 7");
}

// Verifies that a full reconcile with rejections names the first and
// counts the rest, after what it did.
TEST(ReconcileReply, FullReconcileSumsUpRejections) {
  auto o = outcome_with({});
  o.problems = {"domain 'a.example' (user x): smtp_relay.port: bad",
                "domain 'b.example' (user x): smtp_relay.host: bad"};
  auto r = reply_to(o, {});
  EXPECT_EQ(r.result, Result::kError);
  EXPECT_EQ(r.text,
            "nothing to change: generation 7 live; rejected: domain "
            "'a.example' (user x): smtp_relay.port: bad (and 1 more)");
}

// A full resync that made generation 4 live and reloaded Exim.
ApplyOutcome new_generation_applied() {
  auto o = outcome_with({});
  o.full = true;
  o.report.generation = 4;
  o.report.new_generation = true;
  o.report.reloaded = true;
  o.report.written = {"generations/4/routers.conf",
                      "domains/a.example/smtp_relay.conf"};
  return o;
}

// Verifies that a full reconcile with one domain rejected says first that
// the new generation is live and Exim reloaded, keeping result 1 (the
// panel contract's "rejected"), on one line.
TEST(ReconcileReply, FullReconcileSaysWhatItDidBeforeTheRejection) {
  auto o = new_generation_applied();
  o.problems = {"domain 'bad.example' (user x): smtp_relay.port:\n0"};
  auto r = reply_to(o, {});
  EXPECT_EQ(r.result, Result::kError);
  EXPECT_EQ(r.text,
            "applied: generation 4 live, Exim reloaded; rejected: domain "
            "'bad.example' (user x): smtp_relay.port: 0");
  o.problems.clear();
  r = reply_to(o, {});
  EXPECT_EQ(r.result, Result::kSuccess);
  EXPECT_EQ(r.text, "applied: generation 4 live, Exim reloaded");
}

// Verifies that `reconcile --release-pin` says the pin was released,
// whatever else the apply did: with a rejection, without one, and when
// the apply failed (the pin is gone all the same).
TEST(ReconcileReply, ReleasedPinIsSaid) {
  ReconcileTarget release;
  release.release_pin = true;
  auto o = new_generation_applied();
  EXPECT_EQ(reply_to(o, release).text,
            "pin released; applied: generation 4 live, Exim reloaded");
  o.problems = {"domain 'bad.example' (user x): smtp_relay.port: 0"};
  auto r = reply_to(o, release);
  EXPECT_EQ(r.result, Result::kError);
  EXPECT_EQ(r.text,
            "pin released; applied: generation 4 live, Exim reloaded; "
            "rejected: domain 'bad.example' (user x): smtp_relay.port: 0");
  auto failed = outcome_with({});
  failed.report.errors = {"exim rejected the candidate: line 3"};
  EXPECT_EQ(reply_to(failed, release).text,
            "pin released; not applied: exim rejected the candidate: line 3 "
            "(the last applied configuration stays live)");
}

// Verifies that `reconcile --confirm-removals` counts the relay domains
// it removed (their credential directories, not a suspension marker or
// DKIM files that went too).
TEST(ReconcileReply, ConfirmedRemovalsAreCounted) {
  ReconcileTarget confirm;
  confirm.confirm_removals = true;
  auto o = outcome_with({});
  o.full = true;
  o.report.removed = {"domains/a.example", "domains/b.example",
                      "dkim/a.example", "suspended/c.example",
                      "domains/d.example/smtp_relay.conf"};
  o.problems = {"domain 'bad.example' (user x): smtp_relay.port: 0"};
  auto r = reply_to(o, confirm);
  EXPECT_EQ(r.result, Result::kError);
  EXPECT_EQ(r.text,
            "removals confirmed: 2 relay domains removed; applied: "
            "generation 7 live; rejected: domain 'bad.example' (user x): "
            "smtp_relay.port: 0");
  o.report.removed = {"domains/a.example"};
  o.problems.clear();
  EXPECT_EQ(reply_to(o, confirm).text,
            "removals confirmed: 1 relay domain removed; applied: "
            "generation 7 live");
}

// Verifies that a full reconcile says when the snippets were held by a
// rollback's pin, and when Exim was not reloaded for a new generation.
TEST(ReconcileReply, FullReconcileSaysPinAndReload) {
  auto o = outcome_with({});
  o.report.written = {"domains/a.example/smtp_relay.conf"};
  o.report.pinned = true;
  EXPECT_EQ(reply_to(o, {}).text,
            "applied: generation 7 live, its snippets pinned by a rollback");
  auto fresh = new_generation_applied();
  fresh.report.reloaded = false;
  fresh.report.exim_state = "no exim daemon runs";
  EXPECT_EQ(reply_to(fresh, {}).text,
            "applied: generation 4 live, Exim not reloaded: no exim daemon "
            "runs");
}

// Verifies that a held-back mass removal in a full reconcile is result 1
// after what went live.
TEST(ReconcileReply, FullReconcileSaysWhatWasHeldBack) {
  auto o = new_generation_applied();
  o.report.held_back = {"refusing to remove 11 of 12 relay domains"};
  auto r = reply_to(o, {});
  EXPECT_EQ(r.result, Result::kError);
  EXPECT_EQ(r.text,
            "applied: generation 4 live, Exim reloaded; held back: refusing "
            "to remove 11 of 12 relay domains");
}

// Verifies that the summary says what the apply did, and counts what
// grows with the tree instead of listing it.
TEST(ReconcileReply, SummaryCountsWhatTheApplyDid) {
  auto o = outcome_with({{"shop.example", "applied", "relay", ""},
                         {"other.example", "unchanged", "relay", ""}});
  o.full = true;
  o.report.new_generation = true;
  o.report.reloaded = true;
  o.report.written = {"domains/shop.example/smtp_relay.conf",
                      "generations/8/routers.conf"};
  for (int i = 0; i < 30; ++i)
    o.problems.push_back("domain 'd" + std::to_string(i) + ".example': bad");
  auto j = summary_json(o);
  EXPECT_EQ(j["result"], "rejected");
  EXPECT_EQ(j["full"], true);
  EXPECT_EQ(j["reloaded"], true);
  EXPECT_EQ(j["written"], 2);
  EXPECT_EQ(j["removed"], 0);
  EXPECT_EQ(j["domains"], 2);
  EXPECT_EQ(j["problems"].size(), 20u);
  EXPECT_EQ(j["problems_total"], 30);
}

// Verifies that a domain's reply carries its own outcome and the apply's
// summary, not every domain of the apply.
TEST(ReconcileReply, DomainReplyHasItsOwnOutcomeOnly) {
  auto o = outcome_with({{"other.example", "applied", "relay", ""},
                         {"shop.example", "applied", "relay", ""}});
  auto doc = sent(reply_to(o, kShop));
  EXPECT_EQ(doc["arguments"]["domain"]["domain"], "shop.example");
  EXPECT_EQ(doc["arguments"]["apply"]["domains"], 2);
  EXPECT_EQ(doc.dump().find("other.example"), std::string::npos) << doc;
}

// Verifies that a failed bulk apply's text stays short: the first errors
// and how many more.
TEST(ReconcileReply, FailedApplyNamesTheFirstErrors) {
  auto o = outcome_with({});
  for (int i = 0; i < 40; ++i)
    o.report.errors.push_back("exim -be: file " + std::to_string(i));
  auto r = reply_to(o, {});
  EXPECT_EQ(r.result, Result::kError);
  EXPECT_NE(r.text.find("file 2 (and 37 more)"), std::string::npos) << r.text;
  EXPECT_EQ(r.text.find("file 3;"), std::string::npos) << r.text;
}

// Verifies that the waiters of one apply share one encoded summary, and
// that the next apply gets its own.
TEST(ApplySummaries, EncodedOncePerApply) {
  ApplySummaries summaries;
  auto first = std::make_shared<const ApplyOutcome>(outcome_with({}));
  auto a = summaries.of(first);
  EXPECT_EQ(summaries.of(first), a);
  auto o = outcome_with({});
  o.report.generation = 8;
  auto second = std::make_shared<const ApplyOutcome>(o);
  auto b = summaries.of(second);
  EXPECT_NE(b, a);
  EXPECT_NE(b->find("\"generation\":8"), std::string::npos) << *b;
}

// Verifies that when one file of an apply failed on its own (a planted
// symlink), the domain whose file went live succeeds, the failed one is
// an error naming its path, and the whole reconcile says the rest went
// live.
TEST(ReconcileReply, FailedFileFailsOnlyItsDomain) {
  const std::string path = "domains/link.example/smtp_relay.conf";
  auto o = outcome_with({{"shop.example", "applied", "relay", ""},
                         {"link.example", "failed", "relay",
                          path + " not written: symlinks are refused"}});
  o.report.written = {"domains/shop.example/smtp_relay.conf"};
  o.report.path_failed(path, path + " not written: symlinks are refused");
  EXPECT_EQ(reply_to(o, kShop).result, Result::kSuccess);
  auto r = reply_to(o, {Kind::kDomain, "link.example"});
  EXPECT_EQ(r.result, Result::kError);
  EXPECT_EQ(r.text, "link.example: not applied: " + path +
                        " not written: symlinks are refused");
  auto all = reply_to(o, {});
  EXPECT_EQ(all.result, Result::kError);
  EXPECT_NE(all.text.find("(the other changes went live)"), std::string::npos)
      << all.text;
  EXPECT_EQ(reply_to(o, {Kind::kServer, ""}).result, Result::kSuccess);
}

// Verifies that a domain whose removal is held back is an error that
// says why.
TEST(ReconcileReply, HeldBackRemovalIsAnError) {
  auto o = outcome_with(
      {{"shop.example", "held_back", "", "refusing to remove 11 of 12"}});
  o.report.held_back = {"refusing to remove 11 of 12"};
  auto r = reply_to(o, kShop);
  EXPECT_EQ(r.result, Result::kError);
  EXPECT_EQ(r.text, "refusing to remove 11 of 12");
}

}  // namespace
}  // namespace havenoro::daemon
