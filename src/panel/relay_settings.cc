#include "havenoro_relay/panel/relay_settings.h"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <nlohmann/json.hpp>

namespace havenoro::panel {
namespace {

using nlohmann::json;

constexpr size_t kMaxSecretBytes = 512;

// Loopback, private, link-local and unspecified ranges: a relay there is
// only reachable on purpose (a gateway on the local network, a test).
bool is_private_ipv4(const in_addr& a) {
  uint32_t ip = ntohl(a.s_addr);
  auto in = [ip](uint32_t net, int bits) {
    return (ip >> (32 - bits)) == (net >> (32 - bits));
  };
  return in(0x7f000000, 8) || in(0x0a000000, 8) || in(0xac100000, 12) ||
         in(0xc0a80000, 16) || in(0xa9fe0000, 16) || in(0x64400000, 10) ||
         ip == 0;
}

bool is_private_ipv6(const in6_addr& a) {
  if (IN6_IS_ADDR_LOOPBACK(&a) || IN6_IS_ADDR_UNSPECIFIED(&a) ||
      IN6_IS_ADDR_LINKLOCAL(&a)) {
    return true;
  }
  if ((a.s6_addr[0] & 0xfe) == 0xfc) return true;  // fc00::/7
  if (IN6_IS_ADDR_V4MAPPED(&a)) {
    in_addr v4;
    std::memcpy(&v4, a.s6_addr + 12, 4);
    return is_private_ipv4(v4);
  }
  return false;
}

const json* member(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

FieldError field_error(const char* key, std::string message) {
  return {fmt::format("smtp_relay.{}", key), std::move(message)};
}

// Each reader below takes the member (or null when absent) and either
// stores the value or returns the error.
using Check = std::optional<FieldError>;

Check read_port(const json* v, RelaySettings& r) {
  if (!v) return {};
  if (!v->is_number_integer()) {
    return field_error("port", "must be a whole number");
  }
  auto port = v->get<int64_t>();
  if (port < 1 || port > 65535) {
    return field_error("port", fmt::format("{} is out of range 1-65535", port));
  }
  r.port = static_cast<uint16_t>(port);
  return {};
}

Check read_security(const json* v, RelaySettings& r) {
  if (!v) return {};
  static const std::pair<const char*, Security> kModes[] = {
      {"auto", Security::kAuto},
      {"tls", Security::kTls},
      {"starttls", Security::kStarttls},
      {"none", Security::kNone}};
  if (v->is_string()) {
    for (const auto& [name, mode] : kModes) {
      if (v->get<std::string>() == name) {
        r.security = mode;
        return {};
      }
    }
  }
  return field_error("security", "must be one of auto, tls, starttls, none");
}

Check read_text(const json* v, const char* key, std::string& out) {
  if (!v || v->is_null()) return {};
  if (!v->is_string()) return field_error(key, "must be a string");
  auto text = v->get<std::string>();
  if (auto problem = check_secret_text(text)) {
    return field_error(key, *problem);
  }
  out = std::move(text);
  return {};
}

Check read_bool(const json* v, const char* key, bool& out) {
  if (!v) return {};
  if (!v->is_boolean()) return field_error(key, "must be true or false");
  out = v->get<bool>();
  return {};
}

Check read_host(const json* v, const RelayRules& rules, RelaySettings& r) {
  if (!v) return field_error("host", "is missing");
  if (!v->is_string()) return field_error("host", "must be a string");
  r.host = v->get<std::string>();
  if (auto problem = check_host(r.host, rules)) {
    return field_error("host", *problem);
  }
  return {};
}

Check read_relay(const json& obj, const RelayRules& rules, RelaySettings& r) {
  for (auto check : {
           read_host(member(obj, "host"), rules, r),
           read_port(member(obj, "port"), r),
           read_security(member(obj, "security"), r),
           read_text(member(obj, "username"), "username", r.username),
           read_text(member(obj, "password"), "password", r.password),
           read_bool(member(obj, "verify_certificate"), "verify_certificate",
                     r.verify_certificate),
       }) {
    if (check) return check;
  }
  if (r.username.empty() != r.password.empty()) {
    return field_error(r.username.empty() ? "username" : "password",
                       "is empty, but username and password go together");
  }
  return {};
}

bool is_valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80             ? 1
                 : (c & 0xe0) == 0xc0 ? 2
                 : (c & 0xf0) == 0xe0 ? 3
                 : (c & 0xf8) == 0xf0 ? 4
                                      : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

}  // namespace

bool RelaySettings::implicit_tls() const {
  return security == Security::kTls ||
         (security == Security::kAuto && port == 465);
}

bool is_dns_name(std::string_view name, bool allow_underscore) {
  if (name.empty() || name.size() > 253) return false;
  if (name.back() == '.') name.remove_suffix(1);
  size_t label = 0;
  char prev = '.';
  for (char c : name) {
    if (c == '.') {
      if (label == 0 || prev == '-') return false;
      label = 0;
    } else {
      bool ok = std::isalnum(static_cast<unsigned char>(c)) ||
                (c == '-' && label > 0) || (c == '_' && allow_underscore);
      if (!ok || ++label > 63) return false;
    }
    prev = c;
  }
  return label > 0 && prev != '-';
}

std::string quote_value(std::string_view value) {
  std::string out = "'";
  for (char c : value) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      out += fmt::format("\\x{:02x}", u);
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::optional<std::string> check_host(std::string_view host,
                                      const RelayRules& rules) {
  std::string h(host);
  in_addr v4;
  in6_addr v6;
  bool is_v4 = inet_pton(AF_INET, h.c_str(), &v4) == 1;
  bool is_v6 = !is_v4 && inet_pton(AF_INET6, h.c_str(), &v6) == 1;
  if (!is_v4 && !is_v6) {
    if (h.empty()) return "is empty";
    if (std::any_of(h.begin(), h.end(),
                    [](unsigned char c) { return c < 0x20 || c == 0x7f; })) {
      return fmt::format("{} contains a control character", quote_value(h));
    }
    if (h.find_first_of(" /") != std::string::npos) {
      return fmt::format(
          "{} is not a host name: it contains a space or a "
          "slash",
          quote_value(h));
    }
    if (!is_dns_name(h)) {
      return fmt::format("{} is not a DNS name, an IPv4 or an IPv6 address",
                         quote_value(h));
    }
    return {};
  }
  bool priv = is_v4 ? is_private_ipv4(v4) : is_private_ipv6(v6);
  if (priv && !rules.allow_private_addresses) {
    return fmt::format(
        "{} is a loopback or private address, and private "
        "relays are not allowed on this server "
        "(allow_private_relays)",
        quote_value(h));
  }
  return {};
}

std::optional<std::string> check_secret_text(std::string_view value) {
  if (value.find('\0') != std::string_view::npos) return "contains a NUL byte";
  if (value.find_first_of("\r\n") != std::string_view::npos) {
    return "contains a line break (CR or LF)";
  }
  if (!is_valid_utf8(value)) return "is not valid UTF-8";
  if (value.size() > kMaxSecretBytes) {
    return fmt::format("is longer than {} bytes", kMaxSecretBytes);
  }
  return {};
}

RelayParse parse_relay(const json* value, const RelayRules& rules) {
  RelayParse out;
  if (!value || value->is_null()) return out;
  if (!value->is_object()) {
    out.error = FieldError{"smtp_relay", "must be an object"};
    return out;
  }
  bool enabled = false;
  const json* flag = member(*value, "enabled");
  if (auto e = read_bool(flag, "enabled", enabled)) {
    out.error = e;
    return out;
  }
  if (!enabled) {
    // A relay filled in but never switched on is most likely a panel that
    // forgot the flag: say so rather than drop it in silence.
    if (!flag && value->contains("host")) {
      out.warnings.push_back(
          "smtp_relay.enabled: missing, so the relay is off; the panel "
          "must set \"enabled\": true to use it");
    }
    return out;
  }

  RelaySettings relay;
  if (auto e = read_relay(*value, rules, relay)) {
    out.error = e;
    return out;
  }
  for (const auto& [key, value] : {std::pair{"username", &relay.username},
                                   std::pair{"password", &relay.password}}) {
    if (value->starts_with("^")) {
      out.warnings.push_back(fmt::format(
          "smtp_relay.{}: starts with '^', which AUTH PLAIN cannot carry; "
          "it is sent with AUTH LOGIN, so the relay must offer LOGIN",
          key));
    }
  }
  if (relay.port == 465 && relay.security == Security::kStarttls) {
    out.warnings.push_back(
        "smtp_relay.security: starttls on port 465, which speaks TLS from "
        "the first byte on every provider; \"auto\" or \"tls\" is what "
        "works there");
  }
  if (relay.port == 25) {
    out.warnings.push_back(
        "smtp_relay.port: 25 is usually blocked for outgoing mail; relays "
        "take submissions on 587 or 465");
  }
  out.relay = std::move(relay);
  return out;
}

}  // namespace havenoro::panel
