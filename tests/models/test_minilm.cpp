// A real checkpoint: sentence-transformers/all-MiniLM-L6-v2 (BERT family, 6 layers, 384
// hidden), unpacked by scripts/setup.sh into models/all-MiniLM-L6-v2. Its reference hidden
// states were computed by HuggingFace transformers (tests/fixtures/make_encoder_fixtures.py
// --minilm DIR). Skipped when the checkpoint is not installed.
#define BOOST_TEST_MODULE minilm
#include "support/skippable_main.hpp"

#include <filesystem>

#include "kadapter/kadapter.hpp"
#include "support/compare.hpp"

namespace fs = std::filesystem;
using namespace kadapter;

namespace {
const fs::path kModel = KA_MINILM_DIR;
const fs::path kReference = fs::path(KA_FIXTURE_DIR) / "encoder" / "minilm_reference.safetensors";
}  // namespace

bool ka_test_can_run(std::string& why_not) {
  if (fs::exists(kModel / "model.safetensors") && fs::exists(kModel / "config.json")) return true;
  why_not = "the all-MiniLM-L6-v2 checkpoint is not installed at " + kModel.string() +
            " (scripts/setup.sh installs it)";
  return false;
}

BOOST_AUTO_TEST_CASE(real_minilm_matches_huggingface) {
  io::SafetensorsFile ref(kReference);
  const auto& shape = ref.info("input_ids").shape;
  const auto ids = ref.read<std::int64_t>("input_ids");
  const auto mask = ref.read<std::int64_t>("attention_mask");
  const auto types = ref.read<std::int64_t>("token_type_ids");
  const TokenBatch batch{shape[0], shape[1], ids, mask, types};
  const std::string preset = io::with_encoder_dir<float>(kModel, [&](auto& enc, const auto& report) {
    // The real checkpoint carries the pooler and a position_ids buffer: known, ignored.
    BOOST_TEST(report.ignored.size() == 3u);
    HiddenStates<float> states(enc.config().layers, {0, 3, 6});
    enc.forward(states, batch);
    for (index_t k : states.kept()) {
      const auto expected = ref.read<float>("hidden_states." + std::to_string(k));
      const auto got = states[k].span();
      const double rel = test::relative_error(got, std::span<const float>(expected));
      const double mx = test::max_error_over_max(got, std::span<const float>(expected));
      BOOST_TEST_MESSAGE("hidden_states." << k << ": relative " << rel << ", max/max " << mx);
      BOOST_TEST(rel < 1e-5);
      BOOST_TEST(mx < 1e-5);
    }
    return preset_name(enc.config());
  });
  // config.json of all-MiniLM-L6-v2 equals the compiled preset, so dispatch picks it.
  BOOST_TEST(preset == "minilm_l6_h384");
}
