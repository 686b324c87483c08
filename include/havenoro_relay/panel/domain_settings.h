#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "havenoro_relay/panel/relay_settings.h"

namespace havenoro::panel {

/// A domain's DKIM key as the panel stores it: where it is and a hash of
/// the text that was checked. The key itself is read again only when it
/// must be written: at 10,000 domains the keys are megabytes, and a
/// daemon holding them would hold secrets it does not need.
struct KeyFile {
  std::string path;
  size_t hash = 0;  ///< std::hash of the text

  bool operator==(const KeyFile&) const = default;
};

/// One mail domain as the panel stored it (`mail/<domain>.json`).
struct DomainSettings {
  std::string domain;
  bool suspended = false;
  bool dkim_enabled = false;
  std::string dkim_selector;
  std::optional<KeyFile> dkim_key;     ///< checked, when DKIM is on
  std::optional<RelaySettings> relay;  ///< the domain's own enabled relay
};

/// The outcome of reading one settings file: the settings, or the first
/// error, plus warnings about values that are accepted.
template <class T>
struct Parsed {
  std::optional<T> value;
  std::optional<FieldError> error;
  std::vector<std::string> warnings;

  static Parsed failure(std::string field, std::string message) {
    Parsed p;
    p.error = FieldError{std::move(field), std::move(message)};
    return p;
  }
};

/// Parses a domain file's text. `stem` is the file name without `.json`;
/// the `domain` key must equal it. Never quotes the file's text in an
/// error, since it holds a password.
Parsed<DomainSettings> parse_domain_settings(std::string_view text,
                                             std::string_view stem,
                                             const RelayRules& rules);

/// One hosting account (`user.json`).
struct UserSettings {
  std::string user;
  bool suspended = false;
};

/// Checks the text of a `<domain>.dkim.pem` key file read from `path` and
/// notes it in `d`. Returns the error naming the `dkim` field, if any;
/// never quotes the key.
std::optional<FieldError> accept_dkim_key(DomainSettings& d,
                                          const std::optional<std::string>& pem,
                                          const std::string& path);

/// Parses a user file's text; `dir_name` is the user's directory name.
Parsed<UserSettings> parse_user_settings(std::string_view text,
                                         std::string_view dir_name);

/// Parses `conf/mail.json`; the value is the server-wide relay, or empty
/// when none is set.
Parsed<std::optional<RelaySettings>> parse_server_settings(
    std::string_view text, const RelayRules& rules);

/// True when `name` can be a hosted domain: a lowercase DNS name (ASCII,
/// internationalised names in their xn-- form).
bool is_domain_name(std::string_view name);

}  // namespace havenoro::panel
