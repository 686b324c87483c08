#include "havenoro_relay/apply/applier.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>

#include "havenoro_relay/apply/exim_reload.h"
#include "havenoro_relay/apply/output_dir.h"
#include "havenoro_relay/candidate/exim_check.h"
#include "havenoro_relay/render/credential_file.h"
#include "havenoro_relay/render/snippets.h"

namespace havenoro::apply {
namespace {

namespace fs = std::filesystem;

constexpr mode_t kFileMode = 0640;
constexpr const char* kCredentialFile = "smtp_relay.conf";

// Relative path -> content of every data file the model asks for.
using DataFiles = std::map<std::string, std::string>;

DataFiles desired_data(const model::RelayModel& m) {
  DataFiles files;
  for (const auto& [name, d] : m.domains) {
    if (d.route == model::Route::kRelay) {
      files[fmt::format("domains/{}/{}", name, kCredentialFile)] =
          render::render_credential_file(name, *d.relay);
    } else if (d.route == model::Route::kSuspended) {
      files["suspended/" + name] = "";
    }
  }
  if (m.server_relay) {
    files[fmt::format("default/{}", kCredentialFile)] =
        render::render_credential_file("the server", *m.server_relay);
  }
  return files;
}

std::set<std::string> live_data(const OutputDir& out) {
  std::set<std::string> files;
  for (const auto& d : out.list("domains")) {
    files.insert(fmt::format("domains/{}/{}", d, kCredentialFile));
  }
  for (const auto& d : out.list("suspended"))
    files.insert("suspended/" + d);
  if (out.read(fmt::format("default/{}", kCredentialFile))) {
    files.insert(fmt::format("default/{}", kCredentialFile));
  }
  return files;
}

unsigned long parse_generation(const std::string& name) {
  if (name.empty() || name.size() > 18 ||
      !std::all_of(name.begin(), name.end(), ::isdigit)) {
    return 0;
  }
  return std::stoul(name);
}

unsigned long live_generation(const OutputDir& out) {
  auto link = out.read_link("current");
  if (!link || !link->starts_with("generations/"))
    return 0;
  return parse_generation(link->substr(12));
}

std::vector<unsigned long> generations(const OutputDir& out) {
  std::vector<unsigned long> gens;
  for (const auto& name : out.list("generations")) {
    if (auto g = parse_generation(name))
      gens.push_back(g);
  }
  std::sort(gens.begin(), gens.end());
  return gens;
}

std::string gen_dir(unsigned long g) {
  return fmt::format("generations/{}", g);
}

bool snippets_live(const OutputDir& out, unsigned long gen,
                   const render::SnippetSet& snippets) {
  if (gen == 0)
    return false;
  return std::all_of(snippets.begin(), snippets.end(), [&](const auto& s) {
    return out.matches(fs::path(gen_dir(gen)) / s.first, s.second, kFileMode);
  });
}

// The domain directory that a credential file path belongs to, for a path
// "domains/<d>/smtp_relay.conf"; empty for any other path.
std::string domain_dir_of(const std::string& path) {
  if (!path.starts_with("domains/"))
    return {};
  return fs::path(path).parent_path().string();
}

// A new domain's directory is filled under a dot-name that no sender
// domain can have, then renamed into place, so that Exim's dsearch never
// finds the directory without its file.
std::string staging_dir_for(const std::string& domain_dir) {
  return "domains/.new-" + fs::path(domain_dir).filename().string();
}

class Transaction {
 public:
  Transaction(const config::DaemonConfig& c, OutputDir& out, ApplyReport& r)
      : config_(c), out_(out), report_(r) {}

  bool write_generation(unsigned long gen, const render::SnippetSet& s) {
    std::string dir = gen_dir(gen);
    out_.remove_all(dir);  // a leftover of an interrupted apply
    out_.make_dir(dir);
    std::vector<StagedFile> staged;
    for (const auto& [name, text] : s) {
      staged.push_back(out_.stage(fs::path(dir) / name, text, kFileMode));
    }
    staged.push_back(
        out_.stage(fs::path(dir) / "generation.conf",
                   render::render_generation_conf(
                       config_.templates_dir, config_.output_dir / dir, gen),
                   kFileMode));
    out_.commit(staged);
    return true;
  }

