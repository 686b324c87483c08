#include "havenoro_relay/candidate/exim_check.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>

#include "havenoro_relay/util/process.h"

namespace havenoro::candidate {
namespace {

// Exim's configuration errors come on stderr after a "LOG: PANIC DIE" line
// and spread over two indented lines; one line reads better in a status.
std::string exim_error_text(const util::ProcessResult& r) {
  if (r.timed_out) return "exim did not finish in time";
  std::istringstream in(r.err.empty() ? r.out : r.err);
  std::string line;
  std::string text;
  while (std::getline(in, line)) {
    auto start = line.find_first_not_of(" \t");
    if (start == std::string::npos || line.starts_with("LOG:")) continue;
    if (!text.empty()) text += " ";
    text += line.substr(start);
  }
  return text.empty() ? fmt::format("exim exited with status {}", r.exit_code)
                      : text;
}

bool lists(const std::string& out, const std::string& name) {
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    if (line == name) return true;
  }
  return false;
}

std::string_view trimmed(std::string_view s) {
  auto start = s.find_first_not_of(" \t");
  if (start == std::string_view::npos) return {};
  return s.substr(start, s.find_last_not_of(" \t\r") - start + 1);
}

int port_of(std::string_view text) {
  int port = 0;
  auto [end, ec] =
      std::from_chars(text.data(), text.data() + text.size(), port);
  return ec == std::errc() && end == text.data() + text.size() ? port : 0;
}

// "  router = R, transport = T"
void read_router(std::string_view line, RouteReport& r) {
  constexpr std::string_view kRouter = "router = ";
  constexpr std::string_view kTransport = ", transport = ";
  auto at = line.find(kTransport);
  r.router = line.substr(kRouter.size(), at - kRouter.size());
  if (at != std::string_view::npos) {
    r.transport = line.substr(at + kTransport.size());
  }
}

// "  host NAME [ADDRESS] MX=n port=N ** unusable **", the name and the
// address padded with blanks.
RoutedHost read_host(std::string_view line) {
  std::istringstream words{std::string(line)};
  std::string word;
  RoutedHost h;
  words >> word >> h.name;
  while (words >> word) {
    if (word.starts_with('[')) {
      h.address = word.substr(1, word.find(']') - 1);
    } else if (word.starts_with("port=")) {
      h.port = port_of(std::string_view(word).substr(5));
    }
  }
  return h;
}

// "A cannot be resolved at this time: lookup of host "H" failed in R
// router", or "A cannot be resolved at this time: host lookup for H did
// not complete (DNS timeout?)"
void read_unresolved(std::string_view line, RouteReport& r) {
  constexpr std::string_view kDeferred = "cannot be resolved at this time: ";
  constexpr std::string_view kLookup = "lookup of host \"";
  constexpr std::string_view kFailed = "\" failed in ";
  constexpr std::string_view kTimedOut = "host lookup for ";
  auto at = line.find(kDeferred);
  if (at == std::string_view::npos) {
    r.undeliverable |= line.find(" is undeliverable") != std::string_view::npos;
    return;
  }
  r.deferred = true;
  auto rest = line.substr(at + kDeferred.size());
  if (rest.starts_with(kTimedOut)) {
    rest.remove_prefix(kTimedOut.size());
    r.timed_out_host = rest.substr(0, rest.find(' '));
    return;
  }
  if (!rest.starts_with(kLookup)) return;
  rest.remove_prefix(kLookup.size());
  auto quote = rest.find(kFailed);
  if (quote == std::string_view::npos) return;
  r.unresolved_host = rest.substr(0, quote);
  rest = rest.substr(quote + kFailed.size());
  r.unresolved_router = rest.substr(0, rest.find(' '));
}

bool same_name(std::string_view a, std::string_view b) {
  if (a.ends_with('.')) a.remove_suffix(1);
  if (b.ends_with('.')) b.remove_suffix(1);
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) ==
           std::tolower(static_cast<unsigned char>(y));
  });
}

// An IP address in one spelling ("::1" for "0:0::1"), or nothing for a
// host name.
std::optional<std::string> ip_text(const std::string& text) {
  unsigned char bin[sizeof(in6_addr)];
  char buf[INET6_ADDRSTRLEN];
  for (int family : {AF_INET, AF_INET6}) {
    if (inet_pton(family, text.c_str(), bin) == 1 &&
        inet_ntop(family, bin, buf, sizeof buf)) {
      return std::string(buf);
    }
  }
  return {};
}

