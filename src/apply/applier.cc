#include "havenoro_relay/apply/applier.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <functional>
#include <future>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "havenoro_relay/apply/exim_reload.h"
#include "havenoro_relay/apply/held_mail.h"
#include "havenoro_relay/apply/live_files.h"
#include "havenoro_relay/apply/output_dir.h"
#include "havenoro_relay/candidate/exim_check.h"
#include "havenoro_relay/render/credential_file.h"
#include "havenoro_relay/render/dkim_file.h"
#include "havenoro_relay/render/snippets.h"
#include "havenoro_relay/util/group.h"
#include "havenoro_relay/util/process.h"

namespace havenoro::apply {

std::string domain_of_path(const std::string& path) {
  for (std::string_view prefix : {"domains/", "suspended/", "dkim/"}) {
    if (path.starts_with(prefix)) {
      std::string rest = path.substr(prefix.size());
      return rest.substr(0, rest.find('/'));
    }
  }
  return "";
}

namespace {

namespace fs = std::filesystem;

constexpr mode_t kFileMode = 0640;
constexpr const char* kDefaultFile = "default/smtp_relay.conf";

std::string domain_dir(const std::string& name) {
  return "domains/" + name;
}
std::string credential_file(const std::string& name) {
  return domain_dir(name) + "/smtp_relay.conf";
}
std::string suspended_marker(const std::string& name) {
  return "suspended/" + name;
}
std::string dkim_conf(const std::string& name) {
  return "dkim/" + name + "/dkim.conf";
}
std::string dkim_key(const std::string& name) {
  return "dkim/" + name + "/private.pem";
}

// Exim finds these per-domain directories with dsearch: a directory is
// added and removed whole, never seen half-filled.
bool in_domain_dir(const std::string& path) {
  return path.starts_with("domains/") || path.starts_with("dkim/");
}

// The names below the lookup directories, listed once per full apply: at
// 10,000 domains one listing each is cheaper than asking the disk about
// every path the model does not want.
struct Listing {
  bool complete = false;  ///< listed; otherwise every path is asked for
  std::vector<std::string> domains, suspended, dkim;  ///< sorted

  static Listing of(const OutputDir& out) {
    return {true, out.list("domains"), out.list("suspended"), out.list("dkim")};
  }

  // Whether the domain directory or marker `target` is there; nothing
  // when the listing cannot tell.
  std::optional<bool> has(const std::string& target) const {
    if (!complete) return {};
    for (auto [prefix, names] :
         {std::pair{"domains/", &domains}, std::pair{"suspended/", &suspended},
          std::pair{"dkim/", &dkim}}) {
      std::string_view p(prefix);
      if (!target.starts_with(p)) continue;
      auto name = target.substr(p.size());
      if (name.find('/') != std::string::npos) return {};
      return std::binary_search(names->begin(), names->end(), name);
    }
    return {};
  }
};

// A narrowed resync compares only what changed in the model.
std::set<std::string> names_in_scope(const model::RelayModel& m,
                                     const Listing& live,
                                     const ApplyScope& scope, bool narrow) {
  if (!scope.everything) return scope.domains;
  if (narrow) return *scope.changed;
  std::set<std::string> names;
  for (const auto& [name, d] : m.domains) names.insert(name);
  for (const auto& [name, p] : m.rejected) names.insert(name);
  for (const auto* list : {&live.domains, &live.suspended, &live.dkim}) {
    names.insert(list->begin(), list->end());
  }
  return names;
}

// What must change on disk for the wanted state. A credential file lives
// in its domain's directory: that directory is what Exim's dsearch finds,
// so it is what gets added and removed.
struct Changes {
  // One file to write: rendered text, or a DKIM key copied from the panel
  // when it is staged (never held: at 10,000 domains they are megabytes).
  struct Write {
    std::string path;
    std::string text;
    const panel::KeyFile* key = nullptr;
    bool skipped = false;  ///< the key could not be read back as checked
  };
  std::vector<Write> writes;
  std::vector<std::string> removals;
  size_t relay_removals = 0;

  bool empty() const { return writes.empty() && removals.empty(); }
};

// Compares what the model wants with what is live, one domain at a time,
// and notes the difference.
class Differ {
 public:
  Differ(const OutputDir& out, const Listing& live, LiveFiles& seen,
         Changes& changes)
      : out_(out), live_(live), seen_(seen), c_(changes) {}

  void domain(const model::RelayModel& m, const std::string& name) {
    auto rejected = m.rejected.find(name);
    if (rejected != m.rejected.end() && rejected->second.front().keep_live) {
      return;  // bad settings say nothing new: what is live stays
    }
    auto it = m.domains.find(name);
    const model::DomainRoute* d = it == m.domains.end() ? nullptr : &it->second;
    if (d && d->route == model::Route::kRelay) {
      want(domain_dir(name), credential_file(name),
           render::render_credential_file(name, *d->relay));
    } else {
      want_none(domain_dir(name), true);
    }
    if (d && d->route == model::Route::kSuspended) {
      want(suspended_marker(name), suspended_marker(name), "");
    } else {
      want_none(suspended_marker(name));
    }
    if (d && d->dkim_key) {
      std::string dir = "dkim/" + name;
      want(dir, dkim_conf(name),
           render::render_dkim_conf(name, d->dkim_selector));
      want_key(dir, dkim_key(name), *d->dkim_key);
    } else {
      want_none("dkim/" + name);
    }
  }

  void server(const model::RelayModel& m) {
    if (m.server_problem) return;
    if (m.server_relay) {
      want(kDefaultFile, kDefaultFile,
           render::render_credential_file("the server", *m.server_relay));
    } else {
      want_none(kDefaultFile);
    }
  }

