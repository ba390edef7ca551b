// Running a program of this project from a test: its exit status and its output.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

namespace kadapter::test {

/// What a program run gave.
struct Run {
  int code;            ///< exit status (-1 when it did not exit normally)
  std::string output;  ///< stdout and stderr together
};

/// A directory under the system's temporary directory, removed with everything in it.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix)
      : path(std::filesystem::temp_directory_path() / (prefix + std::to_string(::getpid()))) {
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

/// Run `env program args` through the shell, its output captured in @p tmp / log.txt.
/// @param env variable assignments put before the program (may be empty)
inline Run run_program(const std::string& program, const std::string& args, const std::filesystem::path& tmp,
                       const std::string& env = "") {
  const std::filesystem::path log = tmp / "log.txt";
  const std::string cmd = env + (env.empty() ? "" : " ") + "'" + program + "' " + args + " > '" + log.string() + "' 2>&1";
  const int status = std::system(cmd.c_str());
  std::ifstream f(log);
  std::stringstream ss;
  ss << f.rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ss.str()};
}

}  // namespace kadapter::test
