#include "report.h"

#include <fmt/format.h>

#include <algorithm>

namespace havenoro::bench {

const char* verdict_name(Verdict v) {
  switch (v) {
    case Verdict::kMet:
      return "met";
    case Verdict::kMissed:
      return "MISSED";
    case Verdict::kFailed:
      return "FAILED";
    case Verdict::kNone:
      break;
  }
  return "";
}

void Report::failed(const std::string& scenario, const std::string& why) {
  rows_.push_back({scenario, "could not run", "-", "", Verdict::kFailed, why});
}

size_t Report::missed() const {
  return std::count_if(rows_.begin(), rows_.end(), [](const Row& r) {
    return r.verdict == Verdict::kMissed || r.verdict == Verdict::kFailed;
  });
}

void Report::print(std::ostream& out, const std::string& machine) const {
  std::vector<std::string> notes;
  std::vector<std::string> figures;
  for (const auto& r : rows_) {
    figures.push_back(r.figure);
    if (!r.note.empty()) {
      notes.push_back(r.note);
      figures.back() += fmt::format(" [{}]", notes.size());
    }
  }
  size_t w[4] = {8, 6, 5, 4};
  for (size_t i = 0; i < rows_.size(); ++i) {
    w[0] = std::max(w[0], rows_[i].scenario.size());
    w[1] = std::max(w[1], figures[i].size());
    w[2] = std::max(w[2], rows_[i].value.size());
    w[3] = std::max(w[3], rows_[i].goal.size());
  }
  auto line = [&](const std::string& a, const std::string& b,
                  const std::string& c, const std::string& d,
                  const std::string& e) {
    out << fmt::format("| {:<{}} | {:<{}} | {:>{}} | {:<{}} | {:<6} |\n", a,
                       w[0], b, w[1], c, w[2], d, w[3], e);
  };
  out << "\nMachine: " << machine << "\n\n";
  line("scenario", "figure", "value", "goal", "");
  out << fmt::format("|{:-<{}}|{:-<{}}|{:->{}}:|{:-<{}}|{:-<8}|\n", "",
                     w[0] + 2, "", w[1] + 2, "", w[2] + 1, "", w[3] + 2, "");
  for (size_t i = 0; i < rows_.size(); ++i) {
    const auto& r = rows_[i];
    line(r.scenario, figures[i], r.value, r.goal, verdict_name(r.verdict));
  }
  for (size_t i = 0; i < notes.size(); ++i) {
    out << fmt::format("\n[{}] {}", i + 1, notes[i]);
  }
  out << "\n";
}

nlohmann::json Report::to_json() const {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& r : rows_) {
    rows.push_back({{"scenario", r.scenario},
                    {"figure", r.figure},
                    {"value", r.value},
                    {"goal", r.goal},
                    {"verdict", verdict_name(r.verdict)},
                    {"note", r.note}});
  }
  return rows;
}

}  // namespace havenoro::bench
