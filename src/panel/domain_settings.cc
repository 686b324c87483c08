#include "havenoro_relay/panel/domain_settings.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

namespace havenoro::panel {
namespace {

using nlohmann::json;

// Parses without exceptions: nlohmann's parse errors quote the input near
// the fault, and the input holds a password.
std::optional<json> parse_object(std::string_view text) {
  json doc = json::parse(text.begin(), text.end(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return {};
  return doc;
}

template <class T>
Parsed<T> not_json() {
  return Parsed<T>::failure(
      "file", "is not a complete JSON object (a save still in progress?)");
}

std::optional<FieldError> read_flag(const json& obj, const char* key,
                                    bool& out) {
  auto it = obj.find(key);
  if (it == obj.end()) return {};
  if (!it->is_boolean()) return FieldError{key, "must be true or false"};
  out = it->get<bool>();
  return {};
}

std::optional<FieldError> read_dkim(const json& obj, DomainSettings& d) {
  auto it = obj.find("dkim");
  if (it == obj.end() || it->is_null()) return {};
  if (!it->is_object()) return FieldError{"dkim", "must be an object"};
  if (auto e = read_flag(*it, "enabled", d.dkim_enabled)) {
    return FieldError{"dkim.enabled", e->message};
  }
  auto sel = it->find("selector");
  if (sel != it->end()) {
    if (!sel->is_string() || !is_dns_name(sel->get<std::string>(), true)) {
      return FieldError{"dkim.selector", "must be a DNS label"};
    }
    d.dkim_selector = sel->get<std::string>();
  }
  return {};
}

}  // namespace

std::optional<FieldError> accept_dkim_key(DomainSettings& d,
                                          const std::optional<std::string>& pem,
                                          const std::string& path) {
  std::string file = d.domain + ".dkim.pem";
  if (!pem) {
    return FieldError{"dkim.enabled",
                      "is true, but " + file +
                          " is missing, unreadable or not a regular file"};
  }
  bool looks_like_key = pem->starts_with("-----BEGIN ") &&
                        pem->find("PRIVATE KEY-----") != std::string::npos;
  if (!looks_like_key) {
    return FieldError{"dkim.enabled",
                      "is true, but " + file + " is not a PEM private key"};
  }
  if (d.dkim_selector.empty()) {
    return FieldError{"dkim.selector", "is missing"};
  }
  d.dkim_key = KeyFile{path, std::hash<std::string>{}(*pem)};
  return {};
}

bool is_domain_name(std::string_view name) {
  if (!is_dns_name(name) || name.back() == '.') return false;
  return std::none_of(name.begin(), name.end(),
                      [](char c) { return c >= 'A' && c <= 'Z'; });
}

Parsed<DomainSettings> parse_domain_settings(std::string_view text,
                                             std::string_view stem,
                                             const RelayRules& rules) {
  using P = Parsed<DomainSettings>;
  auto doc = parse_object(text);
  if (!doc) return not_json<DomainSettings>();

  DomainSettings d;
  auto name = doc->find("domain");
  if (name == doc->end() || !name->is_string()) {
    return P::failure("domain", "is missing or not a string");
  }
  d.domain = name->get<std::string>();
  if (d.domain != stem) {
    return P::failure("domain", fmt::format("{} does not match the file "
                                            "name '{}.json'",
                                            quote_value(d.domain), stem));
  }
  if (!is_domain_name(d.domain)) {
    return P::failure("domain", fmt::format("{} is not a lowercase DNS "
                                            "name",
                                            quote_value(d.domain)));
  }
  if (auto e = read_flag(*doc, "suspended", d.suspended)) {
    return P::failure(e->field, e->message);
  }
  if (auto e = read_dkim(*doc, d)) return P::failure(e->field, e->message);

  auto relay_it = doc->find("smtp_relay");
  RelayParse relay =
      parse_relay(relay_it == doc->end() ? nullptr : &*relay_it, rules);
  if (relay.error) return P::failure(relay.error->field, relay.error->message);
  d.relay = std::move(relay.relay);

  P out;
  out.value = std::move(d);
  out.warnings = std::move(relay.warnings);
  return out;
}

Parsed<UserSettings> parse_user_settings(std::string_view text,
                                         std::string_view dir_name) {
  using P = Parsed<UserSettings>;
  auto doc = parse_object(text);
  if (!doc) return not_json<UserSettings>();
  UserSettings u;
  auto name = doc->find("user");
  if (name == doc->end() || !name->is_string() ||
      name->get<std::string>() != dir_name) {
    return P::failure("user", fmt::format("does not match the directory "
                                          "name '{}'",
                                          dir_name));
  }
  u.user = name->get<std::string>();
  if (auto e = read_flag(*doc, "suspended", u.suspended)) {
    return P::failure(e->field, e->message);
  }
  P out;
  out.value = std::move(u);
  return out;
}

Parsed<std::optional<RelaySettings>> parse_server_settings(
    std::string_view text, const RelayRules& rules) {
  using P = Parsed<std::optional<RelaySettings>>;
  auto doc = parse_object(text);
  if (!doc) return not_json<std::optional<RelaySettings>>();
  auto it = doc->find("smtp_relay");
  RelayParse relay = parse_relay(it == doc->end() ? nullptr : &*it, rules);
  if (relay.error) return P::failure(relay.error->field, relay.error->message);
  P out;
  out.value = std::move(relay.relay);
  out.warnings = std::move(relay.warnings);
  return out;
}

}  // namespace havenoro::panel