 private:
  // `target` (a domain's directory, or the file itself) must hold `path`
  // with `content`.
  void want(const std::string& target, const std::string& path,
            std::string content) {
    bool same = false;
    try {
      same = there(target) && seen_.same(out_, path, content, kFileMode);
    } catch (const std::system_error&) {
      // A path that cannot be opened (a planted symlink) is written,
      // which reports it; the others go on.
    }
    if (!same) c_.writes.push_back({path, std::move(content)});
  }

  // The key is read only when its live copy was not recorded as written
  // from the same text (a first apply, or the file changed).
  void want_key(const std::string& dir, const std::string& path,
                const panel::KeyFile& key) {
    bool same = false;
    try {
      if (there(dir) && !(same = seen_.same_hash(out_, path, key.hash))) {
        auto text = panel::read_key(key);
        same = text && seen_.same(out_, path, *text, kFileMode);
      }
    } catch (const std::system_error&) {
    }
    if (!same) c_.writes.push_back({path, "", &key});
  }

  void want_none(const std::string& target, bool relay = false) {
    if (!there(target)) return;
    c_.removals.push_back(target);
    c_.relay_removals += relay;
  }

  bool there(const std::string& target) const {
    auto listed = live_.has(target);
    return listed ? *listed : out_.exists(target);
  }

  const OutputDir& out_;
  const Listing& live_;
  LiveFiles& seen_;
  Changes& c_;
};

unsigned long parse_generation(const std::string& name) {
  if (name.empty() || name.size() > 18 ||
      !std::all_of(name.begin(), name.end(), ::isdigit)) {
    return 0;
  }
  return std::stoul(name);
}

std::string gen_dir(unsigned long g) {
  return fmt::format("generations/{}", g);
}

unsigned long live_generation(const OutputDir& out) {
  auto link = out.read_link("current");
  if (!link || !link->starts_with("generations/")) return 0;
  return parse_generation(link->substr(12));
}

std::vector<unsigned long> generations(const OutputDir& out) {
  std::vector<unsigned long> gens;
  for (const auto& name : out.list("generations")) {
    if (auto g = parse_generation(name)) gens.push_back(g);
  }
  std::sort(gens.begin(), gens.end());
  return gens;
}

bool snippets_live(const OutputDir& out, unsigned long gen,
                   const render::SnippetSet& snippets) {
  if (gen == 0 || !out.exists(gen_dir(gen) + "/generation.conf")) {
    return false;
  }
  return std::all_of(snippets.begin(), snippets.end(), [&](const auto& s) {
    return out.matches(fs::path(gen_dir(gen)) / s.first, s.second, kFileMode);
  });
}

// A generation is filled under a dot-name and renamed into place whole, so
// that a generation directory never lacks a file, even after a crash.
void write_generation(OutputDir& out, const config::DaemonConfig& c,
                      unsigned long gen, const render::SnippetSet& s) {
  std::string dir = gen_dir(gen);
  std::string temp = fmt::format("generations/.new-{}", gen);
  out.remove_all(dir);  // a leftover of an interrupted apply
  out.remove_all(temp);
  out.make_dir(temp);
  std::vector<StagedFile> staged;
  for (const auto& [name, text] : s) {
    staged.push_back(out.stage(fs::path(temp) / name, text, kFileMode));
  }
  staged.push_back(
      out.stage(fs::path(temp) / "generation.conf",
                render::render_generation_conf(
                    c.templates_dir, c.output_dir / dir, c.output_dir, gen),
                kFileMode));
  out.commit(staged);
  out.rename(temp, dir);
  // The rename must be on disk before `current` names the generation: a
  // crash in between must not leave a link to a directory that is gone.
  out.make_durable({"generations"});
}

// Named apart from the scratch names OutputDir::remove_leftovers takes:
// this tree is kept.
constexpr const char* kCheckDir = ".candidate";

// What gains or loses an entry when a domain gains or loses its files;
// the files themselves are in LiveFiles.
constexpr const char* kLookupDirs[] = {"domains", "suspended", "dkim",
                                       "default"};

std::string in_check(const std::string& path) {
  return std::string(kCheckDir) + "/" + path;
}

// "domains/d/smtp_relay.conf" -> "domains/d"; plain strings, since a
// full apply handles thousands of these and an fs::path allocates for
// each of its components.
std::string parent_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash);
}

// The scratch paths of the files to put in place, and the new domain
// directories among them (moved whole).
struct Staged {
  std::set<std::string> new_dirs;
  std::vector<std::string> paths;  ///< to sync; {""}: the file system
};

Staged staged_of(const OutputDir& out, const Changes& changes) {
  Staged s;
  // A bulk apply syncs the file system: no list of thousands of paths.
  bool each = changes.writes.size() <= OutputDir::kMaxSyncEach;
  for (const auto& [path, text, key, skipped] : changes.writes) {
    if (skipped) continue;
    std::string dir = parent_of(path);
    if (each) s.paths.push_back(in_check(path));
    if (in_domain_dir(path) && !out.exists(dir) &&
        s.new_dirs.insert(dir).second && each) {
      s.paths.push_back(in_check(dir));
    }
  }
  if (!each) s.paths = {""};
  return s;
}

// Moves the checked candidate's files from the scratch tree into place
// once `durable` reports them on disk: each file written once, synced,
// then renamed. A new domain's directory moves whole, so that Exim's
// dsearch never finds it without its file. Each file that cannot be put
// in place (a planted symlink) is reported on its own; the other
// domains' files still go live.
void promote(OutputDir& out, const Changes& changes, const Staged& staged,
             std::future<void>& durable, LiveFiles& seen, ApplyReport& report) {
  durable.get();
  const auto& new_dirs = staged.new_dirs;
  std::set<std::string> parents;
  for (const auto& [path, text, key, skipped] : changes.writes) {
    if (skipped) continue;
    std::string dir = parent_of(path);
    try {
      if (!new_dirs.count(dir)) {
        out.rename(in_check(path), path);
        parents.insert(dir);
      } else if (out.exists(in_check(dir))) {  // the first of its files
        out.rename(in_check(dir), dir);
        parents.insert(parent_of(dir));
      }
      if (key) {
        seen.wrote_hash(out, path, key->hash);
      } else {
        seen.wrote(out, path, text);
      }
    } catch (const std::system_error& e) {
      report.path_failed(path,
                         fmt::format("{} not written: {}", path, e.what()));
    }
  }
  out.make_durable({parents.begin(), parents.end()});
}