// What the resolver says about a host name: its canonical name and its
// addresses, both as Exim prints them.
struct Resolved {
  std::string canonical;
  std::set<std::string> addresses;
};

Resolved resolve(const std::string& host) {
  addrinfo hints{};
  hints.ai_flags = AI_CANONNAME;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  Resolved found;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &list) != 0) return found;
  if (list->ai_canonname) found.canonical = list->ai_canonname;
  for (const addrinfo* a = list; a; a = a->ai_next) {
    char buf[INET6_ADDRSTRLEN];
    const void* addr =
        a->ai_family == AF_INET
            ? static_cast<const void*>(
                  &reinterpret_cast<const sockaddr_in*>(a->ai_addr)->sin_addr)
            : &reinterpret_cast<const sockaddr_in6*>(a->ai_addr)->sin6_addr;
    if (inet_ntop(a->ai_family, addr, buf, sizeof buf)) {
      found.addresses.insert(buf);
    }
  }
  ::freeaddrinfo(list);
  return found;
}

// Whether every host Exim chose is `want`. Exim replaces a name by the
// one the resolver returns (a CNAME's target, a qualified name), so a
// name that differs is asked about once more.
bool is_host(const std::string& want, const std::vector<RoutedHost>& hosts) {
  if (auto ip = ip_text(want)) {
    return std::all_of(hosts.begin(), hosts.end(),
                       [&](const auto& h) { return ip_text(h.address) == ip; });
  }
  if (std::all_of(hosts.begin(), hosts.end(),
                  [&](const auto& h) { return same_name(h.name, want); })) {
    return true;
  }
  auto found = resolve(want);
  return std::all_of(hosts.begin(), hosts.end(), [&](const auto& h) {
    return (!found.canonical.empty() && same_name(h.name, found.canonical)) ||
           found.addresses.count(ip_text(h.address).value_or("")) > 0;
  });
}

// "host:port" or "[v6]:port", as in a credential file.
struct Endpoint {
  std::string host;
  int port = 0;
};

Endpoint endpoint_of(const std::string& host_port) {
  auto colon = host_port.rfind(':');
  if (colon == std::string::npos) return {host_port, 0};
  Endpoint e{host_port.substr(0, colon),
             port_of(std::string_view(host_port).substr(colon + 1))};
  if (e.host.size() > 2 && e.host.front() == '[' && e.host.back() == ']') {
    e.host = e.host.substr(1, e.host.size() - 2);
  }
  return e;
}

}  // namespace

RouteReport parse_route_report(const std::string& text) {
  RouteReport r;
  std::istringstream in(text);
  for (std::string text_line; std::getline(in, text_line);) {
    auto line = trimmed(text_line);
    if (line.starts_with("router = ")) {
      read_router(line, r);
    } else if (line.starts_with("host ")) {
      r.hosts.push_back(read_host(line));
    } else {
      read_unresolved(line, r);
    }
  }
  return r;
}

DeferredRoute parse_deferred_route(const std::string& debug_text) {
  constexpr std::string_view kDeferred = " router: defer for ";
  constexpr std::string_view kTransport = "set transport ";
  constexpr std::string_view kHosts = "expanded list of hosts = '";
  DeferredRoute current;
  DeferredRoute deferred;
  std::istringstream in(debug_text);
  for (std::string text_line; std::getline(in, text_line);) {
    auto line = trimmed(text_line);
    if (line.starts_with("--------> ")) {
      current = {};  // the next router
    } else if (line.starts_with(kTransport)) {
      current.transport = line.substr(kTransport.size());
    } else if (line.starts_with(kHosts)) {
      auto list = line.substr(kHosts.size());
      list = list.substr(0, list.find('\''));
      if (list.starts_with("<;")) list.remove_prefix(2);
      current.hosts = list;
    } else if (auto at = line.find(kDeferred);
               at != std::string_view::npos && at > 0 && line.find(' ') == at) {
      deferred = current;
      deferred.router = line.substr(0, at);
    }
  }
  return deferred;
}

EximChecker::EximChecker(std::filesystem::path exim_binary,
                         std::filesystem::path exim_config)
    : exim_binary_(std::move(exim_binary)),
      exim_config_(std::move(exim_config)) {}

