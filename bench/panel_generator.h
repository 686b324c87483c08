#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace havenoro::bench {

/// What one generated domain is meant to exercise.
enum class DomainKind {
  kNoRelay,        ///< no smtp_relay, or one that is disabled
  kRelay,          ///< a relay of its own (TEST-NET address, never contacted)
  kSuspended,      ///< the domain itself is suspended
  kUserSuspended,  ///< a domain of a suspended user
  kBroken,         ///< settings the daemon rejects (bad port, half a file …)
};

/// The share of each kind, as a hosting server has them: most domains
/// send directly or through the server-wide relay, a fifth have a relay of
/// their own, a few are suspended or broken.
struct PanelMix {
  double relay = 0.20;
  double suspended = 0.02;
  double broken = 0.01;
  double suspended_users = 0.01;  ///< share of users, not of domains
  bool server_relay = true;
};

/// A panel tree to generate. The same spec always gives the same tree.
struct PanelSpec {
  size_t domains = 1000;
  uint64_t seed = 1;
  PanelMix mix;
};

/// One domain file as generated.
struct GeneratedDomain {
  std::string user;
  std::string domain;
  DomainKind kind = DomainKind::kNoRelay;
  unsigned variant = 0;  ///< picks port, security and credentials
};

/// What generate_panel() wrote.
struct GeneratedPanel {
  std::filesystem::path root;
  std::vector<std::string> users;
  std::vector<GeneratedDomain> domains;
  size_t suspended_users = 0;

  size_t count(DomainKind kind) const;
  /// The relay domains, in generation order.
  std::vector<const GeneratedDomain*> relays() const;
};

/// Writes a panel tree below `root` (which must not exist or be empty) the
/// way Havenoro CP lays it out (shared/panel-contract.md §1): directories
/// 0700, files 0600. Domains are spread over users as hosting accounts
/// are: most users own one or two, a few resellers own hundreds. Throws
/// std::system_error on a write failure.
GeneratedPanel generate_panel(const std::filesystem::path& root,
                              const PanelSpec& spec);

/// The text of a domain's file; `revision` changes what a save changes
/// (the password, and every third revision the port) without changing the
/// domain's kind, so a save is per-domain data only.
std::string domain_file_text(const GeneratedDomain& d, unsigned revision);

/// Saves a domain as the panel does: writes `.<name>.tmp` beside the file
/// and renames it over the old one.
void save_domain(const std::filesystem::path& root, const GeneratedDomain& d,
                 unsigned revision);

/// The path of a domain's settings file below `root`.
std::filesystem::path domain_path(const std::filesystem::path& root,
                                  const GeneratedDomain& d);

/// The name of a DomainKind in reports.
const char* kind_name(DomainKind kind);

}  // namespace havenoro::bench
