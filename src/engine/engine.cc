#include "havenoro_relay/engine/engine.h"

#include <fcntl.h>
#include <fmt/chrono.h>
#include <fmt/format.h>

#include <algorithm>
#include <future>
#include <mutex>

#include "havenoro_relay/apply/output_dir.h"
#include "havenoro_relay/render/credential_file.h"
#include "havenoro_relay/util/fd.h"
#include "havenoro_relay/util/group.h"

namespace havenoro::engine {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Key = std::pair<std::string, std::string>;  // user, stem
using ErrorMap =
    std::map<std::string, std::pair<std::string, Clock::time_point>>;

std::string iso_time(Clock::time_point t) {
  return fmt::format("{:%Y-%m-%dT%H:%M:%SZ}", fmt::gmtime(Clock::to_time_t(t)));
}

const char* security_name(panel::Security s) {
  switch (s) {
    case panel::Security::kAuto:
      return "auto";
    case panel::Security::kTls:
      return "tls";
    case panel::Security::kStarttls:
      return "starttls";
    case panel::Security::kNone:
      return "none";
  }
  return "unknown";
}

// A relay as status shows it: everything but the password.
json relay_json(const panel::RelaySettings& r) {
  const char* tls = r.implicit_tls()   ? "implicit"
                    : r.requires_tls() ? "starttls"
                                       : "none";
  return {{"host", r.host},
          {"port", r.port},
          {"security", security_name(r.security)},
          {"tls", tls},
          {"verify_certificate", r.verify_certificate},
          {"username", r.username},
          {"password_set", !r.password.empty()}};
}

// The domain a file in a user's mail directory belongs to: its settings
// (<domain>.json) or its DKIM key (<domain>.dkim.pem).
std::optional<std::string> file_stem(const std::string& name,
                                     bool with_keys = false) {
  if (name.empty() || name.front() == '.') return {};
  for (std::string_view suffix : {".json", ".dkim.pem"}) {
    if (suffix == ".dkim.pem" && !with_keys) break;
    if (name.size() > suffix.size() && name.ends_with(suffix)) {
      return name.substr(0, name.size() - suffix.size());
    }
  }
  return {};
}

bool path_exists(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

std::vector<std::string> list_dir(const fs::path& dir, bool dirs) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    auto name = e.path().filename().string();
    if (!name.empty() && name.front() != '.' && e.is_directory(ec) == dirs) {
      names.push_back(name);
    }
  }
  return names;
}

// The rejected settings and when each was first seen, in the output
// directory (0640 root:exim_group, as the rest). The texts name fields
// and quote refused values other than the username and password, which
// a message never quotes (src/panel), so the file holds no secret.
constexpr const char* kErrorsFile = "errors.json";

ErrorMap load_errors(const config::DaemonConfig& c) {
  ErrorMap errors;
  std::error_code ec;
  if (!fs::exists(c.output_dir, ec)) return errors;  // made by applies only
  try {
    apply::OutputDir out(c.output_dir, util::group_id(c.exim_group));
    auto text = out.read(kErrorsFile);
    if (!text) return errors;
    json doc = json::parse(*text);
    for (const auto& e : doc.at("errors")) {
      errors[e.at("domain").get<std::string>()] = {
          e.at("error").get<std::string>(),
          Clock::from_time_t(e.at("first_seen").get<std::time_t>())};
    }
  } catch (const std::exception&) {
    errors.clear();  // unreadable or edited: the times start again
  }
  return errors;
}

void save_errors(const config::DaemonConfig& c, const ErrorMap& errors) try {
  apply::OutputDir out(c.output_dir, util::group_id(c.exim_group));
  if (errors.empty()) {
    out.remove_all(kErrorsFile);
    return;
  }
  json list = json::array();
  for (const auto& [name, e] : errors) {
    list.push_back({{"domain", name},
                    {"error", e.first},
                    {"first_seen", Clock::to_time_t(e.second)}});
  }
  // A panel path in a read error need not be UTF-8.
  std::string text = json{{"errors", std::move(list)}}.dump(
                         1, ' ', false, json::error_handler_t::replace) +
                     "\n";
  out.commit({out.stage(kErrorsFile, text, 0640)});
} catch (const std::exception&) {
  // The times stay in memory and in status; only a restart would start
  // them again. An output directory that cannot be written fails the
  // applies themselves, which say why.
}

// The rollback's pin in force, as status shows it, or null.
json pinned_json(const apply::Applier& applier) {
  try {
    if (auto generation = applier.pinned())
      return {{"generation", *generation}};
  } catch (const std::exception&) {
    // An output directory that cannot be read (or its group gone) has no
    // pin to show; the next apply says what is wrong with it.
  }
  return nullptr;
}

}  // namespace