std::vector<std::string> EximChecker::base_argv(
    const std::filesystem::path& generation_dir,
    const std::filesystem::path& data_dir) const {
  std::vector<std::string> argv = {
      exim_binary_.string(), "-C", exim_config_.string(),
      "-DHAVENORO_GENERATION=" + generation_dir.string()};
  if (!data_dir.empty()) {
    argv.push_back("-DHAVENORO_DATA=" + data_dir.string());
  }
  return argv;
}

CheckResult EximChecker::check_lookups(
    const std::filesystem::path& generation_dir,
    const std::filesystem::path& data_dir,
    const std::vector<ExpectedRelay>& relays) const {
  if (relays.empty()) return {};
  return finish_lookups(start_lookups(generation_dir, data_dir), relays);
}

StartedCheck EximChecker::start_lookups(
    const std::filesystem::path& generation_dir,
    const std::filesystem::path& data_dir) const {
  auto argv = base_argv(generation_dir, data_dir);
  argv.push_back("-be");
  return {generation_dir, data_dir, "", util::start_process(argv, nice_)};
}

CheckResult EximChecker::finish_lookups(
    StartedCheck check, const std::vector<ExpectedRelay>& relays) const {
  if (relays.empty()) return {};
  std::string input;
  for (const auto& r : relays) {
    std::string lookup = "lsearch{" + r.file.string() + "}}";
    input += "${lookup{route}" + lookup + "\n";
    input += "${base64d:${lookup{username}" + lookup + "}\n";
    input += "${base64d:${lookup{password}" + lookup + "}\n";
  }
  auto run = check.exim.finish(input, timeout_);
  if (run.exit_code != 0) return {false, exim_error_text(run)};

  // Each result is one line after the "> " prompt; the values hold no
  // line breaks (the parser refuses them).
  std::vector<std::string> results;
  std::istringstream out(run.out);
  std::string line;
  while (std::getline(out, line)) {
    if (line.starts_with("> ")) results.push_back(line.substr(2));
  }
  for (size_t i = 0; i < relays.size(); ++i) {
    const auto& r = relays[i];
    std::string who =
        r.owner.empty() ? "the server-wide relay" : "domain '" + r.owner + "'";
    const char* fields[] = {"route", "username", "password"};
    const std::string* wanted[] = {&r.route, &r.username, &r.password};
    for (size_t k = 0; k < 3; ++k) {
      size_t at = i * 3 + k;
      if (at >= results.size() || results[at] != *wanted[k]) {
        // Never quote either value: one of them may be the password.
        return {false, fmt::format("{}: exim reads back a different {} "
                                   "than the panel stored",
                                   who, fields[k])};
      }
    }
  }
  return {};
}

CheckResult EximChecker::check_route(
    const std::filesystem::path& generation_dir,
    const std::filesystem::path& data_dir,
    const ExpectedRoute& expected) const {
  return finish_route(start_route(generation_dir, data_dir, expected.domain),
                      expected);
}

StartedCheck EximChecker::start_route(
    const std::filesystem::path& generation_dir,
    const std::filesystem::path& data_dir, const std::string& domain) const {
  auto argv = base_argv(generation_dir, data_dir);
  argv.insert(argv.end(), {"-f", "postmaster@" + domain, "-bt"});
  return {generation_dir, data_dir, domain, util::start_process(argv, nice_)};
}

namespace {

constexpr const char* kProbeRecipient = "probe@havenoro-probe.invalid\n";

// The lines of `exim -bt` among its route debugging, each once (the
// debugging repeats the host lines): what a message about it quotes.
std::string route_lines(const std::string& text) {
  std::set<std::string_view> seen;
  std::string shown;
  std::istringstream in(text);
  for (std::string text_line; std::getline(in, text_line);) {
    auto line = trimmed(text_line);
    bool route = line.starts_with("router = ") || line.starts_with("host ") ||
                 line.find(" cannot be resolved ") != std::string_view::npos;
    if (!route || !seen.insert(line).second) continue;
    shown.append(text_line).append("\n");
  }
  return shown;
}

}  // namespace

