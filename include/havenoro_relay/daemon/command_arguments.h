#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>

namespace havenoro::daemon {

/// Arguments of a control request that cannot be used: the client gets a
/// kBadRequest reply with the text.
class ArgumentError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The member `key` of a request's arguments, or nullptr when it is
/// absent or null.
const nlohmann::json* given(const nlohmann::json& args, const char* key);

/// The `domain` argument, empty when absent or null. Throws ArgumentError
/// unless it is a domain name as the panel stores it (lowercase, xn--).
std::optional<std::string> domain_argument(const nlohmann::json& args);

/// A flag: false when absent. Throws ArgumentError naming `key` unless it
/// is true or false, null too; a command that takes null for absent asks
/// given() first.
bool flag_argument(const nlohmann::json& args, const char* key);

}  // namespace havenoro::daemon
