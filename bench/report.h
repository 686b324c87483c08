#pragma once

#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

namespace havenoro::bench {

/// Whether a figure reached its goal.
enum class Verdict { kNone, kMet, kMissed, kFailed };

/// One line of the table.
struct Row {
  std::string scenario;
  std::string figure;
  std::string value;
  std::string goal;  ///< "" when the figure has none
  Verdict verdict = Verdict::kNone;
  std::string note;  ///< shown under the table, numbered
};

/// The figures of one run, as a table and as JSON.
class Report {
 public:
  void add(Row row) { rows_.push_back(std::move(row)); }
  /// A scenario that could not run: one row saying why.
  void failed(const std::string& scenario, const std::string& why);

  void print(std::ostream& out, const std::string& machine) const;
  nlohmann::json to_json() const;
  size_t missed() const;

 private:
  std::vector<Row> rows_;
};

/// "met", "MISSED", "FAILED" or "".
const char* verdict_name(Verdict v);

/// kMet when `ok`, else kMissed.
inline Verdict verdict(bool ok) {
  return ok ? Verdict::kMet : Verdict::kMissed;
}

}  // namespace havenoro::bench
