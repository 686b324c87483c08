#include "havenoro_relay/render/snippets.h"

#include <fcntl.h>
#include <fmt/format.h>

#include <fstream>
#include <kainjow/mustache.hpp>
#include <sstream>

namespace havenoro::render {
namespace {

namespace fs = std::filesystem;
using kainjow::mustache::data;
using kainjow::mustache::mustache;

std::string render_file(const fs::path& file, const data& values) {
  std::ifstream in(file);
  if (!in) throw RenderError("cannot read template '" + file.string() + "'");
  std::stringstream text;
  text << in.rdbuf();
  mustache tmpl(text.str());
  if (!tmpl.is_valid()) {
    throw RenderError(
        fmt::format("template '{}': {}", file.string(), tmpl.error_message()));
  }
  // The output is Exim configuration, not HTML: no escaping.
  tmpl.set_custom_escape([](const std::string& s) { return s; });
  return tmpl.render(values);
}

std::string seconds(std::chrono::seconds s) {
  return std::to_string(s.count());
}

}  // namespace

SnippetSet render_snippets(const fs::path& templates_dir,
                           const SnippetParams& p) {
  data values;
  values.set("ca_certificates", p.ca_certificates);
  // Exim refuses to deliver to a host that resolves to itself unless told;
  // a relay on loopback is only wanted where the admin allows it.
  values.set("self_action", p.allow_private_relays ? "send" : "defer");
  values.set("connect_timeout", seconds(p.connect_timeout));
  values.set("command_timeout", seconds(p.command_timeout));

  SnippetSet set;
  for (const char* name : kSnippetNames) {
    set[name] =
        render_file(templates_dir / (std::string(name) + ".mustache"), values);
  }
  return set;
}

namespace {

std::vector<std::optional<util::FileStamp>> template_stamps(
    const fs::path& templates_dir) {
  std::vector<std::optional<util::FileStamp>> stamps;
  for (const char* name : kSnippetNames) {
    auto file = templates_dir / (std::string(name) + ".mustache");
    stamps.push_back(util::stamp_at(AT_FDCWD, file.c_str()));
  }
  return stamps;
}

}  // namespace

const SnippetSet& SnippetCache::get(const fs::path& templates_dir,
                                    const SnippetParams& params) {
  // Stamped before reading: a template written while it is read is seen
  // as changed at the next call.
  auto stamps = template_stamps(templates_dir);
  if (set_ && dir_ == templates_dir && params_ == params && stamps == stamps_)
    return *set_;
  set_.reset();
  set_ = render_snippets(templates_dir, params);
  dir_ = templates_dir;
  params_ = params;
  stamps_ = std::move(stamps);
  return *set_;
}

std::string render_generation_conf(const fs::path& templates_dir,
                                   const fs::path& generation_dir,
                                   const fs::path& output_dir,
                                   unsigned long generation) {
  data values;
  values.set("output_dir", output_dir.string());
  values.set("generation", std::to_string(generation));
  values.set("generation_dir", generation_dir.string());
  return render_file(templates_dir / "generation.conf.mustache", values);
}

}  // namespace havenoro::render