// What the applying thread read from disk, to be merged under the lock.
struct Engine::Reread {
  std::map<std::string, std::optional<panel::UserEntry>> users;
  std::map<Key, std::optional<panel::DomainEntry>> files;
  std::optional<panel::Parsed<std::optional<panel::RelaySettings>>> server;
  std::set<std::string> names;
};

std::string ApplyOutcome::result() const {
  if (!report.ok()) return "failed";
  if (!problems.empty() || !report.held_back.empty()) return "rejected";
  if (report.unchanged()) return "unchanged";
  return "applied";
}

Engine::Engine(config::DaemonConfig config)
    : config_(std::move(config)),
      rules_{config_.allow_private_relays},
      applier_(config_),
      errors_(load_errors(config_)),
      deliveries_(config_.exim_main_log) {}

size_t Engine::poll_deliveries() {
  std::unique_lock lock(mutex_);
  return deliveries_.poll();
}

ApplyOutcome Engine::resync(ResyncOptions options) {
  if (options.release_pin) applier_.release_pin();
  if (read_once_) return rescan(options);
  std::map<std::string, panel::UserEntry> users;
  std::map<std::string, model::DomainFiles> domains;
  auto server = panel::visit_panel(
      config_.panel_root, rules_,
      [&](panel::UserEntry&& u) {
        std::string name = u.user;
        users.emplace(std::move(name), std::move(u));
      },
      [&](panel::DomainEntry&& d) {
        std::string stem = d.stem;
        std::string user = d.user;
        domains[stem].emplace(std::move(user), std::move(d));
      });
  std::set<std::string> names;
  for (const auto& [name, files] : domains) names.insert(name);
  {
    std::unique_lock lock(mutex_);
    users_ = std::move(users);
    domains_ = std::move(domains);
    user_domains_.clear();
    for (const auto& [stem, files] : domains_) {
      for (const auto& [user, entry] : files) {
        user_domains_[user].emplace(stem, &entry);
      }
    }
    server_ = std::move(server);
    model_ = model::RelayModel();
    model::evaluate_server(model_, server_);
    for (const auto& [name, files] : domains_) {
      model::evaluate_domain(model_, name, &files, users_);
    }
    clear_pending();
  }
  read_once_ = true;
  for (const auto& [name, e] : errors_) {
    if (!name.empty()) names.insert(name);  // errors that may be gone now
  }
  return apply_scope(names, true, true, options.confirm_removals);
}

// A resync after the first: every file of the tree is looked at (one
// fstatat each), but only those whose stamp changed are read and parsed
// again, and only their domains are evaluated again. The applier is told
// what changed; it compares the rest with the model too unless the live
// files show nothing happened to them behind the daemon's back.
ApplyOutcome Engine::rescan(ResyncOptions options) {
  Reread r = scan_changes();
  std::set<std::string> names;
  {
    std::unique_lock lock(mutex_);
    merge(r);
    clear_pending();
    for (const auto& [name, files] : domains_) names.insert(name);
  }
  std::set<std::string> changed = std::move(r.names);  // removed ones too
  for (const auto& [name, e] : errors_) {
    if (!name.empty()) changed.insert(name);  // may be gone now
  }
  names.insert(changed.begin(), changed.end());
  return apply_scope(names, true, true, options.confirm_removals,
                     std::move(changed));
}

