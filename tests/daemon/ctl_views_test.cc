// Verifies havenoro-relayctl's tables and plan diff, as a person reads
// them.

#include <gtest/gtest.h>

#include "havenoro_relay/ctl/text_table.h"
#include "havenoro_relay/ctl/views.h"

namespace havenoro::ctl {
namespace {

using nlohmann::json;

json relay() {
  return {{"host", "smtp.sendgrid.net"}, {"port", 587},
          {"security", "auto"},          {"tls", "starttls"},
          {"verify_certificate", true},  {"username", "apikey"},
          {"password_set", true}};
}

// Verifies that columns line up and the last one is not padded.
TEST(TextTable, AlignsColumns) {
  TextTable t({"A", "LONGER", "X"});
  t.add({"aaaa", "b", "c"});
  EXPECT_EQ(t.str(), "A     LONGER  X\naaaa  b       c\n");
}

// Verifies that UTF-8 text counts by character, not byte.
TEST(TextTable, CountsCharactersNotBytes) {
  TextTable t;
  t.add({"ä", "x"});
  t.add({"ab", "y"});
  EXPECT_EQ(t.str(), "ä   x\nab  y\n");
}

// Verifies a relay's one-phrase description, never a password.
TEST(Views, RelayTextSaysEverythingButThePassword) {
  EXPECT_EQ(relay_text(relay()),
            "smtp.sendgrid.net:587, STARTTLS required, certificate "
            "verified, user 'apikey', password set");
  json v6 = relay();
  v6["host"] = "2001:db8::25";
  v6["tls"] = "none";
  v6["username"] = "";
  EXPECT_EQ(relay_text(v6), "[2001:db8::25]:587, plain text, no login");
  EXPECT_EQ(relay_text(nullptr), "none (mail goes out directly)");
}

// Verifies the status table's rows and the rejected list.
TEST(Views, StatusTable) {
  json s = {
      {"version", "0.1.0"},
      {"pid", 99},
      {"uptime_s", 3725},
      {"generation", 42},
      {"last_apply",
       {{"result", "applied"},
        {"at", "2024-05-01T12:00:01Z"},
        {"took_ms", 12},
        {"full", false},
        {"changed_domains", {"a.example"}},
        {"written", 1},
        {"removed", 0},
        {"errors", json::array()}}},
      {"domains",
       {{"relayed", 2}, {"default", 1}, {"suspended", 0}, {"rejected", 1}}},
      {"server_relay", relay()},
      {"exim",
       {{"reloaded", true},
        {"at", "2024-05-01T11:00:00Z"},
        {"message", "exim pid 5 reloaded"}}},
      {"errors",
       {{{"domain", "bad.example"},
         {"error", "smtp_relay.port: 0"},
         {"first_seen", "2024-05-01T10:00:00Z"}}}}};
  std::string t = status_view(s);
  EXPECT_NE(t.find("Daemon             havenoro-relayd 0.1.0, pid 99, up 1h "
                   "02m\n"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("Live generation    42\n"), std::string::npos) << t;
  EXPECT_NE(t.find("Last apply         applied at 2024-05-01T12:00:01Z in 12 "
                   "ms\n"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("  changed          a.example\n"), std::string::npos) << t;
  EXPECT_NE(t.find("Domains            2 relayed, 1 default, 0 suspended, 1 "
                   "rejected\n"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("Exim               reloaded at 2024-05-01T11:00:00Z: exim "
                   "pid 5 reloaded\n"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("bad.example  2024-05-01T10:00:00Z  smtp_relay.port: 0"),
            std::string::npos)
      << t;
}

// Verifies that lists the daemon cut short say how many were left out.
TEST(Views, StatusTableSaysWhatWasLeftOut) {
  json s = {{"version", "0.1.0"},
            {"pid", 1},
            {"uptime_s", 5},
            {"generation", 3},
            {"last_apply",
             {{"result", "applied"},
              {"changed_domains", {"a.example", "b.example"}},
              {"changed_domains_total", 30}}},
            {"domains", json::object()},
            {"server_relay", nullptr},
            {"exim", nullptr},
            {"warnings", {"a.example: smtp_relay.port: 25"}},
            {"warnings_total", 4},
            {"errors",
             {{{"domain", "bad.example"},
               {"error", "smtp_relay.port: 0"},
               {"first_seen", "2024-05-01T10:00:00Z"}}}},
            {"errors_total", 12}};
  std::string t = status_view(s);
  EXPECT_NE(t.find("a.example, b.example (and 28 more)\n"), std::string::npos)
      << t;
  EXPECT_NE(t.find("Warning            ... and 3 more\n"), std::string::npos)
      << t;
  EXPECT_NE(t.find("... and 11 more: havenoro-relayctl domains\n"),
            std::string::npos)
      << t;
}

// Verifies the status of a daemon that has applied nothing yet.
TEST(Views, StatusTableBeforeTheFirstApply) {
  json s = {{"version", "0.1.0"},      {"pid", 1},
            {"uptime_s", 5},           {"generation", 0},
            {"last_apply", nullptr},   {"domains", json::object()},
            {"server_relay", nullptr}, {"exim", nullptr},
            {"errors", json::array()}};
  std::string t = status_view(s);
  EXPECT_NE(t.find("Last apply         none yet\n"), std::string::npos) << t;
  EXPECT_NE(t.find("not reloaded since the daemon started"), std::string::npos)
      << t;
}

// Verifies that a rollback's pin is its own row, saying how to end it,
// and that without one there is none.
TEST(Views, StatusTableShowsThePin) {
  json s = {{"version", "0.1.0"},
            {"pid", 1},
            {"uptime_s", 5},
            {"generation", 3},
            {"last_apply", nullptr},
            {"domains", json::object()},
            {"server_relay", nullptr},
            {"exim", nullptr},
            {"pinned", {{"generation", 3}}}};
  std::string t = status_view(s);
  EXPECT_NE(t.find("Pinned             generation 3 by a rollback; "
                   "`havenoro-relayctl reconcile --release-pin --wait` "
                   "renders the snippets again\n"),
            std::string::npos)
      << t;
  s["pinned"] = nullptr;
  EXPECT_EQ(status_view(s).find("Pinned"), std::string::npos);
}

// Verifies that the configuration row says how the last reload went: a
// refused one with its reason, until a reload is taken.
TEST(Views, StatusTableShowsTheLastReload) {
  json s = {{"version", "0.1.0"},
            {"pid", 1},
            {"uptime_s", 5},
            {"generation", 3},
            {"domains", json::object()},
            {"config_file", "/etc/havenoro-relayd/config.json"},
            {"config", nullptr}};
  EXPECT_NE(status_view(s).find("Configuration      "
                                "/etc/havenoro-relayd/config.json, as loaded "
                                "at start\n"),
            std::string::npos)
      << status_view(s);
  s["config"] = {{"at", "2024-05-01T12:00:00Z"},
                 {"result", "refused"},
                 {"error",
                  "/etc/havenoro-relayd/config.json: 'exim_group' must name "
                  "a group of this system, not 'nosuchgroup'"}};
  EXPECT_NE(status_view(s).find(
                "Configuration      /etc/havenoro-relayd/config.json: reload "
                "REFUSED at 2024-05-01T12:00:00Z: "
                "/etc/havenoro-relayd/config.json: 'exim_group' must name a "
                "group of this system, not 'nosuchgroup'; the configuration "
                "loaded before stays\n"),
            std::string::npos)
      << status_view(s);
  s["config"] = {{"at", "2024-05-01T12:05:00Z"},
                 {"result", "reloaded"},
                 {"error", nullptr}};
  EXPECT_NE(status_view(s).find("Configuration      "
                                "/etc/havenoro-relayd/config.json, reloaded "
                                "at 2024-05-01T12:05:00Z\n"),
            std::string::npos)
      << status_view(s);
}

// Verifies the one-domain table.
TEST(Views, DomainTable) {
  json d = {{"domain", "a.example"}, {"user", "alice"},
            {"route", "relay"},      {"reason", "relay of its own"},
            {"relay", relay()},      {"last_error", nullptr}};
  EXPECT_EQ(domain_view(d),
            "Domain      a.example\n"
            "User        alice\n"
            "Route       relay\n"
            "Why         relay of its own\n"
            "Relay       smtp.sendgrid.net:587, STARTTLS required, "
            "certificate verified, user 'apikey', password set\n"
            "Last error  -\n");
}

// Verifies that deliveries, DKIM and warnings show when the daemon sends
// them.
TEST(Views, DomainTableWithDeliveries) {
  json d = {{"domain", "a.example"},
            {"route", "relay"},
            {"dkim", {{"selector", "mail"}, {"signing", true}}},
            {"warnings", {"smtp_relay.port: 25 is often blocked"}},
            {"last_delivery",
             {{"time", "2026-12-03 09:02:17"},
              {"message_id", "1xZ2hd-00012N-0R"},
              {"outcome", "delivered"},
              {"host", "smtp.example [192.0.2.1]"},
              {"response", "250 ok"}}},
            {"last_failure", nullptr}};
  std::string t = domain_view(d);
  EXPECT_NE(t.find("DKIM           signing, selector mail\n"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("Warning        smtp_relay.port: 25 is often blocked\n"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("Last delivery  2026-12-03 09:02:17 delivered "
                   "1xZ2hd-00012N-0R via smtp.example [192.0.2.1]: 250 ok\n"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("Last failure   -\n"), std::string::npos) << t;
}

// Verifies the domain list, one line per domain.
TEST(Views, DomainListTable) {
  json list = {{{"domain", "a.example"},
                {"user", "alice"},
                {"route", "relay"},
                {"relay", relay()},
                {"last_error", nullptr}},
               {{"domain", "b.example"},
                {"user", "bob"},
                {"route", "rejected"},
                {"last_error", {{"error", "port 0"}}}},
               {{"domain", "c.example"},
                {"user", "bob"},
                {"route", "rejected"},
                {"live", {{"route", "relay"}, {"relay", "192.0.2.7:465"}}},
                {"last_error", {{"error", "port 1e9"}}}}};
  EXPECT_EQ(domain_list_view(list),
            "DOMAIN     USER   ROUTE     RELAY                  LAST ERROR\n"
            "a.example  alice  relay     smtp.sendgrid.net:587  -\n"
            "b.example  bob    rejected  -                      port 0\n"
            "c.example  bob    rejected  192.0.2.7:465 (live)   port 1e9\n");
}

// Verifies that a rejected save shows the relay still in force.
TEST(Views, DomainShowsWhatStaysLive) {
  json d = {{"domain", "c.example"},
            {"user", "bob"},
            {"route", "rejected"},
            {"reason", "settings rejected; what was last applied stays live"},
            {"live", {{"route", "relay"}, {"relay", "192.0.2.7:465"}}},
            {"last_error", nullptr}};
  auto t = domain_view(d);
  EXPECT_NE(t.find("Live now    relay 192.0.2.7:465 (last applied)\n"),
            std::string::npos)
      << t;
}

json side(const std::string& relay, const std::string& user,
          const std::string& tls = "starttls", bool verify = true) {
  return {{"route", "relay"},
          {"relay", relay},
          {"username", user},
          {"tls", tls},
          {"verify_certificate", verify}};
}

json change(const std::string& domain, json live, json after,
            bool password = false, bool dkim = false) {
  return {{"domain", domain},
          {"live", std::move(live)},
          {"after", std::move(after)},
          {"password_changed", password},
          {"dkim_changed", dkim}};
}

// Verifies the plan as a diff a person reads: per domain the live route
// and the new one, a password only as "password changed", then the files.
TEST(Views, PlanIsADiff) {
  json plan = {{"would_write",
                {"domains/new.example/smtp_relay.conf",
                 "domains/shop.example/smtp_relay.conf"}},
               {"would_remove", {"domains/gone.example"}},
               {"changes",
                {change("gone.example", side("smtp.gone.net:587", "g"),
                        {{"route", "default"}}),
                 change("new.example", {{"route", "default"}},
                        side("smtp.new.net:587", "n")),
                 change("shop.example", side("smtp.old.net:587", "a"),
                        side("smtp.new.net:465", "b", "implicit"), true)}},
               {"new_generation", false},
               {"check", "passed"},
               {"errors", json::array()},
               {"problems", {"domain 'b.example' (user bob): port: 0"}}};
  EXPECT_EQ(plan_view(plan),
            "Exim check passed; the snippets stay, no Exim reload\n"
            "- gone.example  relay smtp.gone.net:587 (user 'g', STARTTLS) "
            "-> default\n"
            "+ new.example  relay smtp.new.net:587 (user 'n', STARTTLS)\n"
            "~ shop.example  relay smtp.old.net:587 (user 'a', STARTTLS) -> "
            "relay smtp.new.net:465 (user 'b', TLS from the first byte); "
            "password changed\n"
            "Files:\n"
            "--- live\n"
            "+++ after the apply\n"
            "+ domains/new.example/smtp_relay.conf\n"
            "+ domains/shop.example/smtp_relay.conf\n"
            "- domains/gone.example\n"
            "rejected: domain 'b.example' (user bob): port: 0\n");
}

// Verifies that what stays the same on both sides is left out, that a
// change with nothing visible still says why the domain is listed, and
// the server-wide relay, a suspension, DKIM and a reload.
TEST(Views, PlanShowsOnlyWhatDiffers) {
  json plan = {
      {"would_write",
       {"default/smtp_relay.conf", "domains/a.example/smtp_relay.conf",
        "suspended/s.example", "dkim/k.example/dkim.conf"}},
      {"would_remove", json::array()},
      {"changes",
       {change("", {{"route", "none"}}, side("smtp.all.net:587", "srv")),
        change("a.example", side("h:587", "u"), side("h:587", "u"), true),
        change("k.example", side("h:587", "u"), side("h:587", "u"), false,
               true),
        change("s.example", {{"route", "relay"}, {"relay", "h:587"}},
               {{"route", "suspended"}}),
        change("t.example", side("h:587", "u", "starttls"),
               side("h:587", "u", "starttls", false)),
        change("x.example", side("h:587", "u"), side("h:587", "u"))}},
      {"held_back", {"removal of 40 of 50 relay domains"}},
      {"new_generation", true},
      {"check", "passed"}};
  std::string t = plan_view(plan);
  EXPECT_EQ(t.substr(0, t.find("Files:")),
            "Exim check passed; the snippets change: a new generation, Exim "
            "would be reloaded\n"
            "+ (server-wide relay)  relay smtp.all.net:587 (user 'srv', "
            "STARTTLS)\n"
            "~ a.example  relay h:587 (user 'u') -> relay h:587 (user 'u'); "
            "password changed\n"
            "~ k.example  relay h:587 (user 'u') -> relay h:587 (user 'u'); "
            "DKIM files change\n"
            "~ s.example  relay h:587 -> suspended\n"
            "~ t.example  relay h:587 (user 'u', STARTTLS) -> relay h:587 "
            "(user 'u', STARTTLS, certificate not verified)\n"
            "~ x.example  relay h:587 (user 'u') -> relay h:587 (user 'u'); "
            "live files differ from the settings\n");
  EXPECT_NE(t.find("held back: removal of 40 of 50 relay domains\n"),
            std::string::npos)
      << t;
}

// Verifies the plan when nothing would change.
TEST(Views, PlanWithNothingToDo) {
  json plan = {{"would_write", json::array()},
               {"would_remove", json::array()},
               {"changes", json::array()},
               {"new_generation", false},
               {"check", "passed"}};
  EXPECT_EQ(plan_view(plan),
            "Exim check passed; the snippets stay, no Exim reload\n"
            "No file would change.\n");
}

// Verifies that a plan whose snippets a rollback's pin holds says so, and
// how to let them through.
TEST(Views, PlanSaysWhatThePinHolds) {
  json plan = {{"would_write", json::array()},
               {"would_remove", json::array()},
               {"changes", json::array()},
               {"new_generation", false},
               {"pinned", true},
               {"generation", 2},
               {"check", "passed"}};
  EXPECT_EQ(plan_view(plan),
            "Exim check passed; the snippets would change, but generation 2 "
            "is pinned by a rollback: they stay, no Exim reload;\n"
            "  `havenoro-relayctl reconcile --release-pin --wait` renders the "
            "snippets again\n"
            "No file would change.\n");
}

// Verifies that a daemon without "changes" in its reply (an older one)
// still gets its file list shown.
TEST(Views, PlanWithoutChangesShowsFiles) {
  json plan = {{"would_write", {"domains/a.example/smtp_relay.conf"}},
               {"would_remove", json::array()},
               {"new_generation", false},
               {"check", "passed"}};
  EXPECT_NE(plan_view(plan).find("+ domains/a.example/smtp_relay.conf\n"),
            std::string::npos);
}

}  // namespace
}  // namespace havenoro::ctl
