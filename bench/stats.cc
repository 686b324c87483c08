#include "stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace havenoro::bench {

double quantile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  double rank = q * static_cast<double>(sorted.size() - 1);
  size_t lo = static_cast<size_t>(std::floor(rank));
  size_t hi = std::min(lo + 1, sorted.size() - 1);
  double frac = rank - static_cast<double>(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

Summary summarize(std::vector<double> values) {
  Summary s;
  s.n = values.size();
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  s.median = quantile(values, 0.5);
  s.min = values.front();
  s.max = values.back();
  s.p10 = quantile(values, 0.1);
  s.p90 = quantile(values, 0.9);
  s.p99 = quantile(values, 0.99);
  s.mean = std::accumulate(values.begin(), values.end(), 0.0) /
           static_cast<double>(values.size());
  return s;
}

nlohmann::json Summary::to_json() const {
  return {{"n", n},     {"median", median}, {"min", min}, {"max", max},
          {"p10", p10}, {"p90", p90},       {"p99", p99}, {"mean", mean}};
}

}  // namespace havenoro::bench