// What changed in the whole panel tree since it was read. Mostly
// fstatat() and readdir(): the users are split between two threads, and
// a third takes the live files' stamps for the apply that follows, so
// that a resync of 10,000 domains uses both cores.
Engine::Reread Engine::scan_changes() {
  panel::check_panel_root(config_.panel_root);
  auto prefetch =
      std::async(std::launch::async, [this] { applier_.prefetch(); });
  fs::path users_dir = config_.panel_root / "data" / "users";
  auto users = list_dir(users_dir, true);
  // Paths from the users' directory, not from /: 2,000 walks fewer.
  util::UniqueFd users_fd(
      ::open(users_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  auto half = [&](size_t first) {
    Reread part;
    for (size_t i = first; i < users.size(); i += 2) {
      rescan_changed(users_fd.get(), users[i], part);
    }
    return part;
  };
  auto odd = std::async(std::launch::async, half, 1);
  Reread r = half(0);
  prefetch.get();
  merge_into(r, odd.get());
  r.server = panel::read_server(config_.panel_root, rules_);
  std::set<std::string> listed(users.begin(), users.end());
  for (const auto& [user, entry] : users_) {
    if (!listed.count(user)) rescan_user(user, r);  // gone
  }
  return r;
}

// Re-reads what changed in one user's directory since it was read.
void Engine::rescan_changed(int users_fd, const std::string& user,
                            Reread& into) {
  auto known = users_.find(user);
  auto stamp = util::stamp_at(users_fd, (user + "/user.json").c_str());
  if (known == users_.end() || known->second.stamp != stamp) {
    rescan_user(user, into);  // a suspension changes all its domains
    return;
  }
  static const std::map<std::string, const panel::DomainEntry*> kNone;
  auto known_files = user_domains_.find(user);
  const auto& read =
      known_files == user_domains_.end() ? kNone : known_files->second;
  auto files = util::list_stamps(users_fd, user + "/mail");
  size_t listed = 0;
  for (const auto& [name, file_stamp] : files) {
    auto stem = file_stem(name);
    if (!stem) continue;
    auto known = read.find(*stem);
    if (known != read.end()) ++listed;
    if (known == read.end() ||
        !same_as_read(*known->second, *stem, file_stamp, files)) {
      reread_file(user, *stem, into);
    }
  }
  if (listed == read.size()) return;
  // Fewer of the files read were listed: find which went away.
  std::set<std::string> present;
  for (const auto& [name, file_stamp] : files) {
    if (auto stem = file_stem(name)) present.insert(std::move(*stem));
  }
  for (const auto& [stem, entry] : read) {
    if (present.count(stem)) continue;
    into.files[{user, stem}] = std::nullopt;
    into.names.insert(stem);
  }
}

bool Engine::same_as_read(const panel::DomainEntry& entry,
                          const std::string& stem, const util::FileStamp& stamp,
                          const std::vector<util::StampedName>& files) {
  if (entry.stamp != stamp) return false;
  const auto& settings = entry.settings.value;
  if (!settings || !settings->dkim_enabled) return true;
  std::string key = stem + ".dkim.pem";
  std::optional<util::FileStamp> key_stamp;
  for (const auto& [name, file_stamp] : files) {  // a handful of files
    if (name == key) key_stamp = file_stamp;
  }
  return key_stamp == entry.key_stamp;
}

void Engine::merge_into(Reread& into, Reread&& from) {
  into.users.merge(from.users);
  into.files.merge(from.files);
  into.names.merge(from.names);
}

void Engine::clear_pending() {
  pending_users_.clear();
  pending_files_.clear();
  pending_domains_.clear();
  pending_server_ = pending_full_ = false;
}

// Takes what was re-read into the in-memory panel and re-evaluates the
// domains it names. Called with the lock held.
void Engine::merge(Reread& r) {
  for (auto& [user, entry] : r.users) {
    if (entry) {
      users_.insert_or_assign(user, std::move(*entry));
    } else {
      users_.erase(user);
    }
  }
  for (auto& [key, entry] : r.files) {
    const auto& [user, stem] = key;
    if (entry) {
      auto at = domains_[stem].insert_or_assign(user, std::move(*entry)).first;
      user_domains_[user].insert_or_assign(stem, &at->second);
    } else {
      domains_[stem].erase(user);
      if (auto u = user_domains_.find(user); u != user_domains_.end()) {
        u->second.erase(stem);
        if (u->second.empty()) user_domains_.erase(u);
      }
      if (domains_[stem].empty()) domains_.erase(stem);
    }
  }
  if (r.server) {
    server_ = std::move(*r.server);
    model::evaluate_server(model_, server_);
  }
  for (const auto& name : r.names) {
    auto it = domains_.find(name);
    model::evaluate_domain(
        model_, name, it == domains_.end() ? nullptr : &it->second, users_);
  }
}

ApplyOutcome Engine::rollback(std::optional<unsigned long> generation) {
  ApplyOutcome outcome;
  outcome.started = Clock::now();
  auto t0 = std::chrono::steady_clock::now();
  outcome.report = applier_.rollback(generation);
  outcome.took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - t0);
  // Refused before it changed anything (no such generation, Exim rejects
  // it): only its client hears. The last apply, which status and STATUS=
  // show, is still what is live.
  if (!outcome.report.pinned) return outcome;
  json pinned = pinned_json(applier_);
  std::unique_lock lock(mutex_);
  pinned_ = std::move(pinned);
  last_apply_ = outcome;
  note_exim(outcome);
  return outcome;
}

void Engine::note_exim(const ApplyOutcome& outcome) {
  // Only an apply that made a generation live talked to Exim.
  if (!outcome.report.new_generation) return;
  last_exim_ = {{"reloaded", outcome.report.reloaded},
                {"message", outcome.report.exim_state},
                {"at", iso_time(outcome.started)}};
}

std::vector<unsigned long> Engine::generations() const {
  return applier_.kept_generations();
}

void Engine::note_path(const fs::path& path) {
  fs::path rel = path.lexically_relative(config_.panel_root);
  std::vector<std::string> parts;
  for (const auto& p : rel) parts.push_back(p.string());
  if (parts.empty() || parts[0] == "..") return;
  if (parts[0] == "conf") {
    pending_server_ = true;
  } else if (parts[0] != "data") {
    return;
  } else if (parts.size() <= 2) {
    pending_full_ = true;  // data/ or data/users/ itself
  } else if (parts[1] != "users") {
    return;
  } else if (parts.size() == 5 && parts[3] == "mail") {
    if (auto stem = file_stem(parts[4], true)) {
      pending_files_.emplace(parts[2], *stem);
    }
  } else if (parts.size() <= 4) {
    pending_users_.insert(parts[2]);  // the user's dir, user.json, mail/
  }
}

void Engine::note_domain(const std::string& domain) {
  if (domain.empty()) {
    pending_server_ = true;
  } else {
    pending_domains_.insert(domain);
  }
}

bool Engine::has_pending() const {
  return pending_full_ || pending_server_ || !pending_users_.empty() ||
         !pending_files_.empty() || !pending_domains_.empty();
}

void Engine::reread_file(const std::string& user, const std::string& stem,
                         Reread& into) {
  fs::path file =
      config_.panel_root / "data" / "users" / user / "mail" / (stem + ".json");
  into.names.insert(stem);
  if (!path_exists(file)) {
    into.files[{user, stem}] = std::nullopt;
    return;
  }
  into.files[{user, stem}] =
      panel::read_domain(config_.panel_root, user, stem, rules_);
  if (!users_.count(user) && !into.users.count(user)) {
    into.users[user] = panel::read_user(config_.panel_root, user);
  }
}

void Engine::rescan_user(const std::string& user, Reread& into) {
  fs::path dir = config_.panel_root / "data" / "users" / user;
  std::set<std::string> gone;
  if (auto it = user_domains_.find(user); it != user_domains_.end()) {
    for (const auto& [stem, entry] : it->second) gone.insert(stem);
  }
  if (!path_exists(dir)) {
    into.users[user] = std::nullopt;
  } else {
    into.users[user] = panel::read_user(config_.panel_root, user);
    for (const auto& name : list_dir(dir / "mail", false)) {
      if (auto stem = file_stem(name)) {
        gone.erase(*stem);
        reread_file(user, *stem, into);
      }
    }
  }
  for (const auto& stem : gone) {
    into.files[{user, stem}] = std::nullopt;
    into.names.insert(stem);
  }
}

// Re-reads the domain where the daemon last saw it; false when it is not
// there: a domain the daemon does not know, or one whose file moved.
bool Engine::locate_domain(const std::string& name, Reread& into) {
  into.names.insert(name);
  auto it = domains_.find(name);
  if (it == domains_.end()) return false;
  bool found = false;
  for (const auto& [user, entry] : it->second) {
    reread_file(user, name, into);
    found |= into.files[{user, name}].has_value();
  }
  return found;
}

// Up to this many names, each user's directory is asked for each name;
// beyond, each user's mail directory is listed once.
constexpr size_t kStatPerName = 4;

// Where a domain lives now may be a user the daemon has not seen own it:
// one pass over the users finds every name of `names`, however many.
void Engine::locate_elsewhere(const std::set<std::string>& names,
                              Reread& into) {
  if (names.empty()) return;
  fs::path users = config_.panel_root / "data" / "users";
  for (const auto& user : list_dir(users, true)) {
    fs::path mail = users / user / "mail";
    if (names.size() <= kStatPerName) {
      for (const auto& name : names) {
        if (path_exists(mail / (name + ".json"))) reread_file(user, name, into);
      }
      continue;
    }
    for (const auto& file : list_dir(mail, false)) {
      auto stem = file_stem(file);
      if (stem && names.count(*stem)) reread_file(user, *stem, into);
    }
  }
}

Engine::Reread Engine::reread_pending() {
  Reread r;
  if (pending_server_) {
    r.server = panel::read_server(config_.panel_root, rules_);
  }
  for (const auto& user : pending_users_) rescan_user(user, r);
  for (const auto& [user, stem] : pending_files_) reread_file(user, stem, r);

  // A name the watcher just found (a save noted and reconciled at once)
  // needs no search. The others are found where they were, and only
  // those that are not are searched for, all in one pass: a bulk edit
  // reconciles hundreds of names on a server of a thousand users.
  std::set<std::string> found;
  for (const auto& [key, entry] : r.files) {
    if (entry) found.insert(key.second);
  }
  std::set<std::string> missing;
  for (const auto& name : pending_domains_) {
    if (!locate_domain(name, r) && !found.count(name)) missing.insert(name);
  }
  locate_elsewhere(missing, r);

  pending_users_.clear();
  pending_files_.clear();
  pending_domains_.clear();
  pending_server_ = false;
  return r;
}

ApplyOutcome Engine::apply_pending() {
  if (pending_full_) return resync();
  // A file missing because the whole tree is (unmounted, moved away) is
  // not a domain deleted: nothing is applied until the tree is back.
  panel::check_panel_root(config_.panel_root);
  bool server = pending_server_;
  if (!server && pending_users_.empty()) {
    // A save of one domain or two: Exim starts on the checks while the
    // files are read and the candidate is made.
    std::set<std::string> names = pending_domains_;
    for (const auto& [user, stem] : pending_files_) names.insert(stem);
    applier_.prepare(names);
  }
  Reread r = reread_pending();
  {
    std::unique_lock lock(mutex_);
    merge(r);
  }
  return apply_scope(r.names, server, false);
}

ApplyOutcome Engine::apply_scope(const std::set<std::string>& names,
                                 bool server, bool full, bool confirm_removals,
                                 std::optional<std::set<std::string>> changed) {
  ApplyOutcome outcome;
  outcome.started = Clock::now();
  outcome.full = full;
  auto t0 = std::chrono::steady_clock::now();
  auto scope =
      full ? apply::ApplyScope::all() : apply::ApplyScope::of(names, server);
  scope.confirm_removals = confirm_removals;
  if (full) scope.changed = std::move(changed);
  outcome.report = applier_.apply(model_, scope);
  outcome.took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - t0);

  if ((full || server) && model_.server_problem) {
    outcome.server_problem = model_.server_problem->text();
    outcome.problems.push_back(outcome.server_problem);
  }
  // Once per apply: asking each name about every path written would make
  // a full apply quadratic in the number of domains.
  std::set<std::string> touched;
  for (const auto* paths : {&outcome.report.written, &outcome.report.removed}) {
    for (const auto& p : *paths) touched.insert(apply::domain_of_path(p));
  }
  std::map<std::string, std::vector<std::string>> failed;
  for (const auto& [path, error] : outcome.report.path_errors) {
    failed[apply::domain_of_path(path)].push_back(error);
  }
  note_kept_live(names, scope.changed);
  for (const auto& name : names) {
    outcome.domains.push_back(
        outcome_of(name, outcome.report, touched, failed));
    if (auto it = model_.rejected.find(name); it != model_.rejected.end()) {
      for (const auto& p : it->second) outcome.problems.push_back(p.text());
    }
  }
  bool errors_changed = false;
  {
    // Read before the lock: readers of the state never wait for the disk.
    json pinned = pinned_json(applier_);
    std::unique_lock lock(mutex_);
    pinned_ = std::move(pinned);
    // A resync that compared only what changed has only those errors to
    // look at again (rescan() adds the names that had one).
    errors_changed = record_errors(
        full && scope.changed ? *scope.changed : names, full || server);
    // The status shows the apply, not its 10,000 domain outcomes: they
    // stay with the caller rather than being copied.
    auto domains = std::move(outcome.domains);
    last_apply_ = outcome;
    outcome.domains = std::move(domains);
    note_exim(outcome);
    refresh_status_cache();
  }
  // Written without the lock, which readers of domain() would wait for:
  // this thread is the only one that changes errors_.
  if (errors_changed) save_errors(config_, errors_);
  return outcome;
}

