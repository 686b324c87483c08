#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace havenoro::candidate {

/// The verdict of one check: ok, or what Exim said.
struct CheckResult {
  bool ok = true;
  std::string message;
};

/// Checks a candidate generation with the real Exim before it goes live.
/// Exim is pointed at the server's own main configuration, with the
/// HAVENORO_GENERATION macro naming the candidate's directory, so every
/// include resolves exactly as it will once the candidate is live.
class EximChecker {
 public:
  EximChecker(std::filesystem::path exim_binary,
              std::filesystem::path exim_config);

  /// `exim -bV`: syntax, unknown options (with their line numbers) and
  /// structure, then `-bP` to prove that the main configuration really
  /// includes the havenoro routers, transports and authenticators.
  CheckResult check_syntax(const std::filesystem::path& generation_dir) const;

 private:
  std::vector<std::string> base_argv(
      const std::filesystem::path& generation_dir) const;

  std::filesystem::path exim_binary_;
  std::filesystem::path exim_config_;
  std::chrono::milliseconds timeout_{20000};
};

}  // namespace havenoro::candidate
