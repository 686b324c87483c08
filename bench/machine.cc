#include "machine.h"

#include <fmt/format.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "child_process.h"

namespace havenoro::bench {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("model name")) {
      auto colon = line.find(':');
      return line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  }
  return "unknown";
}

long mem_total_mib() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  long kib = 0;
  in >> key >> kib;
  return kib / 1024;
}

// The mount that holds `path`: the longest mount point that prefixes it.
json mount_of(const fs::path& path) {
  std::ifstream in("/proc/mounts");
  std::string dev, point, type, options, line;
  json best = {{"mount_point", ""}};
  std::string target = fs::weakly_canonical(path).string();
  while (std::getline(in, line)) {
    std::istringstream f(line);
    f >> dev >> point >> type >> options;
    bool under =
        target == point || point == "/" || target.starts_with(point + "/");
    if (under &&
        point.size() >= best["mount_point"].get<std::string>().size()) {
      best = {{"mount_point", point}, {"type", type}, {"options", options}};
    }
  }
  return best;
}

std::string exim_version(const fs::path& exim, const fs::path& config) {
  auto run = run_timed({exim.string(), "-C", config.string(), "-bV"},
                       std::chrono::seconds(10), true);
  auto end = run.out.find('\n');
  return run.out.substr(0, end);
}

}  // namespace

double load_average() {
  std::ifstream in("/proc/loadavg");
  double one = 0;
  in >> one;
  return one;
}

json describe_machine(const fs::path& workdir, const fs::path& exim,
                      const fs::path& exim_config) {
  struct utsname u;
  ::uname(&u);
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return {{"cpu", cpu_model()},
          {"cores", ::sysconf(_SC_NPROCESSORS_ONLN)},
          {"memory_mib", mem_total_mib()},
          {"kernel", std::string(u.sysname) + " " + u.release},
          {"hostname", host},
          {"workdir", workdir.string()},
          {"workdir_fs", mount_of(workdir)},
          {"exim", exim_version(exim, exim_config)},
          {"build_type", HAVENORO_BENCH_BUILD_TYPE},
          {"compiler", __VERSION__},
          {"load_average_1m_at_start", load_average()}};
}

std::string machine_line(const json& m) {
  const json& fs = m["workdir_fs"];
  return fmt::format(
      "{}; {} cores, {} MiB; {}; output on {} ({}); {}; build {}; load {:.2f} "
      "at start",
      m.value("cpu", "?"), m.value("cores", 0), m.value("memory_mib", 0),
      m.value("kernel", "?"), fs.value("type", "?"), fs.value("options", "?"),
      m.value("exim", "?"), m.value("build_type", "?"),
      m.value("load_average_1m_at_start", 0.0));
}

}  // namespace havenoro::bench
