#include "havenoro_relay/panel/panel_reader.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "havenoro_relay/util/fd.h"

namespace havenoro::panel {
namespace {

namespace fs = std::filesystem;

// A settings file is a few hundred bytes; a DKIM key a few kilobytes.
constexpr off_t kMaxFileBytes = 1 << 20;

// One panel file's text, or why it is not a setting.
struct FileRead {
  std::optional<std::string> text;
  std::string why;
  std::optional<util::FileStamp> stamp;  ///< of the file opened
};

// The panel writes regular files. A symlink (which could point at a
// root-only key that would then be copied where Exim's group reads it), a
// FIFO (whose open would block the applying thread) or a huge file is
// refused without being followed or read.
FileRead read_file(const fs::path& file) {
  util::UniqueFd fd(::open(
      file.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
  if (!fd.valid()) {
    if (errno == ELOOP) {
      return {{}, "is a symlink; panel files must be regular files", {}};
    }
    if (errno == ENOENT) return {{}, "is missing", {}};
    return {{}, fmt::format("cannot be read ({})", std::strerror(errno)), {}};
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return {{}, "cannot be read", {}};
  auto stamp = util::stamp_of(st);
  if (!S_ISREG(st.st_mode)) return {{}, "is not a regular file", stamp};
  if (st.st_size > kMaxFileBytes) {
    return {{},
            fmt::format("is {} bytes; a panel file is {} at most", st.st_size,
                        kMaxFileBytes),
            stamp};
  }
  std::string text;
  char buf[8192];
  for (ssize_t n; (n = ::read(fd.get(), buf, sizeof buf)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return {{}, "cannot be read", stamp};
    text.append(buf, n);
    if (static_cast<off_t>(text.size()) > kMaxFileBytes) {
      return {{}, "grew past the size a panel file can be", stamp};
    }
  }
  return {std::move(text), "", stamp};
}

template <class T>
Parsed<T> unreadable(const fs::path& file, const FileRead& r) {
  return Parsed<T>::failure(file.filename().string(), r.why);
}

bool is_setting_name(const std::string& name) {
  return !name.empty() && name.front() != '.';
}

// Lists the entries of a directory that are settings, sorted so that
// every run reports problems in the same order.
std::vector<std::string> list_names(const fs::path& dir, bool want_dirs) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    if (!is_setting_name(name)) continue;
    if (entry.is_directory(ec) == want_dirs) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

fs::path users_dir(const fs::path& root) {
  return root / "data" / "users";
}

}  // namespace

UserEntry read_user(const fs::path& root, const std::string& user) {
  fs::path file = users_dir(root) / user / "user.json";
  auto r = read_file(file);
  if (!r.text) return {user, unreadable<UserSettings>(file, r), r.stamp};
  return {user, parse_user_settings(*r.text, user), r.stamp};
}

DomainEntry read_domain(const fs::path& root, const std::string& user,
                        const std::string& stem, const RelayRules& rules) {
  fs::path file = users_dir(root) / user / "mail" / (stem + ".json");
  auto r = read_file(file);
  if (!r.text) {
    return {user, stem, unreadable<DomainSettings>(file, r), r.stamp, {}};
  }
  DomainEntry entry{
      user, stem, parse_domain_settings(*r.text, stem, rules), r.stamp, {}};
  auto& settings = entry.settings;
  if (settings.value && settings.value->dkim_enabled) {
    fs::path key_file = file.parent_path() / (stem + ".dkim.pem");
    auto key = read_file(key_file);
    entry.key_stamp = key.stamp;
    if (auto e = accept_dkim_key(*settings.value, key.text, key_file)) {
      settings.value.reset();
      settings.error = e;
    }
  }
  return entry;
}

std::optional<std::string> read_key(const KeyFile& key) {
  auto r = read_file(key.path);
  if (!r.text || std::hash<std::string>{}(*r.text) != key.hash) return {};
  return std::move(r.text);
}

Parsed<std::optional<RelaySettings>> read_server(const fs::path& root,
                                                 const RelayRules& rules) {
  fs::path file = root / "conf" / "mail.json";
  std::error_code ec;
  if (!fs::exists(file, ec)) {
    Parsed<std::optional<RelaySettings>> none;
    none.value.emplace();
    return none;
  }
  auto r = read_file(file);
  if (!r.text) return unreadable<std::optional<RelaySettings>>(file, r);
  return parse_server_settings(*r.text, rules);
}

std::vector<DomainEntry> find_domain(const fs::path& root,
                                     const std::string& name,
                                     const RelayRules& rules) {
  std::vector<DomainEntry> found;
  std::error_code ec;
  for (const auto& user : list_names(users_dir(root), true)) {
    if (fs::exists(users_dir(root) / user / "mail" / (name + ".json"), ec)) {
      found.push_back(read_domain(root, user, name, rules));
    }
  }
  return found;
}

void check_panel_root(const fs::path& root) {
  std::error_code ec;
  if (!fs::is_directory(users_dir(root), ec)) {
    throw PanelError(
        fmt::format("panel tree '{}' has no readable "
                    "data/users directory",
                    root.string()));
  }
}

Parsed<std::optional<RelaySettings>> visit_panel(
    const fs::path& root, const RelayRules& rules,
    const std::function<void(UserEntry&&)>& on_user,
    const std::function<void(DomainEntry&&)>& on_domain) {
  check_panel_root(root);
  auto server = read_server(root, rules);
  for (const auto& user : list_names(users_dir(root), true)) {
    on_user(read_user(root, user));
    fs::path mail = users_dir(root) / user / "mail";
    for (const auto& name : list_names(mail, false)) {
      // <domain>.dkim.pem files are read with their domain's file.
      if (name.size() <= 5 || !name.ends_with(".json")) continue;
      std::string stem = name.substr(0, name.size() - 5);
      on_domain(read_domain(root, user, stem, rules));
    }
  }
  return server;
}

PanelSnapshot read_panel(const fs::path& root, const RelayRules& rules) {
  PanelSnapshot snap;
  snap.server = visit_panel(
      root, rules, [&](UserEntry&& u) { snap.users.push_back(std::move(u)); },
      [&](DomainEntry&& d) { snap.domains.push_back(std::move(d)); });
  return snap;
}

}  // namespace havenoro::panel
