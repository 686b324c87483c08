// Writes the snippets rendered with default parameters into a directory:
// the golden files that tests/unit/snippets_test.cc compares against.

#include <fstream>
#include <iostream>

#include "havenoro_relay/render/snippets.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: render_golden TEMPLATES_DIR GOLDEN_DIR\n";
    return 2;
  }
  std::filesystem::path templates = argv[1];
  std::filesystem::path golden = argv[2];
  havenoro::render::SnippetParams params;
  for (const auto& [name, text] :
       havenoro::render::render_snippets(templates, params)) {
    std::ofstream(golden / name) << text;
  }
  std::ofstream(golden / "generation.conf")
      << havenoro::render::render_generation_conf(
             templates, "/etc/exim4/havenoro-relay/generations/7",
             "/etc/exim4/havenoro-relay", 7);
  return 0;
}
