// Replays the inputs under tests/fuzz/regressions/TARGET/ through the fuzz targets: each one
// once made a reader fail with something other than a clear kadapter::Error.
#define BOOST_TEST_MODULE fuzz_regressions
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "fuzz/targets.hpp"

namespace fs = std::filesystem;

namespace {
const fs::path kDir = fs::path(KA_FUZZ_REGRESSIONS);

std::vector<std::uint8_t> bytes_of(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

template <class Target>
std::size_t replay(const char* name, Target target) {
  std::size_t n = 0;
  for (const auto& e : fs::directory_iterator(kDir / name)) {
    const auto b = bytes_of(e.path());
    BOOST_TEST_CONTEXT(e.path().string()) {
      BOOST_CHECK_NO_THROW(target(b.data(), b.size()));
    }
    ++n;
  }
  return n;
}
}  // namespace

BOOST_AUTO_TEST_CASE(data_sets) { BOOST_TEST(replay("data", ka_fuzz::data) > 0u); }
BOOST_AUTO_TEST_CASE(tokenizers) { BOOST_TEST(replay("tokenizer", ka_fuzz::tokenizer) > 0u); }
BOOST_AUTO_TEST_CASE(safetensors_and_config) { BOOST_TEST(replay("safetensors", ka_fuzz::safetensors) > 0u); }
BOOST_AUTO_TEST_CASE(checkpoints) { BOOST_TEST(replay("checkpoint", ka_fuzz::checkpoint) > 0u); }
BOOST_AUTO_TEST_CASE(torch_checkpoints) {
  // The fuzzing seeds (the committed checkpoints) go through the target too; it aborts if a
  // checkpoint it reads converts to other bytes.
  for (const char* name : {"state_zip.pt", "state_legacy.pt", "fac_official_legacy.bin"}) {
    const auto b = bytes_of(fs::path(KA_FIXTURE_DIR) / "torch" / name);
    BOOST_TEST_REQUIRE(b.size() > 1000u);
    BOOST_CHECK_NO_THROW(ka_fuzz::torch(b.data(), b.size()));
  }
  if (fs::exists(kDir / "torch")) BOOST_TEST(replay("torch", ka_fuzz::torch) > 0u);
}
