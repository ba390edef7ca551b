// libFuzzer entry point for one target of targets.hpp, chosen by KA_FUZZ_TARGET (see README.md).
#include "fuzz/targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ka_fuzz::KA_FUZZ_TARGET(data, size);
  return 0;
}
