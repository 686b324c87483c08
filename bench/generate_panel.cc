// havenoro-bench-panel: writes a panel tree of N domains for trying the
// daemon by hand, the same tree havenoro-bench generates for a seed.
//
//   havenoro-bench-panel --domains 10000 --root /tmp/panel [--seed 1]

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>

#include "panel_generator.h"

int main(int argc, char** argv) {
  using namespace havenoro::bench;
  CLI::App app{"havenoro-bench-panel: generate a panel tree of N domains"};
  PanelSpec spec;
  std::filesystem::path root;
  app.add_option("--domains", spec.domains, "number of mail domains")
      ->check(CLI::Range(1, 10'000'000));
  app.add_option("--seed", spec.seed, "seed; the same seed, the same tree");
  app.add_option("--root", root, "panel root to create (must not exist)")
      ->required();
  app.add_option("--relay-share", spec.mix.relay,
                 "share of domains with a relay of their own")
      ->check(CLI::Range(0.0, 1.0));
  CLI11_PARSE(app, argc, argv);

  if (std::filesystem::exists(root)) {
    std::cerr << "havenoro-bench-panel: '" << root.string()
              << "' exists; give a new directory\n";
    return 1;
  }
  try {
    auto panel = generate_panel(root, spec);
    std::cout << "panel " << root.string() << ": " << panel.domains.size()
              << " domains of " << panel.users.size() << " users ("
              << panel.suspended_users << " suspended)";
    for (auto kind :
         {DomainKind::kRelay, DomainKind::kNoRelay, DomainKind::kSuspended,
          DomainKind::kUserSuspended, DomainKind::kBroken}) {
      std::cout << ", " << kind_name(kind) << "=" << panel.count(kind);
    }
    std::cout << "\n";
  } catch (const std::exception& e) {
    std::cerr << "havenoro-bench-panel: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