// Removes what the model no longer wants, then syncs the directories that
// lost an entry: a removal that a crash undid would bring back a relay
// the panel no longer has, until the next resync.
void remove_data(OutputDir& out, const std::vector<std::string>& paths,
                 LiveFiles& seen, std::vector<std::string>& errors) {
  std::set<std::string> parents;
  try {
    for (const auto& path : paths) {
      for (const auto& file : {path, path + "/smtp_relay.conf",
                               path + "/dkim.conf", path + "/private.pem"}) {
        seen.forget(file);
      }
      parents.insert(parent_of(path));
      if (!in_domain_dir(path)) {
        out.remove_all(path);
        continue;
      }
      // Out of dsearch's sight in one rename, then gone.
      fs::path p = path;
      std::string old =
          (p.parent_path() / (".old-" + p.filename().string())).string();
      out.remove_all(old);
      out.rename(path, old);
      out.remove_all(old);
    }
  } catch (const std::system_error& e) {
    errors.push_back(fmt::format("removal stopped: {}", e.what()));
  }
  parents.erase("");  // "" would sync the whole file system
  if (parents.empty()) return;
  try {
    out.make_durable({parents.begin(), parents.end()});
  } catch (const std::system_error& e) {
    errors.push_back(fmt::format("removal not synced: {}", e.what()));
  }
}

// At most this many -bt probes per apply, one Exim process each (about
// 7 ms of a core): a bulk change of thousands of domains is sampled.
constexpr size_t kMaxRouteChecks = 16;

// The domains whose files an apply changes, from their paths.
std::set<std::string> changed_names(const Changes& c) {
  std::set<std::string> names;
  for (const auto& w : c.writes) names.insert(domain_of_path(w.path));
  for (const auto& path : c.removals) names.insert(domain_of_path(path));
  names.erase("");
  return names;
}

candidate::ExpectedRoute expected_route(const model::RelayModel& m,
                                        const std::string& name) {
  candidate::ExpectedRoute e{name, "", "", ""};
  auto it = m.domains.find(name);
  bool hosted = it != m.domains.end();
  const panel::RelaySettings* relay = nullptr;
  if (hosted && it->second.route == model::Route::kRelay) {
    e.router = "havenoro_relay";
    relay = &*it->second.relay;
  } else if ((!hosted || it->second.route == model::Route::kDefault) &&
             m.server_relay) {
    e.router = "havenoro_default";
    relay = &*m.server_relay;
  }
  if (relay) {
    e.transport =
        relay->implicit_tls() ? "havenoro_relay_smtps" : "havenoro_relay_smtp";
    e.host_port = render::route_of(*relay);
  }
  return e;
}

// Exim's dsearch fails (and defers the mail) on a directory that does not
// exist, rather than finding nothing: both lookup directories must exist
// before any generation that reads them is live, even with no domain.
void ensure_lookup_dirs(OutputDir& out, const fs::path& base) {
  for (const char* dir : {"domains", "suspended", "dkim"}) {
    if (!out.exists(base / dir)) out.make_dir(base / dir);
  }
}

// Empties the scratch tree but keeps its directories for the next apply:
// on ext4, making a directory searches the inode table past the inodes
// freed lately, and a save that made and removed six each time spent
// more on them than on its own file.
void clear_check(OutputDir& out) {
  for (const auto& top : out.list(kCheckDir)) {
    fs::path dir = fs::path(kCheckDir) / top;
    if (std::find(std::begin(kLookupDirs), std::end(kLookupDirs), top) ==
        std::end(kLookupDirs)) {
      out.remove_all(dir);
      continue;
    }
    for (const auto& name : out.list(dir)) out.remove_all(dir / name);
  }
}

// The candidate's data, in a scratch tree Exim is pointed at: the changed
// files, and copies of the live files the probes of the changed domains
// also read (the server-wide relay, their markers, their unchanged files).
void stage_candidate(OutputDir& out, Changes& changes,
                     const std::set<std::string>& names, ApplyReport& report) {
  clear_check(out);
  ensure_lookup_dirs(out, kCheckDir);
  std::set<std::string> touched(changes.removals.begin(),
                                changes.removals.end());
  for (auto& w : changes.writes) {
    touched.insert(w.path);
    if (!w.key) {
      out.write_new(in_check(w.path), w.text, kFileMode);
    } else if (auto text = panel::read_key(*w.key)) {
      out.write_new(in_check(w.path), *text, kFileMode);
    } else {
      w.skipped = true;
      report.path_failed(
          w.path,
          fmt::format(
              "{} not written: the panel's key changed while it was applied; "
              "the next apply takes the new one",
              w.path));
    }
  }
  std::vector<std::string> copies = {kDefaultFile};
  for (const auto& name : names) {
    if (touched.count(domain_dir(name))) continue;  // removed whole
    for (const auto& path : {credential_file(name), suspended_marker(name)}) {
      copies.push_back(path);
    }
  }
  for (const auto& path : copies) {
    if (touched.count(path)) continue;
    try {
      if (auto text = out.read(path)) {
        out.write_new(in_check(path), *text, kFileMode);
      }
    } catch (const std::system_error&) {
      // Unreadable live files (a planted symlink) are not copied; the
      // apply reports them where it writes them.
    }
  }
}