// A rejected domain keeps what it has live; which that is, is read from
// the live files once, when the domain is rejected (its file changed, or
// the first apply), rather than for every rejected domain at every resync.
void Engine::note_kept_live(
    const std::set<std::string>& names,
    const std::optional<std::set<std::string>>& changed) {
  // Over the rejected domains, a few, not over the names of a full apply.
  std::erase_if(kept_live_, [&](const auto& kept) {
    auto it = model_.rejected.find(kept.first);
    return names.count(kept.first) &&
           (it == model_.rejected.end() || !it->second.front().keep_live);
  });
  std::vector<std::string> look;
  for (const auto& [name, problems] : model_.rejected) {
    if (!problems.front().keep_live || !names.count(name)) continue;
    if (!kept_live_.count(name) || !changed || changed->count(name)) {
      look.push_back(name);
    }
  }
  for (const auto& [name, live] : applier_.live_routes(look)) {
    if (live.route == "relay") {
      kept_live_[name] = fmt::format(
          " (the relay last applied for it, {}, stays live)", live.relay);
    } else if (live.route == "suspended") {
      kept_live_[name] = " (it stays suspended, as last applied)";
    } else {
      kept_live_[name] =
          " (nothing was applied for it before: its mail takes the "
          "server-wide route)";
    }
  }
}

