#include "havenoro_relay/daemon/command_arguments.h"

#include <fmt/format.h>

#include "havenoro_relay/panel/domain_settings.h"

namespace havenoro::daemon {

using nlohmann::json;

const json* given(const json& args, const char* key) {
  auto it = args.find(key);
  return it == args.end() || it->is_null() ? nullptr : &*it;
}

std::optional<std::string> domain_argument(const json& args) {
  const json* v = given(args, "domain");
  if (!v) return std::nullopt;
  if (!v->is_string()) throw ArgumentError("\"domain\" must be a string");
  auto name = v->get<std::string>();
  if (!panel::is_domain_name(name)) {
    throw ArgumentError(
        fmt::format("'{}' is not a domain name (lowercase, xn-- form)",
                    name.substr(0, 255)));
  }
  return name;
}

bool flag_argument(const json& args, const char* key) {
  auto it = args.find(key);
  if (it == args.end()) return false;
  if (!it->is_boolean())
    throw ArgumentError(fmt::format("\"{}\" must be true or false", key));
  return it->get<bool>();
}

}  // namespace havenoro::daemon
