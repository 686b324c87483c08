#pragma once

#include <string>
#include <string_view>
#include <type_traits>

namespace havenoro::util {

/// One log line: a stable event name, then key=value fields, as
/// docs/log-messages.md lists them. A value with a space, a quote, an
/// equals sign or a control character is quoted, so each line splits back
/// into its fields.
class LogEvent {
 public:
  explicit LogEvent(std::string_view name) : line_(name) {}

  /// Appends `key=value`; text is quoted when it must be.
  LogEvent& add(std::string_view key, std::string_view value);
  LogEvent& add(std::string_view key, const char* value) {
    return add(key, std::string_view(value));
  }
  LogEvent& add(std::string_view key, const std::string& value) {
    return add(key, std::string_view(value));
  }
  LogEvent& add(std::string_view key, bool value) {
    return add(key, std::string_view(value ? "yes" : "no"));
  }
  template <class T>
  requires std::is_arithmetic_v<T> LogEvent& add(std::string_view key,
                                                 T value) {
    return add(key, std::string_view(std::to_string(value)));
  }

  const std::string& str() const { return line_; }

 private:
  std::string line_;
};

/// `value` as it appears after `key=`: bare when it can be, otherwise in
/// double quotes with `"` and `\` escaped and control characters as \xNN.
std::string log_value(std::string_view value);

}  // namespace havenoro::util
