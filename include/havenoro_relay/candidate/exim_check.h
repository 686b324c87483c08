#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "havenoro_relay/util/process.h"

namespace havenoro::candidate {

/// The verdict of one check: ok, or what Exim said.
struct CheckResult {
  bool ok = true;
  std::string message;
};

/// One credential file that Exim must read back exactly as the panel
/// stored it.
struct ExpectedRelay {
  std::string owner;  ///< domain name, or "" for the server-wide relay
  std::filesystem::path file;
  std::string route;
  std::string username;
  std::string password;
};

/// Where mail from a probe sender of `domain` must be routed. An empty
/// `router` means "none of havenoro's routers".
struct ExpectedRoute {
  std::string domain;
  std::string router;
  std::string transport;
  std::string host_port;  ///< "host:port" as in the credential file
};

/// One host line of `exim -bt`: `  host NAME [ADDRESS] port=N`.
struct RoutedHost {
  std::string name;  ///< as Exim resolved it: a CNAME's target, say
  std::string address;
  int port = 0;  ///< 0: Exim printed no port
};

/// What `exim -bt` printed for one address.
struct RouteReport {
  std::string router;  ///< empty when the address was not routed
  std::string transport;
  std::vector<RoutedHost> hosts;
  /// From "cannot be resolved at this time: lookup of host "H" failed in
  /// R router" (a relay whose name does not resolve right now): H and R.
  std::string unresolved_host;
  std::string unresolved_router;
  /// From "cannot be resolved at this time: host lookup for H did not
  /// complete (DNS timeout?)": H. Exim names no router for a timeout.
  std::string timed_out_host;
  /// "A cannot be resolved at this time: ...", for any reason.
  bool deferred = false;
  /// "A is undeliverable: ...".
  bool undeliverable = false;

  /// A lookup of the relay's name failed or timed out: the relay's state.
  bool lookup_failed() const {
    return !unresolved_router.empty() || !timed_out_host.empty();
  }
  /// Exim gave a verdict on the address: routed, deferred or failed.
  bool answered() const { return !router.empty() || deferred || undeliverable; }
};

/// Reads the output of `exim -bt` for one address. Exim pads host names
/// and addresses with blanks to line them up; any number is accepted.
RouteReport parse_route_report(const std::string& text);

/// What Exim's route debugging (`-d-all+route`) says of the router that
/// deferred an address: "R router: defer for A", after that router's
/// "expanded list of hosts = 'L' options = ..." and "set transport T".
/// Empty fields when it says nothing of the kind.
struct DeferredRoute {
  std::string router;
  std::string transport;
  std::string hosts;  ///< the host list as routed, "<;" taken off
};
DeferredRoute parse_deferred_route(const std::string& debug_text);

/// An Exim process of a check, started before its input is known: Exim
/// loads and reads its whole configuration, most of a check's time, while
/// the daemon still prepares the candidate. The data files are read only
/// once the input comes. Dropping it kills the process.
struct StartedCheck {
  std::filesystem::path generation_dir;
  std::filesystem::path data_dir;
  std::string domain;  ///< the sender's domain, for a route check
  util::Child exim;
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

  /// `exim -be` in one process for all relays: Exim's own lookups of the
  /// candidate files (below `data_dir`) return exactly what the panel
  /// stored. The expansions travel on standard input, never in argv.
  CheckResult check_lookups(const std::filesystem::path& generation_dir,
                            const std::filesystem::path& data_dir,
                            const std::vector<ExpectedRelay>& relays) const;

  /// `exim -bt` with a sender of the domain: the router, transport, host
  /// and port Exim chooses for a remote recipient. Every host line must
  /// have exactly the expected port, and the expected host: the same IP
  /// address, the same name in any case, or (when Exim followed a CNAME
  /// or qualified the name) the name or an address the resolver gives
  /// for the expected host. An address Exim defers is probed once more
  /// with route debugging, since Exim's answer may name no router (a DNS
  /// timeout): that run is judged as any other if it is not deferred
  /// again; else only a relay name that does not resolve or times out
  /// passes, when the debugging shows the expected router, transport and
  /// host list.
  CheckResult check_route(const std::filesystem::path& generation_dir,
                          const std::filesystem::path& data_dir,
                          const ExpectedRoute& expected) const;

  /// check_lookups() in two halves: the process now, the relays later.
  StartedCheck start_lookups(const std::filesystem::path& generation_dir,
                             const std::filesystem::path& data_dir) const;
  CheckResult finish_lookups(StartedCheck check,
                             const std::vector<ExpectedRelay>& relays) const;

  /// check_route() in two halves: the process with a sender of `domain`
  /// now (it reads the address on standard input), the verdict later for
  /// an ExpectedRoute of that domain.
  StartedCheck start_route(const std::filesystem::path& generation_dir,
                           const std::filesystem::path& data_dir,
                           const std::string& domain) const;
  CheckResult finish_route(StartedCheck check,
                           const ExpectedRoute& expected) const;

  /// The nice value added to every Exim process of a check.
  void set_nice(int nice) { nice_ = nice; }

 private:
  std::vector<std::string> base_argv(
      const std::filesystem::path& generation_dir,
      const std::filesystem::path& data_dir = {}) const;
  std::string debug_route(const StartedCheck& check) const;

  std::filesystem::path exim_binary_;
  std::filesystem::path exim_config_;
  // One -be process checks every changed credential file: at 100,000
  // domains that takes seconds, not milliseconds.
  std::chrono::milliseconds timeout_{120000};
  int nice_ = 0;
};

}  // namespace havenoro::candidate