// The one line of a rejected domain: each problem, and what stays live.
std::string Engine::rejection_text(const std::string& name) const {
  auto it = model_.rejected.find(name);
  if (it == model_.rejected.end()) return "";
  std::vector<std::string> texts;
  for (const auto& p : it->second) texts.push_back(p.text());
  std::string text = fmt::format("{}", fmt::join(texts, "; "));
  if (auto kept = kept_live_.find(name); kept != kept_live_.end()) {
    text += kept->second;
  }
  return text;
}

// A failed write of one file (a planted symlink) fails that file's domain
// only: the other domains' files went live, and their reconcile says so.
DomainOutcome Engine::outcome_of(
    const std::string& name, const apply::ApplyReport& report,
    const std::set<std::string>& touched,
    const std::map<std::string, std::vector<std::string>>& failed) const {
  DomainOutcome o{name, "unchanged", "", ""};
  if (auto it = model_.domains.find(name); it != model_.domains.end()) {
    o.route = model::route_name(it->second.route);
  }
  if (auto it = model_.rejected.find(name); it != model_.rejected.end()) {
    o.result = "rejected";
    o.message = rejection_text(name);
    return o;
  }
  if (report.failed_whole()) {
    o.result = "failed";
    o.message = fmt::format("{}", fmt::join(report.errors, "; "));
    return o;
  }
  if (auto it = failed.find(name); it != failed.end()) {
    o.result = "failed";
    o.message = fmt::format("{}", fmt::join(it->second, "; "));
    return o;
  }
  if (report.held_domains.count(name)) {
    o.result = "held_back";
    o.message = report.held_back.front();
    return o;
  }
  if (touched.count(name)) {
    o.result = o.route.empty() ? "removed" : "applied";
  }
  return o;
}

