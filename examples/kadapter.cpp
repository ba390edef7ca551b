// The kadapter command-line program: one binary, one subcommand per job.
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "cli/encode.hpp"
#include "cli/grads.hpp"

namespace {

constexpr const char* kUsage =
    "usage: kadapter <command> [options]\n"
    "commands:\n"
    "  encode   run the frozen encoder on a batch and write its hidden states\n"
    "  grads    one forward and backward pass of a task model: loss, logits, gradients\n"
    "Run 'kadapter <command> --help' for the options of a command.\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (std::string(argv[1]) == "--version") {
    std::printf("kadapter %s\n", kadapter::version_string);
    return 0;
  }
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  try {
    if (command == "encode") return kadapter::cli::run_encode(args);
    if (command == "grads") return kadapter::cli::run_grads(args);
    std::fprintf(stderr, "kadapter: unknown command '%s'\n%s", command.c_str(), kUsage);
    return 2;
  } catch (const kadapter::Error& e) {
    std::fprintf(stderr, "kadapter %s: error: %s\n", command.c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kadapter %s: internal error: %s\n", command.c_str(), e.what());
    return 1;
  }
}