  void write_data(const DataFiles& desired, const std::set<std::string>& live) {
    std::vector<StagedFile> staged;
    std::vector<std::string> new_dirs;
    for (const auto& [path, text] : desired) {
      if (out_.matches(path, text, kFileMode))
        continue;
      std::string dir = domain_dir_of(path);
      fs::path target = path;
      if (!dir.empty() && !live.count(path)) {
        out_.remove_all(staging_dir_for(dir));
        target = fs::path(staging_dir_for(dir)) / kCredentialFile;
        new_dirs.push_back(dir);
      }
      staged.push_back(out_.stage(target, text, kFileMode));
      report_.written.push_back(path);
    }
    out_.commit(staged);
    for (const auto& dir : new_dirs)
      out_.rename(staging_dir_for(dir), dir);
  }

  void remove_stale(const DataFiles& desired,
                    const std::set<std::string>& live) {
    for (const auto& path : live) {
      if (desired.count(path))
        continue;
      std::string dir = domain_dir_of(path);
      if (dir.empty()) {
        out_.remove_all(path);
      } else {
        // Out of dsearch's sight first, then gone.
        std::string old = "domains/.old-" + fs::path(dir).filename().string();
        out_.remove_all(old);
        out_.rename(dir, old);
        out_.remove_all(old);
      }
      report_.removed.push_back(path);
    }
  }

 private:
  const config::DaemonConfig& config_;
  OutputDir& out_;
  ApplyReport& report_;
};

EximDaemon exim_daemon(const config::DaemonConfig& c) {
  return {
      c.exim_pid_file, c.exim_main_log, c.exim_probe_address,
      std::chrono::duration_cast<std::chrono::milliseconds>(c.reload_timeout)};
}

void prune(OutputDir& out, unsigned long live, int keep) {
  auto gens = generations(out);
  int excess = static_cast<int>(gens.size()) - keep;
  for (int i = 0; i < excess; ++i) {
    if (gens[i] != live)
      out.remove_all(gen_dir(gens[i]));
  }
}

}  // namespace

Applier::Applier(config::DaemonConfig config) : config_(std::move(config)) {}

ApplyReport Applier::apply(const model::RelayModel& model) {
  ApplyReport report;
  OutputDir out(config_.output_dir, group_id(config_.exim_group));
  render::SnippetParams params{config_.output_dir, config_.tls_ca_certificates,
                               config_.allow_private_relays,
                               config_.connect_timeout,
                               config_.command_timeout};
  render::SnippetSet snippets;
  try {
    snippets = render::render_snippets(config_.templates_dir, params);
  } catch (const render::RenderError& e) {
    report.errors.push_back(e.what());
    return report;
  }

  unsigned long live = live_generation(out);
  report.generation = live;
  DataFiles desired = desired_data(model);
  std::set<std::string> existing = live_data(out);
  bool data_same =
      std::all_of(desired.begin(), desired.end(),
                  [&](const auto& f) {
                    return out.matches(f.first, f.second, kFileMode);
                  }) &&
      std::all_of(existing.begin(), existing.end(),
                  [&](const auto& p) { return desired.count(p) > 0; });
  bool snippets_same = snippets_live(out, live, snippets);
  if (data_same && snippets_same)
    return report;

  Transaction tx(config_, out, report);
  unsigned long candidate = live;
  if (!snippets_same) {
    auto gens = generations(out);
    candidate = std::max(live, gens.empty() ? 0UL : gens.back()) + 1;
    tx.write_generation(candidate, snippets);
  }

  candidate::EximChecker checker(config_.exim_binary, config_.exim_config);
  auto check = checker.check_syntax(config_.output_dir / gen_dir(candidate));
  if (!check.ok) {
    if (candidate != live)
      out.remove_all(gen_dir(candidate));
    report.errors.push_back("exim rejected the candidate: " + check.message);
    return report;
  }

  tx.write_data(desired, existing);
  tx.remove_stale(desired, existing);
  if (candidate == live)
    return report;

  out.replace_link("current", gen_dir(candidate));
  report.new_generation = true;
  report.generation = candidate;
  auto reload = reload_exim(exim_daemon(config_));
  report.reloaded = reload.signalled && reload.ok;
  if (!reload.ok) {
    // TODO(#4): restart Exim on the previous generation and confirm it.
    report.errors.push_back("exim did not come back after the reload: " +
                            reload.message);
    if (live != 0) {
      out.replace_link("current", gen_dir(live));
      report.generation = live;
    }
  }
  prune(out, report.generation, config_.keep_generations);
  return report;
}

}  // namespace havenoro::apply