// True when an error came, went or changed its text.
bool Engine::record_errors(const std::set<std::string>& names, bool server) {
  auto now = Clock::now();
  bool changed = false;
  auto note = [&](const std::string& name, std::optional<std::string> text) {
    if (!text) {
      changed |= errors_.erase(name) > 0;
    } else if (auto it = errors_.find(name);
               it == errors_.end() || it->second.first != *text) {
      errors_[name] = {*text, now};
      changed = true;
    }
  };
  for (const auto& name : names) {
    auto it = model_.rejected.find(name);
    if (it == model_.rejected.end()) {
      note(name, std::nullopt);
    } else {
      note(name, rejection_text(name));
    }
  }
  if (server) {
    note("", model_.server_problem
                 ? std::optional(model_.server_problem->text())
                 : std::nullopt);
  }
  return changed;
}

namespace {

// One side of a route change as plan shows it: the relay's address, user
// and TLS, never its password.
json route_side(const std::string& route, const panel::RelaySettings* relay) {
  json side = {{"route", route}};
  if (relay) {
    json r = relay_json(*relay);
    side["relay"] = render::route_of(*relay);
    side["username"] = r["username"];
    side["tls"] = r["tls"];
    side["verify_certificate"] = r["verify_certificate"];
  }
  return side;
}

const panel::RelaySettings* relay_of(const model::RelayModel& m,
                                     const std::string& name) {
  auto it = m.domains.find(name);
  if (it == m.domains.end() || !it->second.relay) return nullptr;
  return &*it->second.relay;
}

// What a domain has live. The route and host:port come from the live
// files; the user and TLS from the settings last applied, when those lead
// to that same host:port (the live file has the user only in base64
// beside the password, which is not read for this). The server-wide
// relay is described by the settings last applied alone.
std::pair<json, const panel::RelaySettings*> live_side(
    const apply::Applier& applier, const model::RelayModel& applied,
    const std::string& name) {
  if (name.empty()) {
    const auto* r = applied.server_relay ? &*applied.server_relay : nullptr;
    return {route_side(r ? "relay" : "none", r), r};
  }
  auto live = applier.live_route(name);
  const auto* known = relay_of(applied, name);
  if (live.route == "relay" && known && render::route_of(*known) == live.relay)
    return {route_side("relay", known), known};
  json side = {{"route", live.route}};
  if (!live.relay.empty()) side["relay"] = live.relay;
  return {side, nullptr};
}

// Per domain whose files would change ("" for the server-wide relay): the
// route live now and after the apply, and whether the password or the
// DKIM files change. A password is compared here, never sent.
json plan_changes(const apply::Applier& applier,
                  const model::RelayModel& applied,
                  const model::RelayModel& wanted,
                  const apply::ApplyReport& report) {
  std::map<std::string, bool> names;  // domain -> its DKIM files change
  for (const auto* paths : {&report.written, &report.removed}) {
    for (const auto& p : *paths) {
      if (p.starts_with("default/")) names.try_emplace("", false);
      std::string d = apply::domain_of_path(p);
      if (!d.empty()) names[d] |= p.starts_with("dkim/");
    }
  }
  json changes = json::array();
  for (const auto& [name, dkim] : names) {
    auto [live, before] = live_side(applier, applied, name);
    const panel::RelaySettings* after = nullptr;
    std::string route = "default";
    if (name.empty()) {
      after = wanted.server_relay ? &*wanted.server_relay : nullptr;
      route = after ? "relay" : "none";
    } else if (auto it = wanted.domains.find(name);
               it != wanted.domains.end()) {
      after = relay_of(wanted, name);
      route = model::route_name(it->second.route);
    }
    changes.push_back({{"domain", name},
                       {"live", live},
                       {"after", route_side(route, after)},
                       {"password_changed",
                        before && after && before->password != after->password},
                       {"dkim_changed", dkim}});
  }
  return changes;
}

}  // namespace