std::vector<candidate::ExpectedRelay> expected_relays(
    const model::RelayModel& m, const Changes& changes, const fs::path& data) {
  std::vector<candidate::ExpectedRelay> relays;
  for (const auto& [path, text, key, skipped] : changes.writes) {
    const panel::RelaySettings* r = nullptr;
    std::string owner;
    if (path == kDefaultFile) {
      r = &*m.server_relay;
    } else if (path.starts_with("domains/")) {
      owner = domain_of_path(path);
      r = &*m.domains.at(owner).relay;
    }
    if (r) {
      relays.push_back(
          {owner, data / path, render::route_of(*r), r->username, r->password});
    }
  }
  return relays;
}

// The -bt probes of an apply: every changed domain of a small apply; of a
// bulk change, the first domain of each kind of route (router and
// transport) and then others, up to kMaxRouteChecks. The -be check reads
// back every changed credential file whatever the size of the change.
std::vector<candidate::ExpectedRoute> route_probes(
    const model::RelayModel& m, const std::set<std::string>& names) {
  std::vector<candidate::ExpectedRoute> probes;
  std::set<std::string> kinds;
  std::vector<std::string> rest;
  for (const auto& name : names) {
    auto e = expected_route(m, name);
    bool new_kind = kinds.insert(e.router + "/" + e.transport).second;
    if (new_kind && probes.size() < kMaxRouteChecks) {
      probes.push_back(std::move(e));
    } else if (rest.size() < kMaxRouteChecks) {
      rest.push_back(name);
    }
  }
  for (const auto& name : rest) {
    if (probes.size() >= kMaxRouteChecks) break;
    probes.push_back(expected_route(m, name));
  }
  return probes;
}

// The value of one "key: value" line of a credential file, or "".
std::string_view file_value(std::string_view text, std::string_view key) {
  for (size_t at = 0; at < text.size();) {
    size_t end = text.find('\n', at);
    if (end == std::string_view::npos) end = text.size();
    auto line = text.substr(at, end - at);
    if (line.size() > key.size() && line.starts_with(key) &&
        line[key.size()] == ':') {
      return line.substr(key.size() + 1);
    }
    at = end + 1;
  }
  return {};
}

// The domains of a data-only apply whose routing cannot change: the only
// change is their credential file, rewritten with the route and transport
// Exim already reads from the live one (a new password, username or TLS
// setting). The router reads nothing else, so a -bt probe would only
// repeat what was checked when that route went live; the -be check still
// reads the new file back.
std::set<std::string> same_route(const OutputDir& out, const Changes& changes) {
  std::map<std::string, size_t> paths;  // per domain
  for (const auto& w : changes.writes) ++paths[domain_of_path(w.path)];
  for (const auto& r : changes.removals) ++paths[domain_of_path(r)];
  std::set<std::string> same;
  for (const auto& w : changes.writes) {
    auto name = domain_of_path(w.path);
    if (w.path != credential_file(name) || paths[name] != 1) continue;
    std::optional<std::string> live;
    try {
      live = out.read(w.path);
    } catch (const std::system_error&) {
      // A planted symlink: the write fails this domain later, and says so.
    }
    if (!live) continue;
    bool routed_alike = true;
    for (std::string_view key : {"route", "transport"}) {
      auto now = file_value(w.text, key);
      routed_alike =
          routed_alike && !now.empty() && now == file_value(*live, key);
    }
    if (routed_alike) same.insert(name);
  }
  return same;
}

// How much lower the checks' Exim processes run than the rest of the
// server: a check is the daemon's own background work, and on a busy
// server the mail Exim delivers and the panel's status requests come
// first. When the cores are free it changes nothing.
constexpr int kCheckNice = 10;

candidate::EximChecker make_checker(const config::DaemonConfig& c) {
  candidate::EximChecker checker(c.exim_binary, c.exim_config);
  checker.set_nice(kCheckNice);
  return checker;
}

// Runs the checks a few at a time, one Exim process each, and returns the
// first failure in the order given (or success).
candidate::CheckResult run_checks(
    std::vector<std::function<candidate::CheckResult()>> checks) {
  std::vector<candidate::CheckResult> results(checks.size());
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i; (i = next++) < checks.size();) {
      try {
        results[i] = checks[i]();
      } catch (const std::exception& e) {  // Exim could not be started
        results[i] = {false, e.what()};
      }
    }
  };
  unsigned width = std::clamp(std::thread::hardware_concurrency(), 2u, 4u);
  std::vector<std::thread> threads;
  for (unsigned t = 1; t < width && t < checks.size(); ++t) {
    threads.emplace_back(worker);
  }
  worker();
  for (auto& t : threads) t.join();
  for (auto& r : results) {
    if (!r.ok) return r;
  }
  return {};
}

using Started = std::shared_ptr<candidate::StartedCheck>;

// The lookup check prepare() started for this generation and data, taken
// out of `ready` (a check serves once), or none.
Started take_ready(std::vector<candidate::StartedCheck>& ready,
                   const fs::path& generation, const fs::path& data) {
  for (auto it = ready.begin(); it != ready.end(); ++it) {
    if (it->generation_dir == generation && it->data_dir == data &&
        it->domain.empty() && it->exim.running()) {
      auto taken = std::make_shared<candidate::StartedCheck>(std::move(*it));
      ready.erase(it);
      return taken;
    }
  }
  return nullptr;
}

// Exim's own reading of the changed data in the candidate tree, before any
// of it goes live: the lookups return what the panel stored, and the
// changed domains route where the model says (field cases F01, F15).
// Checks that Applier::prepare() started are used where they fit: "" in
// `ready` is the lookup check.
candidate::CheckResult check_data(const OutputDir& out,
                                  const config::DaemonConfig& c,
                                  const fs::path& generation,
                                  const model::RelayModel& m,
                                  const Changes& changes,
                                  const std::set<std::string>& probed,
                                  std::vector<candidate::StartedCheck>& ready) {
  fs::path data = out.root() / kCheckDir;
  auto checker = make_checker(c);
  auto relays = expected_relays(m, changes, data);
  std::vector<std::function<candidate::CheckResult()>> checks;
  auto lookups = take_ready(ready, generation, data);
  checks.push_back([&, lookups] {
    if (!lookups) return checker.check_lookups(generation, data, relays);
    return checker.finish_lookups(std::move(*lookups), relays);
  });
  auto probes = route_probes(m, probed);
  bool server_changed =
      std::any_of(changes.writes.begin(), changes.writes.end(),
                  [](const auto& w) { return w.path == kDefaultFile; }) ||
      std::count(changes.removals.begin(), changes.removals.end(),
                 kDefaultFile) > 0;
  if (server_changed) {
    // A sender domain that no panel can host stands for system mail.
    probes.push_back(expected_route(m, "havenoro-probe.invalid"));
  }
  for (const auto& probe : probes) {
    checks.push_back(
        [&] { return checker.check_route(generation, data, probe); });
  }
  return run_checks(std::move(checks));
}

