#include "havenoro_relay/config/daemon_config.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "havenoro_relay/util/group.h"
#include "havenoro_relay/util/ip_endpoint.h"

namespace havenoro::config {
namespace {

using nlohmann::json;
using Setter = std::function<void(DaemonConfig&, const json&)>;

template <class T>
T as(const json& value, const char* type) {
  bool ok = false;
  if constexpr (std::is_same_v<T, bool>) ok = value.is_boolean();
  if constexpr (std::is_same_v<T, std::string>) ok = value.is_string();
  if constexpr (std::is_same_v<T, int>) ok = value.is_number_integer();
  if (!ok) throw ConfigError(fmt::format("must be {}", type));
  if constexpr (std::is_same_v<T, int>) {
    // Clamped, not wrapped, so that the caller's range check refuses it:
    // 2^32 + 60 is out of every range, not 60.
    using Limits = std::numeric_limits<int>;
    if (value.is_number_unsigned()) {
      return static_cast<int>(
          std::min<uint64_t>(value.get<uint64_t>(), Limits::max()));
    }
    return static_cast<int>(std::clamp<int64_t>(value.get<int64_t>(),
                                                Limits::min(), Limits::max()));
  }
  return value.get<T>();
}

// A control character would end a line of the Exim configuration that
// some paths are rendered into; no real path has one.
bool absolute_path(const std::string& p) {
  return !p.empty() && p.front() == '/' &&
         std::none_of(p.begin(), p.end(),
                      [](unsigned char ch) { return ch < 0x20 || ch == 0x7f; });
}

Setter path(std::filesystem::path DaemonConfig::*member) {
  return [member](DaemonConfig& c, const json& v) {
    auto p = as<std::string>(v, "a string");
    if (!absolute_path(p)) throw ConfigError("must be an absolute path");
    c.*member = p;
  };
}

// What exim_reload.cc's probe connects to: a numeric address, since the
// probe resolves no names, and a port.
Setter probe_address() {
  return [](DaemonConfig& c, const json& v) {
    auto text = as<std::string>(v, "a string");
    if (!util::parse_ip_endpoint(text)) {
      throw ConfigError(fmt::format(
          "must be an IP address and a port, such as 127.0.0.1:25 or "
          "[::1]:25, not '{}'",
          text));
    }
    c.exim_probe_address = text;
  };
}

Setter ca_certificates() {
  return [](DaemonConfig& c, const json& v) {
    auto text = as<std::string>(v, "a string");
    if (text != "system" && !absolute_path(text)) {
      throw ConfigError("must be \"system\" or an absolute path");
    }
    c.tls_ca_certificates = text;
  };
}

Setter text(std::string DaemonConfig::*member) {
  return [member](DaemonConfig& c, const json& v) {
    c.*member = as<std::string>(v, "a string");
  };
}

Setter seconds(std::chrono::seconds DaemonConfig::*member, int max = 3600) {
  return [member, max](DaemonConfig& c, const json& v) {
    int s = as<int>(v, "a whole number of seconds");
    if (s < 1 || s > max) {
      throw ConfigError(fmt::format("must be 1-{} seconds", max));
    }
    c.*member = std::chrono::seconds(s);
  };
}

Setter whole(int DaemonConfig::*member, int min, int max) {
  return [member, min, max](DaemonConfig& c, const json& v) {
    int n = as<int>(v, "a whole number");
    if (n < min || n > max) {
      throw ConfigError(fmt::format("must be {}-{}", min, max));
    }
    c.*member = n;
  };
}

Setter command(std::vector<std::string> DaemonConfig::*member) {
  return [member](DaemonConfig& c, const json& v) {
    if (!v.is_array() || v.empty()) {
      throw ConfigError("must be a list of strings, the program first");
    }
    std::vector<std::string> argv;
    for (const auto& arg : v) argv.push_back(as<std::string>(arg, "a string"));
    if (argv[0].empty() || argv[0].front() != '/') {
      throw ConfigError("must start with an absolute program path");
    }
    c.*member = std::move(argv);
  };
}

const std::map<std::string, Setter>& setters() {
  static const std::map<std::string, Setter> table = {
      {"panel_root", path(&DaemonConfig::panel_root)},
      {"output_dir", path(&DaemonConfig::output_dir)},
      {"templates_dir", path(&DaemonConfig::templates_dir)},
      {"exim_binary", path(&DaemonConfig::exim_binary)},
      {"exim_config", path(&DaemonConfig::exim_config)},
      {"exim_pid_file", path(&DaemonConfig::exim_pid_file)},
      {"exim_main_log", path(&DaemonConfig::exim_main_log)},
      {"exim_probe_address", probe_address()},
      {"exim_group", text(&DaemonConfig::exim_group)},
      {"exim_reload_command", command(&DaemonConfig::exim_reload_command)},
      {"exim_restart_command", command(&DaemonConfig::exim_restart_command)},
      {"reload_timeout_s", seconds(&DaemonConfig::reload_timeout)},
      {"tls_ca_certificates", ca_certificates()},
      {"allow_private_relays",
       [](DaemonConfig& c, const json& v) {
         c.allow_private_relays = as<bool>(v, "true or false");
       }},
      {"connect_timeout_s", seconds(&DaemonConfig::connect_timeout)},
      {"command_timeout_s", seconds(&DaemonConfig::command_timeout)},
      // Up to 60 s each, so that a whole test stays within the 120 s a
      // relay-test request may ask for (daemon/relay_test.h).
      {"probe_step_timeout_s", seconds(&DaemonConfig::probe_step_timeout, 60)},
      {"probe_timeout_s", seconds(&DaemonConfig::probe_timeout, 60)},
      {"test_message_timeout_s",
       seconds(&DaemonConfig::test_message_timeout, 60)},
      {"control_socket", path(&DaemonConfig::control_socket)},
      {"control_socket_group", text(&DaemonConfig::control_socket_group)},
      {"resync_interval_s", seconds(&DaemonConfig::resync_interval, 86400)},
      {"idle_timeout_s", seconds(&DaemonConfig::idle_timeout)},
      {"max_request_bytes",
       [](DaemonConfig& c, const json& v) {
         int n = as<int>(v, "a whole number");
         if (n < 1024 || n > (1 << 24)) {
           throw ConfigError("must be 1024-16777216");
         }
         c.max_request_bytes = static_cast<size_t>(n);
       }},
      {"keep_generations", whole(&DaemonConfig::keep_generations, 2, 100)},
      {"mass_removal_percent",
       whole(&DaemonConfig::mass_removal_percent, 1, 100)},
      {"mass_removal_min_domains",
       whole(&DaemonConfig::mass_removal_min_domains, 1, 1000000)},
      {"mass_removal_confirm_resyncs",
       whole(&DaemonConfig::mass_removal_confirm_resyncs, 0, 1000)},
  };
  return table;
}

DaemonConfig parse(const std::string& text, const std::string& origin,
                   std::set<std::string>& given) {
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    throw ConfigError(origin + ": not a JSON object");
  }
  DaemonConfig config;
  for (const auto& [key, value] : doc.items()) {
    auto it = setters().find(key);
    if (it == setters().end()) {
      throw ConfigError(fmt::format("{}: unknown key '{}'", origin, key));
    }
    try {
      it->second(config, value);
    } catch (const ConfigError& e) {
      throw ConfigError(fmt::format("{}: '{}' {}", origin, key, e.what()));
    }
    given.insert(key);
  }
  return config;
}

// Why `path` is no file of the kind wanted, or "" when it is one.
std::string file_problem(const std::filesystem::path& path, bool executable) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    int error = errno;
    return fmt::format("'{}': {}", path.string(), std::strerror(error));
  }
  if (S_ISDIR(st.st_mode))
    return fmt::format("'{}' is a directory", path.string());
  if (!S_ISREG(st.st_mode))
    return fmt::format("'{}' is not a regular file", path.string());
  if (executable && ::access(path.c_str(), X_OK) != 0) {
    return fmt::format("'{}' is not executable", path.string());
  }
  return "";
}

