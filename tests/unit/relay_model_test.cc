// Verifies how the relay model turns a panel snapshot into routes.

#include "havenoro_relay/model/relay_model.h"

#include <gtest/gtest.h>

namespace havenoro::model {
namespace {

using panel::DomainEntry;
using panel::PanelSnapshot;
using panel::UserEntry;

UserEntry user(const std::string& name, bool suspended = false) {
  std::string text = std::string(R"({"user":")") + name + R"(","suspended":)" +
                     (suspended ? "true" : "false") + "}";
  return {name, panel::parse_user_settings(text, name), {}};
}

DomainEntry domain(const std::string& owner, const std::string& name,
                   const std::string& extra = "") {
  std::string text = R"({"domain":")" + name + "\"" + extra + "}";
  return {owner, name, panel::parse_domain_settings(text, name, {}), {}, {}};
}

const std::string kRelay =
    R"(,"smtp_relay":{"enabled":true,"host":"smtp.example.net",)"
    R"("username":"u","password":"p"})";

PanelSnapshot snapshot() {
  PanelSnapshot s;
  s.server.value.emplace();
  s.users = {user("alice"), user("carol", true)};
  s.domains = {domain("alice", "relay.example", kRelay),
               domain("alice", "plain.example"),
               domain("alice", "off.example", R"(,"suspended":true)" + kRelay),
               domain("carol", "carol.example", kRelay)};
  return s;
}

// Verifies the three routes and their reasons.
TEST(RelayModel, GivesEachDomainItsRoute) {
  auto m = build_relay_model(snapshot());
  EXPECT_TRUE(m.problems().empty());
  EXPECT_EQ(m.domains.at("relay.example").route, Route::kRelay);
  EXPECT_EQ(m.domains.at("plain.example").route, Route::kDefault);
  EXPECT_EQ(m.domains.at("off.example").route, Route::kSuspended);
  EXPECT_EQ(m.domains.at("carol.example").route, Route::kSuspended);
  EXPECT_EQ(m.domains.at("carol.example").reason, "user 'carol' is suspended");
  EXPECT_EQ(m.count(Route::kSuspended), 2u);
}

// Verifies that a bad domain is reported by name and field and that the
// others are kept.
TEST(RelayModel, BadDomainIsLeftOutAndReported) {
  auto s = snapshot();
  s.domains.push_back(domain("alice", "broken.example",
                             R"(,"smtp_relay":{"enabled":true,)"
                             R"("host":"x.example","port":70000})"));
  auto m = build_relay_model(s);
  ASSERT_EQ(m.problems().size(), 1u);
  EXPECT_EQ(m.problems()[0].text(),
            "domain 'broken.example' (user alice): smtp_relay.port: 70000 "
            "is out of range 1-65535");
  EXPECT_FALSE(m.domains.count("broken.example"));
  EXPECT_EQ(m.domains.size(), 4u);
}

// Verifies that a domain claimed by two users is relayed for neither.
TEST(RelayModel, DomainUnderTwoUsersIsRelayedForNeither) {
  auto s = snapshot();
  s.users.push_back(user("bob"));
  s.domains.push_back(domain("bob", "relay.example", kRelay));
  auto m = build_relay_model(s);
  EXPECT_FALSE(m.domains.count("relay.example"));
  ASSERT_EQ(m.problems().size(), 2u);
  EXPECT_NE(m.problems()[0].message.find("alice, bob"), std::string::npos);
}

// Verifies that the domains of a user whose user.json is broken are left
// out: whether that user is suspended cannot be known.
TEST(RelayModel, BrokenUserFileLeavesItsDomainsOut) {
  auto s = snapshot();
  s.users.push_back({"dave", panel::parse_user_settings("{", "dave"), {}});
  s.domains.push_back(domain("dave", "dave.example", kRelay));
  auto m = build_relay_model(s);
  EXPECT_FALSE(m.domains.count("dave.example"));
  ASSERT_EQ(m.problems().size(), 1u);
  EXPECT_EQ(m.problems()[0].field, "user.json");
}

// Verifies that a bad server-wide relay is reported as such.
TEST(RelayModel, BadServerRelayIsReported) {
  auto s = snapshot();
  s.server = panel::parse_server_settings(
      R"({"smtp_relay":{"enabled":true,"host":"a b"}})", {});
  auto m = build_relay_model(s);
  EXPECT_TRUE(m.server_problem);
  EXPECT_FALSE(m.server_relay);
  ASSERT_EQ(m.problems().size(), 1u);
  EXPECT_EQ(m.problems()[0].text().rfind("server-wide relay", 0), 0u);
}

// Verifies that the warning count follows re-evaluations: status reads
// it instead of walking every domain's warnings.
TEST(RelayModel, WarningCountFollowsReevaluation) {
  const std::string port25 =
      R"(,"smtp_relay":{"enabled":true,"host":"smtp.example.net",)"
      R"("port":25,"username":"^u","password":"p"})";
  auto s = snapshot();
  s.domains.push_back(domain("alice", "warned.example", port25));
  auto m = build_relay_model(s);
  EXPECT_EQ(m.warning_count(), 2u);  // port 25, and '^' in the username
  EXPECT_EQ(m.warning_count(), m.all_warnings().size());

  UserIndex users;
  for (const auto& u : s.users) users.emplace(u.user, u);
  DomainFiles files{{"alice", domain("alice", "warned.example", kRelay)}};
  evaluate_domain(m, "warned.example", &files, users);
  EXPECT_EQ(m.warning_count(), 0u);

  files = {{"alice", domain("alice", "warned.example", port25)}};
  evaluate_domain(m, "warned.example", &files, users);
  evaluate_domain(m, "warned.example", &files, users);
  EXPECT_EQ(m.warning_count(), 2u);
  evaluate_domain(m, "warned.example", nullptr, users);
  EXPECT_EQ(m.warning_count(), 0u);
  EXPECT_TRUE(m.all_warnings().empty());
}

}  // namespace
}  // namespace havenoro::model