// The sender domains whose route an apply changed (a relay written or
// removed, a suspension made or lifted), and whether the server-wide
// relay, which any sender may take, changed.
std::pair<std::set<std::string>, bool> changed_senders(const Changes& changes) {
  std::set<std::string> senders;
  bool everything = false;
  auto note = [&](const std::string& path) {
    if (path == kDefaultFile) everything = true;
    if (path.starts_with("domains/") || path.starts_with("suspended/")) {
      senders.insert(domain_of_path(path));
    }
  };
  for (const auto& write : changes.writes) note(write.path);
  for (const auto& path : changes.removals) note(path);
  senders.erase("");
  return {std::move(senders), everything};
}

EximDaemon exim_daemon(const config::DaemonConfig& c) {
  return {
      c.exim_pid_file,
      c.exim_main_log,
      c.exim_probe_address,
      std::chrono::duration_cast<std::chrono::milliseconds>(c.reload_timeout),
      c.exim_reload_command,
      c.exim_restart_command,
      c.exim_binary,
      c.exim_config};
}

// Makes `target` live and reloads Exim. If Exim does not come back, the
// previous generation goes live again and Exim is restarted on it (with
// the default restart when none is configured): a server is never left
// without its mail system for a snippet change.
void go_live(OutputDir& out, const config::DaemonConfig& c,
             unsigned long target, unsigned long previous,
             ApplyReport& report) {
  out.replace_link("current", gen_dir(target));
  report.generation = target;
  auto daemon = exim_daemon(c);
  auto reload = reload_exim(daemon);
  report.reloaded = reload.signalled && reload.ok;
  report.exim_state = reload.message;
  if (reload.log_unread) report.exim_log_unread = c.exim_main_log.string();
  if (reload.ok) return;

  report.errors.push_back("exim did not come back after the reload: " +
                          reload.message);
  if (previous != 0) {
    out.replace_link("current", gen_dir(previous));
    report.generation = previous;
  }
  auto restart = restart_exim(daemon);
  if (restart.log_unread) report.exim_log_unread = c.exim_main_log.string();
  if (restart.ok) {
    report.exim_state = fmt::format("{}; back on generation {}",
                                    restart.message, report.generation);
  } else {
    report.exim_state = "exim is down: " + restart.message;
    report.errors.push_back("exim could not be restarted: " + restart.message);
  }
}

constexpr const char* kPinFile = "pinned";

std::optional<unsigned long> pinned_generation(const OutputDir& out) {
  auto text = out.read(kPinFile);
  if (!text) return {};
  auto g = parse_generation(text->substr(0, text->find('\n')));
  if (g == 0) return {};
  return g;
}

// Keeps `keep` generations: the live one, the one a rollback pinned
// (however old), and the newest others; removes the oldest of the rest.
// Not synced: a removed generation that a crash brings back is only kept
// a little longer.
void prune(OutputDir& out, unsigned long live, int keep) {
  auto gens = generations(out);
  auto pinned = pinned_generation(out);
  size_t left = gens.size();
  for (auto g : gens) {
    if (left <= static_cast<size_t>(keep)) break;
    if (g == live || g == pinned) continue;
    out.remove_all(gen_dir(g));
    --left;
  }
}

// A mass removal held back, as the output directory records it: the
// removals and how many full resyncs found them gone since the first.
// On disk, so that the count goes on across a restart, a SIGHUP and the
// runs of --once. It names domains only.
constexpr const char* kHeldFile = "held-removals";

struct HeldRemovals {
  std::vector<std::string> removals;  ///< sorted
  int resyncs = 0;
  bool recorded = false;  ///< the file says just this already
};

std::optional<HeldRemovals> read_held(const OutputDir& out) {
  std::optional<std::string> text;
  try {
    text = out.read(kHeldFile);
  } catch (const std::system_error&) {
    return {};  // a planted symlink: the count starts again
  }
  if (!text) return {};
  HeldRemovals held;
  std::istringstream lines(*text);
  for (std::string line; std::getline(lines, line);) {
    if (line.starts_with("resyncs: ")) {
      held.resyncs = std::atoi(line.c_str() + 9);
    } else if (!line.empty() && line.front() != '#') {
      held.removals.push_back(line);
    }
  }
  return held;
}

void write_held(OutputDir& out, const HeldRemovals& held) {
  std::string text = fmt::format(
      "# havenoro-relayd: removals held back; managed file\nresyncs: {}\n",
      held.resyncs);
  for (const auto& path : held.removals) text += path + "\n";
  out.commit({out.stage(kHeldFile, text, kFileMode)});
}

size_t live_relays(const OutputDir& out, const Listing& listing) {
  return listing.complete ? listing.domains.size() : out.list("domains").size();
}

// Whether removing `removals` relay domains in one apply is too many: a
// panel tree that was not mounted, a wrong path or a user's directory
// gone looks like that. The usual apply removes a domain or two, and
// needs no listing to be told.
bool mass_removal(const OutputDir& out, const Listing& listing,
                  const config::DaemonConfig& c, size_t removals) {
  size_t floor = static_cast<size_t>(c.mass_removal_min_domains);
  size_t percent = static_cast<size_t>(c.mass_removal_percent);
  if (removals * 100 <= floor * percent) return false;
  size_t live = live_relays(out, listing);
  return live >= floor && removals * 100 > live * percent;
}

