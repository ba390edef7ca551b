// The kadapter command-line program: one binary, one subcommand per job.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <new>
#include <string>
#include <vector>
#include <unistd.h>

#include "cli/convert.hpp"
#include "cli/encode.hpp"
#include "cli/grads.hpp"
#include "cli/demo.hpp"
#include "cli/train.hpp"

namespace {

constexpr const char* kUsage =
    "usage: kadapter <command> [options]\n"
    "commands:\n"
    "  encode   run the frozen encoder on a batch and write its hidden states\n"
    "  grads    one forward and backward pass of a task model: loss, logits, gradients\n"
    "  pretrain train a factual (fac) or linguistic (lin) adapter\n"
    "  finetune train a downstream task (relation, entity-typing, multiple-choice) with adapters\n"
    "  evaluate score a finished run on its dev or test split\n"
    "  demo     pre-train both adapters and fine-tune with each on the bundled data\n"
    "  convert  write a PyTorch checkpoint (pytorch_model.bin) as safetensors, for --adapter-dirs\n"
    "Run 'kadapter <command> --help' for the options of a command.\n";

}  // namespace

int main(int argc, char** argv) {
#if defined(_OPENMP)
  // OpenMP threads that wait for work spin only briefly (GOMP_SPINCOUNT=1000, tens of
  // microseconds) and then sleep, unless the environment sets a policy. libgomp's default
  // spins for much longer: when another program shares the cores, the spinning threads take
  // its time and each other's (training ran about half as fast on a loaded 2-core machine, and
  // up to ten times slower with more programs running), while on a quiet machine the short
  // spin costs under 10 % (README.md). The runtime reads its settings once, before main: the
  // program starts itself again with the variable set (if that fails, it goes on as it is).
  if (std::getenv("OMP_WAIT_POLICY") == nullptr && std::getenv("GOMP_SPINCOUNT") == nullptr &&
      ::setenv("GOMP_SPINCOUNT", "1000", 1) == 0) {
    ::execv("/proc/self/exe", argv);
    ::unsetenv("GOMP_SPINCOUNT");
  }
#endif
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
    if (command == "demo") return kadapter::cli::run_demo(args);
    if (command == "convert") return kadapter::cli::run_convert(args);
    if (command == "pretrain" || command == "finetune" || command == "evaluate")
      return kadapter::cli::run_train_command(command, args);
    std::fprintf(stderr, "kadapter: unknown command '%s'\n%s", command.c_str(), kUsage);
    return 2;
  } catch (const kadapter::Error& e) {
    std::fprintf(stderr, "kadapter %s: error: %s\n", command.c_str(), e.what());
    return 2;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr,
                 "kadapter %s: error: out of memory: the sizes asked for do not fit in this machine's memory "
                 "(check the sizes in the model's config.json, --batch-size, --max-seq-length and the adapter flags)\n",
                 command.c_str());
    return 2;
  } catch (const std::filesystem::filesystem_error& e) {
    std::fprintf(stderr, "kadapter %s: error: %s\n", command.c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kadapter %s: internal error: %s\n", command.c_str(), e.what());
    return 1;
  }
}
