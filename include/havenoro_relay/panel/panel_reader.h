#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "havenoro_relay/panel/domain_settings.h"
#include "havenoro_relay/util/file_stamp.h"

namespace havenoro::panel {

/// One domain file found in the panel tree, parsed or not.
struct DomainEntry {
  std::string user;
  std::string stem;  ///< the file name without `.json`
  Parsed<DomainSettings> settings;
  /// The file as read, and its DKIM key when DKIM is on: a rescan reads
  /// again only what no longer has these stamps.
  std::optional<util::FileStamp> stamp;
  std::optional<util::FileStamp> key_stamp;
};

/// One user directory found in the panel tree.
struct UserEntry {
  std::string user;
  Parsed<UserSettings> settings;
  std::optional<util::FileStamp> stamp;  ///< user.json as read
};

/// Everything the panel stores that matters to relaying, read at once.
struct PanelSnapshot {
  std::vector<UserEntry> users;
  std::vector<DomainEntry> domains;
  Parsed<std::optional<RelaySettings>> server;  ///< conf/mail.json
};

/// The panel tree itself cannot be read (not there, not a directory); no
/// setting in it can be trusted to be complete.
class PanelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Reads the whole tree below `root` as panel-contract.md §1 lays it out.
/// Files whose names start with a dot (the panel's temporaries) are not
/// settings. Throws PanelError when `root/data/users` cannot be listed.
PanelSnapshot read_panel(const std::filesystem::path& root,
                         const RelayRules& rules);

/// Reads the tree as read_panel() does, handing over each entry as soon
/// as it is read rather than collecting them, so that the caller files
/// them where they stay without a second copy of the whole tree. Returns
/// the server-wide relay.
Parsed<std::optional<RelaySettings>> visit_panel(
    const std::filesystem::path& root, const RelayRules& rules,
    const std::function<void(UserEntry&&)>& on_user,
    const std::function<void(DomainEntry&&)>& on_domain);

/// Throws PanelError unless `root/data/users` is a directory: a tree
/// without it (not mounted, a wrong path) says nothing about any domain.
void check_panel_root(const std::filesystem::path& root);

/// Reads one user's `user.json`.
UserEntry read_user(const std::filesystem::path& root, const std::string& user);

/// Reads one domain file, `root/data/users/<user>/mail/<stem>.json`.
DomainEntry read_domain(const std::filesystem::path& root,
                        const std::string& user, const std::string& stem,
                        const RelayRules& rules);

/// Finds a domain's file wherever it is, one stat per user: every user
/// whose `mail/<name>.json` exists, read.
std::vector<DomainEntry> find_domain(const std::filesystem::path& root,
                                     const std::string& name,
                                     const RelayRules& rules);

/// The text of a DKIM key file, with the same care as any panel file;
/// nothing when it cannot be read or is no longer the text that was
/// checked (the panel replaced it since: its event follows).
std::optional<std::string> read_key(const KeyFile& key);

/// Reads `root/conf/mail.json`; a missing file means no server-wide relay.
Parsed<std::optional<RelaySettings>> read_server(
    const std::filesystem::path& root, const RelayRules& rules);

}  // namespace havenoro::panel