// How a held-back removal stands after this apply: counted on when the
// same removals were held before and this is a full resync (an apply of
// a few domains sees too little to count), started again otherwise.
HeldRemovals count_held(const OutputDir& out, const ApplyScope& scope,
                        const Changes& changes) {
  HeldRemovals now{changes.removals, 0};
  std::sort(now.removals.begin(), now.removals.end());
  auto before = read_held(out);
  if (before && before->removals == now.removals) {
    now.resyncs = before->resyncs + (scope.everything ? 1 : 0);
    now.recorded = now.resyncs == before->resyncs;
  }
  return now;
}

// Holds back the removals of an apply that would remove too many relay
// domains at once, until confirmed: by the flag, or by
// mass_removal_confirm_resyncs further full resyncs that find the same
// domains gone. The rest of the apply goes on.
void guard_mass_removal(OutputDir& out, const Listing& listing,
                        const config::DaemonConfig& c, const ApplyScope& scope,
                        bool dry_run, Changes& changes, ApplyReport& report) {
  if (scope.confirm_removals ||
      !mass_removal(out, listing, c, changes.relay_removals)) {
    // A full apply that removes what it finds gone ends any count.
    if (scope.everything && !dry_run && out.exists(kHeldFile)) {
      out.remove_all(kHeldFile);
    }
    return;
  }
  HeldRemovals held = count_held(out, scope, changes);
  int wanted = c.mass_removal_confirm_resyncs;
  if (wanted > 0 && held.resyncs >= wanted) {
    if (!dry_run) out.remove_all(kHeldFile);
    return;  // gone for so many resyncs: really gone
  }
  if (!dry_run && !held.recorded) write_held(out, held);
  std::string later = wanted == 0
                          ? std::string()
                          : fmt::format(
                                ", or by itself when {} more full resyncs "
                                "find the same domains gone",
                                wanted - held.resyncs);
  report.held_back.push_back(fmt::format(
      "refusing to remove {} of {} relay domains at once (more than {}%: "
      "is the panel tree complete?); the rest is applied; confirm with "
      "havenoro-relayctl reconcile --confirm-removals --wait (or --once "
      "--confirm-removals){}",
      changes.relay_removals, live_relays(out, listing), c.mass_removal_percent,
      later));
  for (const auto& path : changes.removals) {
    if (auto name = domain_of_path(path); !name.empty()) {
      report.held_domains.insert(name);
    }
  }
  changes.removals.clear();
  changes.relay_removals = 0;
}

}  // namespace

Applier::Applier(config::DaemonConfig config)
    : config_(std::move(config)), held_mail_(config_) {
  // Once: the group database is a file read through NSS, a cost each save
  // would pay again. A group missing now is looked up at each apply, and
  // each one says that it is missing.
  try {
    exim_gid_ = util::group_id(config_.exim_group);
  } catch (const std::exception&) {
  }
}

OutputDir Applier::output_dir() const {
  return OutputDir(config_.output_dir,
                   exim_gid_ ? *exim_gid_ : util::group_id(config_.exim_group));
}

namespace {

// A prefetch serves the one apply that follows it, however that ends.
struct EndPrefetch {
  LiveFiles& files;
  ~EndPrefetch() { files.end_prefetch(); }
};

}  // namespace

// Removes what an interrupted apply left. This daemon's applies leave
// their scratch names only at the top (generations/.new-N, domains/.old-D)
// and in the candidate tree, which is emptied; temporaries inside the
// domain directories come from a daemon killed mid-write before, and are
// looked for once per process.
void Applier::sweep(OutputDir& out) {
  for (const char* dir :
       {"", "default", "suspended", "domains", "dkim", "generations"}) {
    out.remove_leftovers(dir);
  }
  clear_check(out);
  if (swept_) return;
  for (const char* top : {"domains", "dkim", "generations"}) {
    for (const auto& name : out.list(top)) {
      out.remove_leftovers(fs::path(top) / name);
    }
  }
  swept_ = true;
}

// Beyond this many domains an apply is a bulk one, whose checks are
// chosen once its changes are known.
constexpr size_t kMaxPrepared = 2;

void Applier::prepare(const std::set<std::string>& names) {
  ready_.clear();
  if (names.empty() || names.size() > kMaxPrepared) return;
  try {
    OutputDir out = output_dir();
    unsigned long live = live_generation(out);
    if (live == 0) return;
    fs::path generation = config_.output_dir / gen_dir(live);
    fs::path data = out.root() / kCheckDir;
    // Only the lookup check, which every save needs: whether a save needs
    // a route probe is known once its file is rendered (same_route).
    auto checker = make_checker(config_);
    ready_.push_back(checker.start_lookups(generation, data));
  } catch (const std::exception&) {
    ready_.clear();  // the apply starts its own, and says what failed
  }
}

void Applier::set_lock_wait(std::string name, std::chrono::milliseconds wait) {
  lock_name_ = std::move(name);
  lock_wait_ = wait;
}

// The lock for one apply, plan or rollback: the Hold in force, else one
// taken now.
std::shared_ptr<OutputLock> Applier::lock(const OutputDir& out) {
  if (auto held = hold_.lock()) return held;
  auto taken = std::make_shared<OutputLock>(out, lock_wait_);
  if (taken->held()) take_over(*taken);
  return taken;
}

// Another applier that changed files since this one last held the lock
// (a `--once` beside the daemon) wrote what this one did not record:
// their stamps differ from those recorded, which its compares notice,
// but stamps prefetched before that applier ran would not, and the
// output directory is no longer known to be as the last apply left it.
void Applier::take_over(const OutputLock& lock) {
  if (known_serial_ != lock.serial()) in_sync_ = false;
  if (prefetch_serial_ != lock.serial()) live_files_.end_prefetch();
  prefetch_serial_.reset();
  known_serial_ = lock.serial();
}

