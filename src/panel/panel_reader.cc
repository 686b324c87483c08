#include "havenoro_relay/panel/panel_reader.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <sstream>

namespace havenoro::panel {
namespace {

namespace fs = std::filesystem;

std::optional<std::string> read_file(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return {};
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) return {};
  return text.str();
}

template <class T>
Parsed<T> unreadable(const fs::path& file) {
  return Parsed<T>::failure("file",
                            fmt::format("cannot read '{}'", file.string()));
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
  auto text = read_file(file);
  if (!text) return {user, unreadable<UserSettings>(file)};
  return {user, parse_user_settings(*text, user)};
}

DomainEntry read_domain(const fs::path& root, const std::string& user,
                        const std::string& stem, const RelayRules& rules) {
  fs::path file = users_dir(root) / user / "mail" / (stem + ".json");
  auto text = read_file(file);
  if (!text) return {user, stem, unreadable<DomainSettings>(file)};
  DomainEntry entry{user, stem, parse_domain_settings(*text, stem, rules)};
  auto& settings = entry.settings;
  if (settings.value && settings.value->dkim_enabled) {
    fs::path key = file.parent_path() / (stem + ".dkim.pem");
    if (auto e = accept_dkim_key(*settings.value, read_file(key))) {
      settings.value.reset();
      settings.error = e;
    }
  }
  return entry;
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
  auto text = read_file(file);
  if (!text) return unreadable<std::optional<RelaySettings>>(file);
  return parse_server_settings(*text, rules);
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

PanelSnapshot read_panel(const fs::path& root, const RelayRules& rules) {
  std::error_code ec;
  if (!fs::is_directory(users_dir(root), ec)) {
    throw PanelError(
        fmt::format("panel tree '{}' has no readable "
                    "data/users directory",
                    root.string()));
  }
  PanelSnapshot snap;
  snap.server = read_server(root, rules);
  for (const auto& user : list_names(users_dir(root), true)) {
    snap.users.push_back(read_user(root, user));
    fs::path mail = users_dir(root) / user / "mail";
    for (const auto& name : list_names(mail, false)) {
      // <domain>.dkim.pem files are read with their domain's file.
      if (name.size() <= 5 || !name.ends_with(".json")) continue;
      std::string stem = name.substr(0, name.size() - 5);
      snap.domains.push_back(read_domain(root, user, stem, rules));
    }
  }
  return snap;
}

}  // namespace havenoro::panel
