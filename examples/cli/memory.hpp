// How much memory a training run may use: physical RAM and MemAvailable, lowered by the
// limit of the process's memory control group (cgroup v1 or v2) or of any group above it.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>

namespace kadapter::cli::memory {

namespace fs = std::filesystem;

/// The lowest memory limit over the process's control group and its ancestors, and the use
/// of the group that sets it, less its inactive file cache (which the kernel reclaims before
/// it runs out, as MemAvailable counts it). No limit: `limit` is empty.
struct CgroupMemory {
  std::optional<double> limit;
  double used = 0;
};

namespace detail {

/// The number in a one-value cgroup file; empty for "max", a missing file, or v1's "no
/// limit" (about 2^63).
inline std::optional<double> read_value(const fs::path& file) {
  std::ifstream f(file);
  std::string s;
  if (!(f >> s) || s == "max") return std::nullopt;
  char* end = nullptr;
  const double x = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || *end != '\0' || !(x >= 0) || x >= 1e18) return std::nullopt;
  return x;
}

/// The value of @p key in a `memory.stat` file, 0 when absent.
inline double read_stat(const fs::path& file, std::string_view key) {
  std::ifstream f(file);
  std::string k;
  double v = 0;
  while (f >> k >> v)
    if (k == key) return v;
  return 0;
}

/// The group's directory and its ancestors up to the hierarchy's root @p mount (which
/// stands for the process's own group inside a cgroup namespace).
inline std::vector<fs::path> group_and_ancestors(const fs::path& mount, const std::string& path) {
  std::vector<fs::path> dirs;
  fs::path rel = fs::path(path).relative_path();
  while (!rel.empty()) {
    dirs.push_back(mount / rel);
    rel = rel.parent_path();
  }
  dirs.push_back(mount);
  return dirs;
}

}  // namespace detail

/// The memory cgroup limit of this process (@p self: `/proc/self/cgroup`; @p root: where the
/// hierarchies are mounted). v2: `memory.max`, `memory.current`, `inactive_file`; v1 (under
/// `memory/`): `memory.limit_in_bytes`, `memory.usage_in_bytes`, `total_inactive_file`.
inline CgroupMemory cgroup_memory(const fs::path& self = "/proc/self/cgroup", const fs::path& root = "/sys/fs/cgroup") {
  CgroupMemory best;
  auto consider = [&](const fs::path& dir, const char* limit_file, const char* usage_file, const char* inactive_key) {
    const auto limit = detail::read_value(dir / limit_file);
    if (!limit || (best.limit && *best.limit <= *limit)) return;
    best.limit = limit;
    const double usage = detail::read_value(dir / usage_file).value_or(0.0);
    best.used = std::max(0.0, usage - detail::read_stat(dir / "memory.stat", inactive_key));
  };
  std::ifstream f(self);
  std::string line;
  while (std::getline(f, line)) {
    // "ID:CONTROLLERS:PATH"; v2 is "0::PATH".
    const auto a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (controllers.empty()) {
      for (const fs::path& dir : detail::group_and_ancestors(root, path))
        consider(dir, "memory.max", "memory.current", "inactive_file");
    } else if (("," + controllers + ",").find(",memory,") != std::string::npos) {
      for (const fs::path& dir : detail::group_and_ancestors(root / "memory", path))
        consider(dir, "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file");
    }
  }
  return best;
}

/// MemAvailable of @p meminfo in bytes, if it has it.
inline std::optional<double> mem_available(const fs::path& meminfo = "/proc/meminfo") {
  std::ifstream f(meminfo);
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string key;
    double kb = 0;
    if (in >> key >> kb && key == "MemAvailable:") return kb * 1024.0;
  }
  return std::nullopt;
}

/// The memory this process may use in all: physical RAM, or its cgroup limit when lower;
/// empty when neither is known.
inline std::optional<double> total_bytes(const CgroupMemory& cg = cgroup_memory()) {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  std::optional<double> total;
  if (pages > 0 && page > 0) total = static_cast<double>(pages) * static_cast<double>(page);
  if (cg.limit && (!total || *cg.limit < *total)) total = cg.limit;
  return total;
}

/// The memory still free for this process: MemAvailable, or what is left under the cgroup
/// limit when that is less (0 when the group is full); empty when neither is known.
inline std::optional<double> available_bytes(const CgroupMemory& cg = cgroup_memory(),
                                             std::optional<double> meminfo_available = mem_available()) {
  std::optional<double> avail = meminfo_available;
  if (cg.limit) {
    const double left = std::max(0.0, *cg.limit - cg.used);
    if (!avail || left < *avail) avail = left;
  }
  return avail;
}

}  // namespace kadapter::cli::memory
