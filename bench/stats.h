#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <vector>

namespace havenoro::bench {

/// Repeated measurements of one figure, summed up: the median is the
/// figure, the rest its spread.
struct Summary {
  size_t n = 0;
  double median = 0;
  double min = 0;
  double max = 0;
  double p10 = 0;
  double p90 = 0;
  double p99 = 0;
  double mean = 0;

  nlohmann::json to_json() const;
};

/// Sums up `values` (any order); an empty list gives n = 0 and zeros.
Summary summarize(std::vector<double> values);

/// The q-quantile (0..1) of sorted values, interpolated between ranks.
double quantile(const std::vector<double>& sorted, double q);

}  // namespace havenoro::bench
