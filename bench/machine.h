#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace havenoro::bench {

/// What the figures were measured on: CPU, cores, memory, kernel, the
/// file system the output directory lives on, Exim's version, the build,
/// and how busy the machine was when the run started.
nlohmann::json describe_machine(const std::filesystem::path& workdir,
                                const std::filesystem::path& exim,
                                const std::filesystem::path& exim_config);

/// The machine in one line, for the top of the table.
std::string machine_line(const nlohmann::json& machine);

/// The load average over the last minute (/proc/loadavg).
double load_average();

}  // namespace havenoro::bench
