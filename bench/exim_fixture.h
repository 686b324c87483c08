#pragma once

#include <filesystem>
#include <string>

#include "child_process.h"

namespace havenoro::bench {

/// The paths and port of the bench's private Exim.
struct EximSetup {
  std::filesystem::path exim = "/usr/sbin/exim4";
  std::filesystem::path example_config;  ///< exim-templates/exim4.conf.example
  std::filesystem::path dir;             ///< spool, logs and configurations
};

/// A private Exim: its own spool and logs, a daemon on a free loopback
/// port, and configurations derived from exim4.conf.example for any
/// output directory. Exim runs as Debian-exim with a -C file that is not
/// Debian's, so every directory here is traversable by that user.
class EximFixture {
 public:
  /// Creates the directories; starts nothing.
  explicit EximFixture(EximSetup setup);
  ~EximFixture();

  /// Writes the example configuration for `output_dir` to `file`, with
  /// the bench's main options (spool, logs, port, a fixed primary_hostname
  /// so no process looks the host's name up in DNS) and direct delivery
  /// replaced by a route to a closed loopback port (no DNS in `-bt`).
  void write_config(const std::filesystem::path& file,
                    const std::filesystem::path& output_dir) const;

  /// Starts the daemon on config() and waits for its 220 banner.
  /// Throws std::runtime_error when it does not answer within 20 s.
  void start(const std::filesystem::path& config);
  void stop();

  /// How many times the daemon logged that it started: one at start,
  /// one more for each reload (SIGHUP re-executes it).
  size_t starts() const;

  int port() const { return port_; }
  std::filesystem::path pid_file() const { return spool_ / "exim.pid"; }
  std::filesystem::path main_log() const { return log_ / "mainlog"; }
  const std::filesystem::path& exim() const { return setup_.exim; }
  std::string probe_address() const;

 private:
  EximSetup setup_;
  std::filesystem::path spool_;
  std::filesystem::path log_;
  int port_ = 0;
  ChildProcess daemon_;
};

/// A TCP port on 127.0.0.1 that nothing listens on now.
int free_port();

/// Whether 127.0.0.1:port answers with a 220 banner within `limit`.
bool smtp_banner(int port, std::chrono::milliseconds limit);

/// Reads a whole file; throws std::runtime_error when it cannot.
std::string read_text(const std::filesystem::path& file);
/// Writes a whole file with `mode`; throws std::runtime_error.
void write_text(const std::filesystem::path& file, const std::string& text,
                unsigned mode = 0644);

}  // namespace havenoro::bench