std::string directory_problem(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    int error = errno;
    return fmt::format("'{}': {}", path.string(), std::strerror(error));
  }
  if (!S_ISDIR(st.st_mode))
    return fmt::format("'{}' is not a directory", path.string());
  return "";
}

std::string group_problem(const std::string& name) {
  if (util::find_group(name)) return "";
  return fmt::format("must name a group of this system, not '{}'", name);
}

std::string program_problem(const std::vector<std::string>& argv) {
  if (argv.empty()) return "";  // not set: SIGHUP, or the default restart
  auto problem = file_problem(argv.front(), true);
  return problem.empty() ? ""
                         : "must start with an executable file: " + problem;
}

using SystemCheck = std::function<std::string(const DaemonConfig&)>;

// What a loaded configuration names on this system, checked once when it
// is loaded: each of these would otherwise fail later, at every apply (a
// group that does not exist, an Exim binary that is not there), while
// the daemon said the configuration was fine. What may rightly appear
// later is not checked: the output directory and the control socket (the
// daemon creates them), the panel tree (a mount may come later), Exim's
// pid file and main log (Exim writes them when it runs).
const std::vector<std::pair<const char*, SystemCheck>>& system_checks() {
  static const std::vector<std::pair<const char*, SystemCheck>> table = {
      {"exim_binary",
       [](const DaemonConfig& c) {
         auto p = file_problem(c.exim_binary, true);
         return p.empty() ? p : "must be an executable file: " + p;
       }},
      {"exim_config",
       [](const DaemonConfig& c) {
         auto p = file_problem(c.exim_config, false);
         return p.empty() ? p : "must be a file: " + p;
       }},
      {"templates_dir",
       [](const DaemonConfig& c) {
         auto p = directory_problem(c.templates_dir);
         return p.empty() ? p : "must be a directory: " + p;
       }},
      {"tls_ca_certificates",
       [](const DaemonConfig& c) {
         if (c.tls_ca_certificates == "system") return std::string();
         auto p = file_problem(c.tls_ca_certificates, false);
         return p.empty() ? p : "must be \"system\" or a file: " + p;
       }},
      {"exim_group",
       [](const DaemonConfig& c) { return group_problem(c.exim_group); }},
      {"control_socket_group",
       [](const DaemonConfig& c) {
         return group_problem(c.control_socket_group);
       }},
      {"exim_reload_command",
       [](const DaemonConfig& c) {
         return program_problem(c.exim_reload_command);
       }},
      {"exim_restart_command",
       [](const DaemonConfig& c) {
         return program_problem(c.exim_restart_command);
       }},
  };
  return table;
}

// A default is checked as a value given would be: a daemon without Exim's
// binary cannot work whether or not the file names it.
void check_system(const DaemonConfig& config, const std::string& origin,
                  const std::set<std::string>& given) {
  for (const auto& [key, check] : system_checks()) {
    std::string problem = check(config);
    if (problem.empty()) continue;
    throw ConfigError(fmt::format(
        "{}: '{}'{} {}", origin, key,
        given.count(key) ? "" : " (not set: the default)", problem));
  }
}

}  // namespace

DaemonConfig parse_daemon_config(const std::string& text,
                                 const std::string& origin) {
  std::set<std::string> given;
  return parse(text, origin, given);
}

DaemonConfig load_daemon_config(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw ConfigError("cannot read '" + file.string() + "'");
  std::stringstream text;
  text << in.rdbuf();
  std::set<std::string> given;
  DaemonConfig config = parse(text.str(), file.string(), given);
  check_system(config, file.string(), given);
  return config;
}

}  // namespace havenoro::config