json Engine::plan() {
  auto snapshot = panel::read_panel(config_.panel_root, rules_);
  auto wanted = model::build_relay_model(snapshot);
  auto report = applier_.plan(wanted);
  json problems = json::array();
  for (const auto& p : wanted.problems()) problems.push_back(p.text());
  // model_ is the applying thread's own, and plan runs on that thread.
  return {{"would_write", report.written},
          {"would_remove", report.removed},
          {"changes", plan_changes(applier_, model_, wanted, report)},
          {"new_generation", report.new_generation},
          {"check", report.ok() ? "passed" : "failed"},
          {"errors", report.errors},
          {"held_back", report.held_back},
          {"pinned", report.pinned},
          {"generation", report.generation},
          {"problems", problems}};
}

namespace {

// Status lists are cut to this many entries; their totals are given, and
// domain-list has every domain. At 10,000 domains the whole lists made
// the status document 85 KB, read by every status page.
constexpr size_t kStatusListLimit = 20;

json capped(const std::set<std::string>& names) {
  json list = json::array();
  for (const auto& name : names) {
    if (list.size() == kStatusListLimit) break;
    list.push_back(name);
  }
  return list;
}

json last_apply_json(const ApplyOutcome& a) {
  std::set<std::string> changed;
  for (const auto* paths : {&a.report.written, &a.report.removed}) {
    for (const auto& p : *paths) changed.insert(apply::domain_of_path(p));
  }
  changed.erase("");
  return {{"at", iso_time(a.started)},
          {"took_ms", a.took.count()},
          {"full", a.full},
          {"result", a.result()},
          {"new_generation", a.report.new_generation},
          {"pinned", a.report.pinned},
          {"written", a.report.written.size()},
          {"removed", a.report.removed.size()},
          {"changed_domains", capped(changed)},
          {"changed_domains_total", changed.size()},
          {"errors", a.report.errors},
          {"held_back", a.report.held_back}};
}

// By name, so the server-wide relay's ("") always comes first.
json errors_json(const ErrorMap& errors) {
  json list = json::array();
  for (const auto& [name, e] : errors) {
    if (list.size() == kStatusListLimit) break;
    list.push_back({{"domain", name},
                    {"error", e.first},
                    {"first_seen", iso_time(e.second)}});
  }
  return list;
}

// The first few warnings; the count comes from the model, so the cost
// does not grow with the number of domains.
json warnings_json(const model::RelayModel& model) {
  json list = json::array();
  for (const auto& [name, warnings] : model.warnings) {
    for (const auto& w : warnings) {
      if (list.size() == kStatusListLimit) return list;
      list.push_back(w.text());
    }
  }
  return list;
}

}  // namespace

json Engine::status() const {
  json s = *status_snapshot();
  s["uptime_s"] =
      std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started_)
          .count();
  return s;
}

std::optional<Clock::time_point> Engine::shown_apply() const {
  if (!last_apply_) return std::nullopt;
  return last_apply_->started;
}