// Tells the other appliers that this hold changed the directory.
void Applier::note_changed(OutputLock& lock) {
  known_serial_ = lock.record(lock_name_);
}

namespace {

std::string holder_text(const LockHolder& h) {
  if (h.name == "daemon") {
    return fmt::format("the havenoro-relayd daemon (pid {})", h.pid);
  }
  if (h.name == "once") {
    return fmt::format("havenoro-relayd --once (pid {})", h.pid);
  }
  return h.pid ? fmt::format("another applier (pid {})", h.pid)
               : std::string("another applier");
}

}  // namespace

std::string Applier::busy_text(const OutputLock& lock) const {
  return fmt::format(
      "output directory {} is busy: {} kept it locked for the {:g} s "
      "waited; nothing was changed",
      config_.output_dir.string(), holder_text(lock.holder()),
      static_cast<double>(lock_wait_.count()) / 1000);
}

ApplyReport Applier::busy(const OutputDir& out, const OutputLock& lock) {
  ready_.clear();
  ApplyReport report;
  report.generation = live_generation(out);
  report.errors.push_back(busy_text(lock));
  return report;
}

Applier::Hold Applier::hold() {
  OutputDir out = output_dir();
  Hold hold;
  hold.lock_ = lock(out);
  if (hold.lock_->held()) {
    hold_ = hold.lock_;
  } else {
    hold.busy_ = busy_text(*hold.lock_);
  }
  return hold;
}

ApplyReport Applier::apply(const model::RelayModel& model,
                           const ApplyScope& scope) {
  EndPrefetch guard{live_files_};
  OutputDir out = output_dir();
  auto held = lock(out);
  if (!held->held()) return busy(out, *held);
  ApplyReport report;
  try {
    report = run(model, scope, false);
  } catch (...) {
    ready_.clear();
    in_sync_ = false;  // stopped halfway: nothing is known
    try {
      note_changed(*held);
    } catch (const std::system_error&) {
    }
    throw;
  }
  ready_.clear();  // what this apply did not need
  // A candidate Exim rejected left nothing live that another applier
  // could have recorded: only what went live (or came back) counts.
  if (report.new_generation || !report.written.empty() ||
      !report.removed.empty()) {
    note_changed(*held);
  }
  note_in_sync(out, scope, report);
  return report;
}

namespace {

std::vector<std::optional<util::FileStamp>> lookup_dir_stamps(
    const OutputDir& out) {
  std::vector<std::optional<util::FileStamp>> stamps;
  for (const char* dir : kLookupDirs) stamps.push_back(out.stamp(dir));
  return stamps;
}

}  // namespace

// True when nothing was added to, removed from or changed in the output
// directory since the last apply, which left it in sync with its model.
bool Applier::untouched(const OutputDir& out) {
  return in_sync_ && lookup_dir_stamps(out) == dir_stamps_ &&
         live_files_.all_unchanged(out);
}

// Only an apply that wrote everything it wanted, held nothing back and
// failed nowhere leaves the directory in sync with the model; a partial
// one keeps the state it found.
void Applier::note_in_sync(const OutputDir& out, const ApplyScope& scope,
                           const ApplyReport& report) {
  bool whole = report.ok() && report.held_back.empty();
  in_sync_ = whole && (scope.everything || in_sync_);
  if (in_sync_) dir_stamps_ = lookup_dir_stamps(out);
}

ApplyReport Applier::plan(const model::RelayModel& model) {
  EndPrefetch guard{live_files_};
  OutputDir out = output_dir();
  auto held = lock(out);  // the candidate tree is shared with applies
  if (!held->held()) return busy(out, *held);
  return run(model, ApplyScope::all(), true);
}

