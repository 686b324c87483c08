#include "havenoro_relay/candidate/exim_check.h"

#include <fmt/format.h>

#include <sstream>

#include "havenoro_relay/util/process.h"

namespace havenoro::candidate {
namespace {

// Exim's configuration errors come on stderr after a "LOG: PANIC DIE" line
// and spread over two indented lines; one line reads better in a status.
std::string exim_error_text(const util::ProcessResult& r) {
  if (r.timed_out)
    return "exim did not finish in time";
  std::istringstream in(r.err.empty() ? r.out : r.err);
  std::string line;
  std::string text;
  while (std::getline(in, line)) {
    auto start = line.find_first_not_of(" \t");
    if (start == std::string::npos || line.starts_with("LOG:"))
      continue;
    if (!text.empty())
      text += " ";
    text += line.substr(start);
  }
  return text.empty() ? fmt::format("exim exited with status {}", r.exit_code)
                      : text;
}

bool lists(const std::string& out, const std::string& name) {
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    if (line == name)
      return true;
  }
  return false;
}

}  // namespace

EximChecker::EximChecker(std::filesystem::path exim_binary,
                         std::filesystem::path exim_config)
    : exim_binary_(std::move(exim_binary)),
      exim_config_(std::move(exim_config)) {}

std::vector<std::string> EximChecker::base_argv(
    const std::filesystem::path& generation_dir) const {
  return {exim_binary_.string(), "-C", exim_config_.string(),
          "-DHAVENORO_GENERATION=" + generation_dir.string()};
}

CheckResult EximChecker::check_syntax(
    const std::filesystem::path& generation_dir) const {
  auto argv = base_argv(generation_dir);
  argv.push_back("-bV");
  auto syntax = util::run_process(argv, "", timeout_);
  // -bV may warn on stderr and still succeed: only the status counts.
  if (syntax.exit_code != 0)
    return {false, exim_error_text(syntax)};

  argv.back() = "-bP";
  for (const char* list :
       {"router_list", "transport_list", "authenticator_list"}) {
    argv.push_back(list);
  }
  auto listed = util::run_process(argv, "", timeout_);
  if (listed.exit_code != 0)
    return {false, exim_error_text(listed)};
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