std::shared_ptr<const json> Engine::status_snapshot() const {
  std::shared_lock state(mutex_, std::try_to_lock);
  {
    std::lock_guard lock(status_mutex_);
    // While the applying thread changes the state, readers get the
    // document of the apply before: a status read never waits for an
    // apply. Otherwise the document must show the last apply, whatever
    // made it (a rollback does not rebuild the document).
    if (status_cache_ && (!state.owns_lock() || status_of_ == shown_apply()))
      return status_cache_;
  }
  if (!state.owns_lock()) state.lock();
  refresh_status_cache();
  std::lock_guard lock(status_mutex_);
  return status_cache_;
}

// The caller holds mutex_, shared or exclusive.
void Engine::refresh_status_cache() const {
  auto s = std::make_shared<json>(json{
      {"version", HAVENORO_VERSION},
      {"started", iso_time(started_)},
      {"domains",
       {{"relayed", model_.count(model::Route::kRelay)},
        {"default", model_.count(model::Route::kDefault)},
        {"suspended", model_.count(model::Route::kSuspended)},
        {"rejected", model_.rejected.size()}}},
      {"server_relay",
       model_.server_relay ? relay_json(*model_.server_relay) : json(nullptr)},
      {"last_apply", last_apply_ ? last_apply_json(*last_apply_) : json()},
      {"generation", last_apply_ ? last_apply_->report.generation : 0UL},
      {"exim", last_exim_},
      {"errors", errors_json(errors_)},
      {"errors_total", errors_.size()},
      {"warnings", warnings_json(model_)},
      {"warnings_total", model_.warning_count()},
      {"pinned", pinned_}});
  std::lock_guard lock(status_mutex_);
  status_cache_ = std::move(s);
  status_of_ = shown_apply();
}

std::optional<std::string> Engine::server_error() const {
  std::shared_lock lock(mutex_);
  auto it = errors_.find("");
  if (it == errors_.end()) return std::nullopt;
  return it->second.first;
}

// The route a rejected save left in force, as status shows it.
json Engine::live_route(const std::string& name) const {
  auto live = applier_.live_route(name);
  json j = {{"route", live.route}};
  if (!live.relay.empty()) j["relay"] = live.relay;
  return j;
}

json Engine::domain_json(const std::string& name) const {
  json d = {{"domain", name}, {"route", "rejected"}, {"last_error", nullptr}};
  if (auto it = domains_.find(name); it != domains_.end()) {
    std::vector<std::string> users;
    for (const auto& [user, entry] : it->second) users.push_back(user);
    d["user"] = fmt::format("{}", fmt::join(users, ","));
  }
  if (auto it = model_.domains.find(name); it != model_.domains.end()) {
    const auto& r = it->second;
    d["route"] = model::route_name(r.route);
    d["reason"] = r.reason;
    if (r.relay) d["relay"] = relay_json(*r.relay);
    d["dkim"] = !r.dkim_key
                    ? json(nullptr)
                    : json{{"selector", r.dkim_selector}, {"signing", true}};
  }
  if (auto it = model_.rejected.find(name);
      it != model_.rejected.end() && it->second.front().keep_live) {
    d["live"] = live_route(name);
    d["reason"] = d["live"]["route"] == "default"
                      ? "settings rejected; nothing was applied for it before"
                      : "settings rejected; what was last applied stays live";
  }
  if (auto it = errors_.find(name); it != errors_.end()) {
    d["last_error"] = {{"error", it->second.first},
                       {"first_seen", iso_time(it->second.second)}};
  }
  json warnings = json::array();
  if (auto it = model_.warnings.find(name); it != model_.warnings.end()) {
    for (const auto& w : it->second) warnings.push_back(w.text());
  }
  d["warnings"] = warnings;
  auto event = [](const std::optional<status::DeliveryEvent>& e) {
    if (!e) return json(nullptr);
    return json{{"time", e->time},       {"message_id", e->message_id},
                {"outcome", e->outcome}, {"router", e->router},
                {"host", e->host},       {"response", e->response}};
  };
  const auto* seen = deliveries_.find(name);
  d["last_delivery"] = event(seen ? seen->last_delivery : std::nullopt);
  d["last_failure"] = event(seen ? seen->last_failure : std::nullopt);
  return d;
}

json Engine::domain_list() const {
  std::shared_lock lock(mutex_);
  json list = json::array();
  for (const auto& [name, files] : domains_) list.push_back(domain_json(name));
  return list;
}

json Engine::domain(const std::string& name) const {
  std::shared_lock lock(mutex_);
  if (!domains_.count(name)) return nullptr;
  return domain_json(name);
}

}  // namespace havenoro::engine
