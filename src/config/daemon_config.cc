#include "havenoro_relay/config/daemon_config.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

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

Setter path(std::filesystem::path DaemonConfig::*member) {
  return [member](DaemonConfig& c, const json& v) {
    auto p = as<std::string>(v, "a string");
    if (p.empty() || p.front() != '/') {
      throw ConfigError("must be an absolute path");
    }
    c.*member = p;
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
      {"exim_probe_address", text(&DaemonConfig::exim_probe_address)},
      {"exim_group", text(&DaemonConfig::exim_group)},
      {"exim_reload_command", command(&DaemonConfig::exim_reload_command)},
      {"exim_restart_command", command(&DaemonConfig::exim_restart_command)},
      {"reload_timeout_s", seconds(&DaemonConfig::reload_timeout)},
      {"tls_ca_certificates", text(&DaemonConfig::tls_ca_certificates)},
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
      {"keep_generations",
       [](DaemonConfig& c, const json& v) {
         int n = as<int>(v, "a whole number");
         if (n < 2 || n > 100) throw ConfigError("must be 2-100");
         c.keep_generations = n;
       }},
      {"mass_removal_percent",
       whole(&DaemonConfig::mass_removal_percent, 1, 100)},
      {"mass_removal_min_domains",
       whole(&DaemonConfig::mass_removal_min_domains, 1, 1000000)},
      {"mass_removal_confirm_resyncs",
       whole(&DaemonConfig::mass_removal_confirm_resyncs, 0, 1000)},
  };
  return table;
}

}  // namespace

DaemonConfig parse_daemon_config(const std::string& text,
                                 const std::string& origin) {
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
  }
  return config;
}

DaemonConfig load_daemon_config(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw ConfigError("cannot read '" + file.string() + "'");
  std::stringstream text;
  text << in.rdbuf();
  return parse_daemon_config(text.str(), file.string());
}

}  // namespace havenoro::config
