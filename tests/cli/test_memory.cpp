// The CLI's memory limits: the lowest cgroup limit over the process's group and its
// ancestors (v1 and v2), its use less the inactive file cache, and what is left of it next to
// MemAvailable. On made-up /proc/self/cgroup and /sys/fs/cgroup trees.
#define BOOST_TEST_MODULE memory
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include "cli/memory.hpp"

namespace fs = std::filesystem;
namespace mem = kadapter::cli::memory;

namespace {

constexpr double GiB = 1073741824.0;

struct Tree {
  fs::path root = fs::temp_directory_path() / ("kadapter_memory_" + std::to_string(::getpid()));
  Tree() {
    fs::remove_all(root);
    fs::create_directories(root / "sys");
  }
  ~Tree() { fs::remove_all(root); }
  void write(const fs::path& rel, const std::string& text) const {
    fs::create_directories((root / rel).parent_path());
    std::ofstream(root / rel) << text;
  }
  mem::CgroupMemory read() const { return mem::cgroup_memory(root / "self", root / "sys"); }
};

}  // namespace

BOOST_AUTO_TEST_CASE(v1_limit_of_a_parent_group) {
  Tree t;
  t.write("self", "5:cpu,cpuacct:/a/b\n4:memory:/a/b\n0::/\n");
  t.write("sys/memory/a/b/memory.limit_in_bytes", "9223372036854771712\n");  // none
  t.write("sys/memory/a/b/memory.usage_in_bytes", "1073741824\n");
  t.write("sys/memory/a/memory.limit_in_bytes", "4294967296\n");
  t.write("sys/memory/a/memory.usage_in_bytes", "3221225472\n");
  t.write("sys/memory/a/memory.stat", "cache 2147483648\ntotal_inactive_file 1073741824\n");
  t.write("sys/memory/memory.limit_in_bytes", "9223372036854771712\n");
  const mem::CgroupMemory cg = t.read();
  BOOST_REQUIRE(cg.limit.has_value());
  BOOST_TEST(*cg.limit == 4 * GiB);
  BOOST_TEST(cg.used == 2 * GiB);  // 3 GiB in use, 1 GiB of it inactive file cache
  BOOST_TEST(*mem::available_bytes(cg, 10 * GiB) == 2 * GiB);
  BOOST_TEST(*mem::available_bytes(cg, 1 * GiB) == 1 * GiB);  // MemAvailable lower still
  BOOST_TEST(*mem::total_bytes(cg) <= 4 * GiB);
}

BOOST_AUTO_TEST_CASE(v2_full_group_is_known_not_unknown) {
  Tree t;
  t.write("self", "0::/job\n");
  t.write("sys/job/memory.max", "2147483648\n");
  t.write("sys/job/memory.current", "2147483648\n");
  t.write("sys/job/memory.stat", "anon 2147483648\ninactive_file 0\n");
  t.write("sys/memory.max", "max\n");
  const mem::CgroupMemory cg = t.read();
  BOOST_REQUIRE(cg.limit.has_value());
  BOOST_TEST(*cg.limit == 2 * GiB);
  const auto avail = mem::available_bytes(cg, 8 * GiB);
  BOOST_REQUIRE(avail.has_value());  // full: 0 bytes left, which is known
  BOOST_TEST(*avail == 0.0);
}

BOOST_AUTO_TEST_CASE(namespaced_group_reads_the_mount_root) {
  // Inside a cgroup namespace the process's group is the hierarchy's root.
  Tree t;
  t.write("self", "0::/\n");
  t.write("sys/memory.max", "1073741824\n");
  t.write("sys/memory.current", "536870912\n");
  const mem::CgroupMemory cg = t.read();
  BOOST_REQUIRE(cg.limit.has_value());
  BOOST_TEST(*cg.limit == 1 * GiB);
  BOOST_TEST(cg.used == 0.5 * GiB);
}

BOOST_AUTO_TEST_CASE(no_limit_anywhere) {
  Tree t;
  t.write("self", "4:memory:/x\n0::/x\n");
  t.write("sys/memory/x/memory.limit_in_bytes", "9223372036854771712\n");
  t.write("sys/x/memory.max", "max\n");
  const mem::CgroupMemory cg = t.read();
  BOOST_TEST(!cg.limit.has_value());
  BOOST_TEST(*mem::available_bytes(cg, 3 * GiB) == 3 * GiB);
  BOOST_TEST(!mem::available_bytes(cg, std::nullopt).has_value());
  // No /proc/self/cgroup at all (not Linux, or /proc not mounted).
  BOOST_TEST(!mem::cgroup_memory(t.root / "missing", t.root / "sys").limit.has_value());
}

BOOST_AUTO_TEST_CASE(meminfo_with_lines_without_units) {
  Tree t;
  t.write("meminfo", "MemTotal:       16000000 kB\nHugePages_Total:       0\nMemAvailable:    8000000 kB\n");
  const auto a = mem::mem_available(t.root / "meminfo");
  BOOST_REQUIRE(a.has_value());
  BOOST_TEST(*a == 8000000.0 * 1024.0);
  BOOST_TEST(!mem::mem_available(t.root / "missing").has_value());
}
