#include "havenoro_relay/ctl/text_table.h"

#include <algorithm>

namespace havenoro::ctl {
namespace {

// Columns are aligned by code point, not byte: a domain's UTF-8 reason
// text should not shift the columns after it.
size_t width(const std::string& s) {
  return static_cast<size_t>(std::count_if(
      s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

}  // namespace

TextTable::TextTable(std::vector<std::string> header) {
  if (!header.empty()) rows_.push_back(std::move(header));
}

void TextTable::add(std::vector<std::string> row) {
  rows_.push_back(std::move(row));
}

std::string TextTable::str() const {
  std::vector<size_t> widths;
  for (const auto& row : rows_) {
    widths.resize(std::max(widths.size(), row.size()), 0);
    for (size_t i = 0; i < row.size(); ++i)
      widths[i] = std::max(widths[i], width(row[i]));
  }
  std::string out;
  for (const auto& row : rows_) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size())
        line += std::string(widths[i] - width(row[i]) + 2, ' ');
    }
    out += line + "\n";
  }
  return out;
}

std::string key_values(
    const std::vector<std::pair<std::string, std::string>>& rows) {
  TextTable table;
  for (const auto& [key, value] : rows) table.add({key, value});
  return table.str();
}

}  // namespace havenoro::ctl
