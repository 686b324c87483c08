#pragma once

#include <string>
#include <utility>
#include <vector>

namespace havenoro::ctl {

/// Rows of cells printed in aligned columns, for a person to read. The
/// last column is not padded, so long texts do not push lines wider.
class TextTable {
 public:
  /// A table whose first row is `header`; empty for none.
  explicit TextTable(std::vector<std::string> header = {});

  void add(std::vector<std::string> row);

  /// The table, one line per row, each ending in a newline.
  std::string str() const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

/// "label  value" lines with the values aligned.
std::string key_values(
    const std::vector<std::pair<std::string, std::string>>& rows);

}  // namespace havenoro::ctl
