#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "havenoro_relay/util/file_stamp.h"

namespace havenoro::render {

/// The server-wide choices that shape the generic Exim snippets. Nothing
/// per domain: relay domains live in lookup files, not in snippets.
struct SnippetParams {
  std::string ca_certificates = "system";
  bool allow_private_relays = false;
  std::chrono::seconds connect_timeout{15};
  std::chrono::seconds command_timeout{30};

  bool operator==(const SnippetParams&) const = default;
};

/// The snippets of one generation: file name -> text. generation.conf is
/// apart because it names the generation's own directory.
using SnippetSet = std::map<std::string, std::string>;

/// The file names of a SnippetSet, in the order Exim includes them.
inline constexpr const char* kSnippetNames[] = {
    "routers.conf", "transports.conf", "authenticators.conf"};

/// A template that is missing or does not parse.
class RenderError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Renders `<name>.mustache` from `templates_dir` for every snippet.
/// Throws RenderError.
SnippetSet render_snippets(const std::filesystem::path& templates_dir,
                           const SnippetParams& params);

/// The snippets of the last render, kept while their templates and
/// parameters stay the same: a save changes lookup files only, and parsing
/// the templates again for each one would be most of its own cost.
class SnippetCache {
 public:
  /// What render_snippets(templates_dir, params) returns now. A template
  /// file that changed (by its stamp) is rendered again. Throws
  /// RenderError, and keeps nothing then.
  const SnippetSet& get(const std::filesystem::path& templates_dir,
                        const SnippetParams& params);

 private:
  std::filesystem::path dir_;
  SnippetParams params_;
  std::vector<std::optional<util::FileStamp>> stamps_;
  std::optional<SnippetSet> set_;
};

/// Renders generation.conf for the generation kept in `generation_dir`,
/// whose lookup files are below `output_dir`. Throws RenderError.
std::string render_generation_conf(const std::filesystem::path& templates_dir,
                                   const std::filesystem::path& generation_dir,
                                   const std::filesystem::path& output_dir,
                                   unsigned long generation);

}  // namespace havenoro::render
