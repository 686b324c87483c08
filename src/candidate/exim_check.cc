#include "havenoro_relay/candidate/exim_check.h"

#include <fmt/format.h>

#include <sstream>

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

}  // namespace

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
  std::string input;
  for (const auto& r : relays) {
    std::string lookup = "lsearch{" + r.file.string() + "}}";
    input += "${lookup{route}" + lookup + "\n";
    input += "${base64d:${lookup{username}" + lookup + "}\n";
    input += "${base64d:${lookup{password}" + lookup + "}\n";
  }
  auto argv = base_argv(generation_dir, data_dir);
  argv.push_back("-be");
  auto run = util::run_process(argv, input, timeout_);
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
  auto argv = base_argv(generation_dir, data_dir);
  for (const char* arg : {"-f", "", "-bt", "probe@havenoro-probe.invalid"}) {
    argv.push_back(arg);
  }
  argv[argv.size() - 3] = "postmaster@" + expected.domain;
  auto run = util::run_process(argv, "", timeout_);
  std::string text = run.out + run.err;
  auto fail = [&](const std::string& why) {
    return CheckResult{
        false,
        fmt::format("domain '{}': {}; exim -bt said: {}", expected.domain, why,
                    exim_error_text({0, false, text, ""}))};
  };
  // A relay name that does not resolve right now defers; that is the
  // relay's state, not a fault of the candidate.
  if (text.find("cannot be resolved at this time: lookup of host") !=
      std::string::npos) {
    return {};
  }
  if (expected.router.empty()) {
    if (text.find("router = havenoro_") != std::string::npos) {
      return fail("mail without a relay is routed to a havenoro relay");
    }
    return {};
  }
  auto router = fmt::format("router = {}, transport = {}", expected.router,
                            expected.transport);
  if (text.find(router) == std::string::npos) {
    return fail(fmt::format("expected {}", router));
  }
  auto colon = expected.host_port.rfind(':');
  std::string port = "port=" + expected.host_port.substr(colon + 1);
  if (text.find(port) == std::string::npos) {
    return fail(fmt::format("expected {}", port));
  }
  return {};
}

CheckResult EximChecker::check_syntax(
    const std::filesystem::path& generation_dir) const {
  auto argv = base_argv(generation_dir);
  argv.push_back("-bV");
  auto syntax = util::run_process(argv, "", timeout_);
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