ApplyReport Applier::run(const model::RelayModel& model,
                         const ApplyScope& scope, bool dry_run) {
  ApplyReport report;
  OutputDir out = output_dir();
  const render::SnippetSet* rendered = nullptr;
  try {
    rendered = &snippet_cache_.get(
        config_.templates_dir,
        {config_.tls_ca_certificates, config_.allow_private_relays,
         config_.connect_timeout, config_.command_timeout});
  } catch (const render::RenderError& e) {
    report.errors.push_back(e.what());
    return report;
  }
  const render::SnippetSet& snippets = *rendered;

  ensure_lookup_dirs(out, "");
  // A resync whose output directory is as the last apply left it compares
  // only what changed in the model (and has no leftovers to sweep);
  // otherwise every domain.
  bool narrow = scope.everything && scope.changed && !dry_run && untouched(out);
  if (scope.everything && !dry_run && !narrow) sweep(out);
  unsigned long live = live_generation(out);
  report.generation = live;
  Listing listing = scope.everything && !narrow ? Listing::of(out) : Listing{};
  Changes changes;
  Differ differ(out, listing, live_files_, changes);
  for (const auto& name : names_in_scope(model, listing, scope, narrow)) {
    differ.domain(model, name);
  }
  if (scope.everything || scope.server) differ.server(model);
  guard_mass_removal(out, listing, config_, scope, dry_run, changes, report);
  bool snippets_same = snippets_live(out, live, snippets);
  if (!snippets_same && live != 0 && pinned_generation(out) == live) {
    snippets_same = true;  // a rollback holds the live snippets
    report.pinned = true;
  }
  for (const auto& w : changes.writes) {
    report.written.push_back(w.path);
  }
  report.removed = changes.removals;
  if (changes.empty() && snippets_same) return report;

  unsigned long candidate = live;
  auto discard = [&](const std::string& why) {
    if (candidate != live) out.remove_all(gen_dir(candidate));
    report.errors.push_back(why);
    report.written.clear();
    report.removed.clear();
    report.new_generation = false;
    return report;
  };
  if (!snippets_same) {
    auto gens = generations(out);
    candidate = std::max(live, gens.empty() ? 0UL : gens.back()) + 1;
    write_generation(out, config_, candidate, snippets);
    report.new_generation = true;
    candidate::EximChecker checker(config_.exim_binary, config_.exim_config);
    auto check = checker.check_syntax(config_.output_dir / gen_dir(candidate));
    if (!check.ok) {
      return discard("exim rejected the candidate: " + check.message);
    }
  }
  auto names = changed_names(changes);
  auto probed = names;
  if (candidate == live) {
    for (const auto& name : same_route(out, changes)) probed.erase(name);
  }
  stage_candidate(out, changes, names, report);
  Staged staged = staged_of(out, changes);
  std::future<void> durable;
  if (!dry_run) durable = out.make_durable_async(staged.paths);
  auto data_check =
      check_data(out, config_, config_.output_dir / gen_dir(candidate), model,
                 changes, probed, ready_);
  if (!data_check.ok || dry_run) {
    if (durable.valid()) durable.wait();
    clear_check(out);
  }
  if (!data_check.ok) {
    return discard("exim check of the changed settings failed: " +
                   data_check.message);
  }
  if (dry_run) {
    if (candidate != live) out.remove_all(gen_dir(candidate));
    return report;
  }

  // Snippets first: if Exim does not come back on them, the previous
  // generation goes back with the data it had, and nothing of this apply
  // stays live. Both orders briefly pair one side's snippets with the
  // other side's data; the data format is the same in both.
  if (candidate != live) {
    go_live(out, config_, candidate, live, report);
    prune(out, report.generation, config_.keep_generations);
    if (!report.ok()) {
      clear_check(out);
      report.written.clear();
      report.removed.clear();
      return report;
    }
  }
  promote(out, changes, staged, durable, live_files_, report);
  std::erase_if(report.written, [&](const std::string& path) {
    return std::any_of(report.path_errors.begin(), report.path_errors.end(),
                       [&](const auto& e) { return e.first == path; });
  });
  clear_check(out);  // the copies of live files
  remove_data(out, changes.removals, live_files_, report.errors);
  // Only for a running Exim daemon: that is the Exim this configuration
  // belongs to.
  auto [senders, everything] = changed_senders(changes);
  if ((everything || !senders.empty()) && running_exim(exim_daemon(config_)))
    held_mail_.retry(senders, everything);
  return report;
}

ApplyReport Applier::rollback(std::optional<unsigned long> generation) {
  OutputDir out = output_dir();
  auto held = lock(out);
  if (!held->held()) return busy(out, *held);
  ApplyReport report;
  unsigned long live = live_generation(out);
  report.generation = live;
  auto gens = generations(out);
  unsigned long target = 0;
  if (generation) {
    if (std::count(gens.begin(), gens.end(), *generation)) target = *generation;
  } else {
    for (auto g : gens) {
      if (g < live) target = g;
    }
  }
  if (target == 0) {
    report.errors.push_back(
        generation ? fmt::format("generation {} is not kept", *generation)
                   : std::string("no earlier generation is kept"));
    return report;
  }
  // The check defines HAVENORO_GENERATION itself, so it would not notice
  // a generation without its generation.conf; live, that would drop the
  // havenoro routers and send relay domains' mail out directly.
  for (const char* name : {"generation.conf", "routers.conf", "transports.conf",
                           "authenticators.conf"}) {
    if (!out.exists(fs::path(gen_dir(target)) / name)) {
      report.errors.push_back(
          fmt::format("generation {} is incomplete: no {}", target, name));
      return report;
    }
  }
  candidate::EximChecker checker(config_.exim_binary, config_.exim_config);
  auto check = checker.check_syntax(config_.output_dir / gen_dir(target));
  if (!check.ok) {
    report.errors.push_back(
        fmt::format("exim rejects generation {}: {}", target, check.message));
    return report;
  }
  out.commit({out.stage(kPinFile, fmt::format("{}\n", target), kFileMode)});
  report.pinned = true;
  note_changed(*held);
  if (target == live) return report;
  report.new_generation = true;
  go_live(out, config_, target, live, report);
  return report;
}

// Under the lock, not waiting for it: stamps taken while another applier
// writes would be of half its work. The apply that follows compares the
// lock file's serial to tell whether one worked in between.
void Applier::prefetch() {
  OutputDir out = output_dir();
  OutputLock lock(out, std::chrono::milliseconds(0));
  if (!lock.held()) return;  // the apply asks the disk instead
  live_files_.prefetch(out);
  prefetch_serial_ = lock.serial();
}

void Applier::release_pin() {
  OutputDir out = output_dir();
  out.remove_all(kPinFile);
}

namespace {

LiveRoute route_in(const OutputDir& out, const std::string& name) {
  try {
    if (out.exists(suspended_marker(name))) return {"suspended", ""};
    if (auto text = out.read(credential_file(name))) {
      auto route = file_value(*text, "route");
      if (route.starts_with(' ')) route.remove_prefix(1);
      if (!route.empty()) return {"relay", std::string(route)};
    }
  } catch (const std::system_error&) {
    // A planted symlink is not followed; what it hides is not a route.
  }
  return {"default", ""};
}

}  // namespace

LiveRoute Applier::live_route(const std::string& name) const {
  return route_in(output_dir(), name);
}

std::map<std::string, LiveRoute> Applier::live_routes(
    const std::vector<std::string>& names) const {
  std::map<std::string, LiveRoute> routes;
  if (names.empty()) return routes;
  OutputDir out = output_dir();
  for (const auto& name : names) routes.emplace(name, route_in(out, name));
  return routes;
}

std::vector<unsigned long> Applier::kept_generations() const {
  OutputDir out = output_dir();
  return generations(out);
}

std::optional<unsigned long> Applier::pinned() const {
  OutputDir out = output_dir();
  auto pin = pinned_generation(out);
  if (!pin || *pin != live_generation(out)) return std::nullopt;
  return pin;
}

}  // namespace havenoro::apply