// The probe once more, with Exim's route debugging: a deferred address's
// answer may name no router (a DNS timeout), and never the transport or
// the port; the debugging names them. One more process, for a deferred
// probe only.
std::string EximChecker::debug_route(const StartedCheck& check) const {
  auto argv = base_argv(check.generation_dir, check.data_dir);
  argv.insert(argv.end(),
              {"-d-all+route", "-f", "postmaster@" + check.domain, "-bt"});
  auto run = util::start_process(argv, nice_).finish(kProbeRecipient, timeout_);
  return run.out + run.err;
}

// The address comes on standard input (Exim echoes it after a "> "
// prompt), so that the process could start before the candidate was
// ready.
CheckResult EximChecker::finish_route(StartedCheck check,
                                      const ExpectedRoute& expected) const {
  auto run = check.exim.finish(kProbeRecipient, timeout_);
  std::string text = run.out + run.err;
  auto fail = [&](const std::string& why) {
    return CheckResult{
        false,
        fmt::format("domain '{}': {}; exim -bt said: {}", expected.domain, why,
                    exim_error_text({0, false, text, ""}))};
  };
  auto report = parse_route_report(text);
  if (!report.answered()) return fail("no verdict on the address");
  DeferredRoute deferred;
  if (report.deferred) {
    // The second run is judged instead: the resolver may answer now.
    auto again = debug_route(check);
    report = parse_route_report(again);
    text = route_lines(again);
    if (!report.answered()) {
      return fail("no verdict on the address when asked again");
    }
    if (report.deferred) {
      deferred = parse_deferred_route(again);
      if (deferred.router.empty()) {
        return fail("deferred, and Exim's route debugging names no router");
      }
    }
  }
  bool ours = report.router.starts_with("havenoro_") ||
              deferred.router.starts_with("havenoro_");
  if (expected.router.empty()) {
    if (ours) return fail("mail without a relay is routed to a havenoro relay");
    return {};
  }
  auto want = endpoint_of(expected.host_port);
  auto wanted =
      fmt::format("router = {}, transport = {}, host {} port={}",
                  expected.router, expected.transport, want.host, want.port);
  if (report.deferred) {
    // A relay name that does not resolve, or not in time, is the relay's
    // state, not a fault of the candidate, if it is that relay's route.
    // Any other deferral (the relay is this host, an expansion failed)
    // is a fault.
    if (!report.lookup_failed()) return fail("expected " + wanted);
    auto routed = endpoint_of(deferred.hosts);
    if (deferred.router != expected.router ||
        deferred.transport != expected.transport ||
        deferred.hosts.find(';') != std::string::npos ||
        !same_name(routed.host, want.host) || routed.port != want.port) {
      return fail(fmt::format(
          "expected {}; Exim's route debugging shows "
          "router {}, transport {}, hosts '{}'",
          wanted, deferred.router, deferred.transport, deferred.hosts));
    }
    return {};
  }
  if (report.router != expected.router ||
      report.transport != expected.transport || report.hosts.empty()) {
    return fail("expected " + wanted);
  }
  // Exactly: a substring match would take port=2525 for port=25.
  for (const auto& h : report.hosts) {
    if (h.port != want.port) {
      return fail(
          fmt::format("expected port={} for host {}", want.port, want.host));
    }
  }
  if (!is_host(want.host, report.hosts)) {
    return fail(fmt::format("expected host {} port={}", want.host, want.port));
  }
  return {};
}

CheckResult EximChecker::check_syntax(
    const std::filesystem::path& generation_dir) const {
  auto argv = base_argv(generation_dir);
  argv.push_back("-bV");
  auto syntax = util::start_process(argv, nice_).finish("", timeout_);
  // -bV may warn on stderr and still succeed: only the status counts.
  if (syntax.exit_code != 0) return {false, exim_error_text(syntax)};

  argv.back() = "-bP";
  for (const char* list :
       {"router_list", "transport_list", "authenticator_list"}) {
    argv.push_back(list);
  }
  auto listed = util::run_process(argv, "", timeout_);
  if (listed.exit_code != 0) return {false, exim_error_text(listed)};
  for (const char* name :
       {"havenoro_relay", "havenoro_default", "havenoro_relay_smtp",
        "havenoro_relay_smtps", "havenoro_plain", "havenoro_login"}) {
    if (!lists(listed.out, name)) {
      return {false, fmt::format("'{}' does not define '{}': its "
                                 "configuration does not include the "
                                 "havenoro snippets (docs/exim-integration.md)",
                                 exim_config_.string(), name)};
    }
  }
  return {};
}

}  // namespace havenoro::candidate
