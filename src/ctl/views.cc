#include "havenoro_relay/ctl/views.h"

#include <fmt/format.h>

#include "havenoro_relay/ctl/text_table.h"

namespace havenoro::ctl {
namespace {

using nlohmann::json;

std::string text(const json& doc, const char* key,
                 const std::string& fallback = "-") {
  auto it = doc.find(key);
  if (it == doc.end() || it->is_null()) return fallback;
  if (it->is_string()) return it->get<std::string>();
  return it->dump();
}

const json& member(const json& doc, const char* key) {
  static const json null;
  auto it = doc.find(key);
  return it == doc.end() ? null : *it;
}

std::string duration(long seconds) {
  if (seconds >= 86400)
    return fmt::format("{}d {}h", seconds / 86400, seconds % 86400 / 3600);
  if (seconds >= 3600)
    return fmt::format("{}h {:02}m", seconds / 3600, seconds % 3600 / 60);
  if (seconds >= 60)
    return fmt::format("{}m {:02}s", seconds / 60, seconds % 60);
  return fmt::format("{}s", seconds);
}

std::string joined(const json& list, const char* separator = ", ") {
  std::string out;
  for (const auto& item : list) {
    if (!out.empty()) out += separator;
    out += item.is_string() ? item.get<std::string>() : item.dump();
  }
  return out.empty() ? "-" : out;
}

// The daemon sends the first few entries of a long list and its total.
size_t left_out(const json& doc, const char* list, const char* total) {
  size_t shown = member(doc, list).size();
  size_t all = doc.value(total, shown);
  return all > shown ? all - shown : 0;
}

std::string and_more(size_t n) {
  return n ? fmt::format(" (and {} more)", n) : "";
}

std::string last_apply_text(const json& a) {
  if (!a.is_object()) return "none yet";
  return fmt::format("{} at {} in {} ms{}", text(a, "result"), text(a, "at"),
                     a.value("took_ms", 0),
                     a.value("full", false) ? " (full resync)" : "");
}

std::string domains_text(const json& d) {
  return fmt::format("{} relayed, {} default, {} suspended, {} rejected",
                     d.value("relayed", 0), d.value("default", 0),
                     d.value("suspended", 0), d.value("rejected", 0));
}

std::string exim_text(const json& e) {
  if (!e.is_object()) return "not reloaded since the daemon started";
  std::string state = e.value("reloaded", false) ? "reloaded" : "not reloaded";
  std::string message = text(e, "message", "");
  return fmt::format("{} at {}{}", state, text(e, "at"),
                     message.empty() ? "" : ": " + message);
}

// The configuration file, and how its last reload (SIGHUP) went: a
// refused one stays visible until a reload is taken.
std::string config_text(const json& s) {
  std::string file = text(s, "config_file");
  const json& reload = member(s, "config");
  if (!reload.is_object()) return file + ", as loaded at start";
  if (text(reload, "result") == "refused") {
    return fmt::format(
        "{}: reload REFUSED at {}: {}; the configuration loaded before "
        "stays",
        file, text(reload, "at"), text(reload, "error"));
  }
  return fmt::format("{}, reloaded at {}", file, text(reload, "at"));
}

constexpr const char* kReleasePin =
    "`havenoro-relayctl reconcile --release-pin --wait` renders the "
    "snippets again";

std::string pinned_text(const json& pinned) {
  return fmt::format("generation {} by a rollback; {}",
                     text(pinned, "generation"), kReleasePin);
}

std::string errors_text(const json& errors, size_t more) {
  if (!errors.is_array() || errors.empty()) return "";
  TextTable table({"REJECTED", "SINCE", "REASON"});
  for (const auto& e : errors) {
    std::string name = text(e, "domain", "");
    table.add({name.empty() ? "(server-wide)" : name, text(e, "first_seen"),
               text(e, "error")});
  }
  std::string rest =
      more ? fmt::format("... and {} more: havenoro-relayctl domains\n", more)
           : "";
  return "\n" + table.str() + rest;
}

std::string delivery_text(const json& e) {
  if (!e.is_object()) return "-";
  std::string host = text(e, "host", "");
  std::string response = text(e, "response", "");
  return fmt::format("{} {} {}{}{}", text(e, "time"), text(e, "outcome"),
                     text(e, "message_id"), host.empty() ? "" : " via " + host,
                     response.empty() ? "" : ": " + response);
}

std::string host_port(const json& relay) {
  std::string host = text(relay, "host");
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  return fmt::format("{}:{}", host, relay.value("port", 0));
}

}  // namespace

std::string relay_text(const json& relay) {
  if (!relay.is_object()) return "none (mail goes out directly)";
  std::string tls = text(relay, "tls");
  std::string security = tls == "implicit"   ? "TLS from the first byte"
                         : tls == "starttls" ? "STARTTLS required"
                                             : "plain text";
  std::string verify = relay.value("verify_certificate", true)
                           ? "certificate verified"
                           : "certificate not verified";
  std::string user = text(relay, "username", "");
  std::string login =
      user.empty()
          ? "no login"
          : fmt::format("user '{}', password {}", user,
                        relay.value("password_set", false) ? "set" : "empty");
  if (tls == "none")
    return fmt::format("{}, {}, {}", host_port(relay), security, login);
  return fmt::format("{}, {}, {}, {}", host_port(relay), security, verify,
                     login);
}

std::string status_view(const json& s) {
  const json& last = member(s, "last_apply");
  const json& pinned = member(s, "pinned");
  std::vector<std::pair<std::string, std::string>> rows = {
      {"Daemon",
       fmt::format("havenoro-relayd {}, pid {}, up {}", text(s, "version"),
                   text(s, "pid"), duration(s.value("uptime_s", 0L)))},
      {"Configuration", config_text(s)},
      {"Live generation", text(s, "generation")},
  };
  if (pinned.is_object()) rows.push_back({"Pinned", pinned_text(pinned)});
  rows.push_back({"Last apply", last_apply_text(last)});
  if (last.is_object()) {
    rows.push_back(
        {"  changed", joined(member(last, "changed_domains")) +
                          and_more(left_out(last, "changed_domains",
                                            "changed_domains_total"))});
    rows.push_back({"  files", fmt::format("{} written, {} removed",
                                           last.value("written", 0),
                                           last.value("removed", 0))});
    if (!member(last, "errors").empty())
      rows.push_back({"  errors", joined(member(last, "errors"), "; ")});
  }
  rows.push_back({"Domains", domains_text(member(s, "domains"))});
  rows.push_back({"Server-wide relay", relay_text(member(s, "server_relay"))});
  rows.push_back({"Exim", exim_text(member(s, "exim"))});
  const json& failure = member(s, "last_failure");
  if (failure.is_object()) {
    rows.push_back(
        {"Last failure", fmt::format("{}: {}", text(failure, "at"),
                                     joined(member(failure, "errors"), "; "))});
  }
  for (const auto& w : member(s, "warnings"))
    rows.push_back({"Warning", w.is_string() ? w.get<std::string>() : ""});
  if (size_t more = left_out(s, "warnings", "warnings_total"))
    rows.push_back({"Warning", fmt::format("... and {} more", more)});
  return key_values(rows) + errors_text(member(s, "errors"),
                                        left_out(s, "errors", "errors_total"));
}

namespace {

// The route a rejected save left in force, from the daemon's "live".
std::string live_text(const json& live) {
  std::string route = text(live, "route");
  if (route == "relay")
    return "relay " + text(live, "relay") + " (last applied)";
  return route + " (last applied)";
}

}  // namespace

std::string domain_view(const json& d) {
  const json& error = member(d, "last_error");
  const json& dkim = member(d, "dkim");
  std::vector<std::pair<std::string, std::string>> rows = {
      {"Domain", text(d, "domain")},
      {"User", text(d, "user")},
      {"Route", text(d, "route")},
      {"Why", text(d, "reason")},
  };
  if (d.contains("relay"))
    rows.push_back({"Relay", relay_text(member(d, "relay"))});
  if (const json& live = member(d, "live"); live.is_object())
    rows.push_back({"Live now", live_text(live)});
  if (dkim.is_object())
    rows.push_back({"DKIM", "signing, selector " + text(dkim, "selector")});
  rows.push_back({"Last error", error.is_object()
                                    ? text(error, "error") + " (since " +
                                          text(error, "first_seen") + ")"
                                    : "-"});
  for (const auto& w : member(d, "warnings"))
    rows.push_back({"Warning", w.is_string() ? w.get<std::string>() : ""});
  if (d.contains("last_delivery") || d.contains("last_failure")) {
    rows.push_back(
        {"Last delivery", delivery_text(member(d, "last_delivery"))});
    rows.push_back({"Last failure", delivery_text(member(d, "last_failure"))});
  }
  return key_values(rows);
}

std::string domain_list_view(const json& domains) {
  TextTable table({"DOMAIN", "USER", "ROUTE", "RELAY", "LAST ERROR"});
  for (const auto& d : domains) {
    const json& relay = member(d, "relay");
    const json& live = member(d, "live");
    const json& error = member(d, "last_error");
    std::string relay_cell = relay.is_object() ? host_port(relay) : "-";
    if (live.is_object() && live.contains("relay"))
      relay_cell = text(live, "relay") + " (live)";
    table.add({text(d, "domain"), text(d, "user"), text(d, "route"), relay_cell,
               error.is_object() ? text(error, "error") : "-"});
  }
  return table.str();
}

namespace {

std::string tls_phrase(const json& side) {
  std::string tls = text(side, "tls");
  std::string phrase = tls == "implicit"   ? "TLS from the first byte"
                       : tls == "starttls" ? "STARTTLS"
                                           : "plain text";
  if (tls != "none" && !side.value("verify_certificate", true))
    phrase += ", certificate not verified";
  return phrase;
}

// One side of a route change: "relay smtp.example.net:587 (user 'a')",
// "default" or "suspended"; the TLS only when the sides differ in it.
std::string side_text(const json& side, bool with_tls) {
  std::string route = text(side, "route");
  if (route != "relay") return route;
  std::vector<std::string> details;
  std::string user = text(side, "username", "");
  if (!user.empty()) details.push_back("user '" + user + "'");
  if (with_tls && side.contains("tls")) details.push_back(tls_phrase(side));
  std::string out = "relay " + text(side, "relay");
  if (details.empty()) return out;
  return out + " (" + joined(json(details)) + ")";
}

// "~ shop.example  relay a:587 (user 'x') -> relay b:465 (user 'y');
// password changed", "+" for a relay or suspension added, "-" for one
// removed.
std::string change_line(const json& c) {
  const json& live = member(c, "live");
  const json& after = member(c, "after");
  bool tls_differs = text(live, "tls", "") != text(after, "tls", "") ||
                     live.value("verify_certificate", true) !=
                         after.value("verify_certificate", true);
  std::string from = side_text(live, tls_differs);
  std::string to = side_text(after, tls_differs);
  std::string name = text(c, "domain", "");
  if (name.empty()) name = "(server-wide relay)";
  std::vector<std::string> notes;
  if (c.value("password_changed", false)) notes.push_back("password changed");
  if (c.value("dkim_changed", false)) notes.push_back("DKIM files change");
  if (from == to && notes.empty())
    notes.push_back("live files differ from the settings");
  // "default" for a domain, "none" for the server-wide relay: no files.
  auto bare = [](const std::string& s) {
    return s == "default" || s == "none";
  };
  std::string line;
  if (bare(from) && !bare(to)) {
    line = fmt::format("+ {}  {}", name, to);
  } else {
    char sign = bare(to) && !bare(from) ? '-' : '~';
    line = fmt::format("{} {}  {} -> {}", sign, name, from, to);
  }
  for (size_t i = 0; i < notes.size(); ++i)
    line += (i ? ", " : "; ") + notes[i];
  return line + "\n";
}

}  // namespace

std::string plan_view(const json& plan) {
  const json& written = member(plan, "would_write");
  const json& removed = member(plan, "would_remove");
  std::string snippets =
      plan.value("new_generation", false)
          ? "the snippets change: a new generation, Exim would be reloaded"
          : "the snippets stay, no Exim reload";
  // The new snippets wait for the pin's release: say so, and how.
  if (plan.value("pinned", false)) {
    snippets = fmt::format(
        "the snippets would change, but generation {} is pinned by a "
        "rollback: they stay, no Exim reload;\n  {}",
        text(plan, "generation"), kReleasePin);
  }
  std::string out =
      fmt::format("Exim check {}; {}\n", text(plan, "check"), snippets);
  if (written.empty() && removed.empty()) {
    out += "No file would change.\n";
  } else {
    for (const auto& c : member(plan, "changes")) out += change_line(c);
    out += "Files:\n--- live\n+++ after the apply\n";
    for (const auto& p : written) out += "+ " + p.get<std::string>() + "\n";
    for (const auto& p : removed) out += "- " + p.get<std::string>() + "\n";
  }
  for (const auto& h : member(plan, "held_back"))
    out += "held back: " + h.get<std::string>() + "\n";
  for (const auto& p : member(plan, "problems"))
    out += "rejected: " + p.get<std::string>() + "\n";
  for (const auto& e : member(plan, "errors"))
    out += "error: " + e.get<std::string>() + "\n";
  return out;
}

std::string relay_test_view(const json& result) {
  const json& p = member(result, "probe");
  TextTable steps({"step", "ok", "ms", "detail"});
  for (const auto& step : member(p, "steps")) {
    steps.add({text(step, "name"), step.value("ok", false) ? "yes" : "NO",
               std::to_string(step.value("took_ms", 0)),
               text(step, "detail", "")});
  }
  std::vector<std::pair<std::string, std::string>> rows = {
      {"relay", text(p, "relay")}, {"tls", text(p, "tls_mode")}};
  if (const json& tls = member(p, "tls"); tls.is_object()) {
    rows.push_back({"certificate", text(tls, "subject")});
    rows.push_back({"issuer", text(tls, "issuer")});
    rows.push_back({"verified", tls.value("verified", false) ? "yes" : "no"});
  }
  rows.push_back({"auth", text(p, "auth_mechanism")});
  if (const json& m = member(result, "message"); m.is_object()) {
    rows.push_back(
        {"test message", fmt::format("{} {} ({})", text(m, "message_id"),
                                     text(m, "outcome"), text(m, "response"))});
  }
  rows.push_back({"verdict", text(p, "verdict")});
  std::string transcript;
  for (const auto& line : member(p, "transcript")) {
    transcript += "  " + line.get<std::string>() + "\n";
  }
  return steps.str() + "\n" + key_values(rows) + "\ntranscript:\n" + transcript;
}

}  // namespace havenoro::ctl
