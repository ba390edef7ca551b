// examples/train_entity_typing.cpp end to end on the real all-MiniLM-L6-v2 checkpoint and the
// bundled entity-typing data: it trains (the loss falls from the first epoch to the second),
// scores the dev split, saves what it trained, loads a pre-trained fac adapter, and refuses
// bad flags and files with a message and exit status 2. Skipped when the checkpoint is not
// installed (scripts/setup.sh installs it).
#define BOOST_TEST_MODULE examples
#include "support/skippable_main.hpp"

#include <cmath>
#include <filesystem>
#include <regex>
#include <string>

#include "kadapter/kadapter.hpp"
#include "support/run_program.hpp"

namespace fs = std::filesystem;
using namespace kadapter;

namespace {

const fs::path kModel = KA_MINILM_DIR;
const fs::path kData = KA_DEMO_DATA_DIR "/entity_typing";

using test::Run;

struct TempDir : test::TempDir {
  TempDir() : test::TempDir("kadapter_examples_") {}
};

Run run(const std::string& args, const fs::path& tmp) {
  return test::run_program(KA_EXAMPLE, args, tmp, "OMP_NUM_THREADS=2");
}

std::string common() { return "--model '" + kModel.string() + "' --data '" + kData.string() + "'"; }

/// The value after @p label on the output line that starts with @p prefix.
double number_after(const std::string& out, const std::string& prefix, const std::string& label) {
  const std::regex re("(^|\n)" + prefix + "[^\n]*" + label + " ([-+0-9.eE]+)");
  std::smatch m;
  BOOST_REQUIRE_MESSAGE(std::regex_search(out, m, re), "no \"" << prefix << " ... " << label << "\" in:\n" << out);
  return std::stod(m[2].str());
}

}  // namespace

bool ka_test_can_run(std::string& why_not) {
  if (fs::exists(kModel / "model.safetensors") && fs::exists(kModel / "config.json")) return true;
  why_not = "the all-MiniLM-L6-v2 checkpoint is not installed at " + kModel.string() + " (scripts/setup.sh installs it)";
  return false;
}

BOOST_AUTO_TEST_CASE(trains_scores_and_saves) {
  TempDir tmp;
  const fs::path out = tmp.path / "entity_typing.safetensors";
  const Run r = run(common() + " --epochs 2 --out '" + out.string() + "'", tmp.path);
  BOOST_TEST_REQUIRE(r.code == 0, r.output);
  const double first = number_after(r.output, "epoch 1:", "mean training loss");
  const double second = number_after(r.output, "epoch 2:", "mean training loss");
  BOOST_TEST(std::isfinite(first));
  BOOST_TEST(second < first, "loss " << first << " then " << second);
  const double f1 = number_after(r.output, "dev:", "loose micro F1");
  BOOST_TEST((f1 >= 0.0 && f1 <= 1.0));
  BOOST_TEST(r.output.find("dev: 400 entities") != std::string::npos, r.output);
  // What it saved is an entity-typing model with a fac adapter, under the authors' names.
  io::SafetensorsFile saved(out);
  BOOST_TEST(saved.contains("fac_adapter.adapter.0.down_project.weight"));
  BOOST_TEST(saved.contains("out_proj.weight"));
}

BOOST_AUTO_TEST_CASE(loads_a_pretrained_fac_adapter_of_its_sizes_only) {
  TempDir tmp;
  const EncoderConfig ec = io::read_hf_config(kModel / "config.json");
  auto save_fac = [&](index_t size, const fs::path& file) {
    AdapterConfig ac{ec.hidden, size, 1, 4, 4 * size, 0, 3, {0, ec.layers / 2, ec.layers}, 1e-5};
    TaskConfig tc;
    tc.task = Task::fac;
    tc.num_labels = 5;
    tc.adapters = {"fac"};
    TaskModel<dynamic_adapter, float> fac(tc, ac);
    init_parameters(fac.parameters(), 7);
    io::save_parameters(fac.parameters(), file);
  };
  save_fac(192, tmp.path / "fac.safetensors");
  save_fac(64, tmp.path / "fac64.safetensors");
  const Run good = run(common() + " --epochs 1 --adapter '" + (tmp.path / "fac.safetensors").string() + "'", tmp.path);
  BOOST_TEST(good.code == 0, good.output);
  BOOST_TEST(good.output.find("epoch 1: mean training loss") != std::string::npos, good.output);
  const Run wrong = run(common() + " --adapter '" + (tmp.path / "fac64.safetensors").string() + "'", tmp.path);
  BOOST_TEST(wrong.code == 2, wrong.output);
  BOOST_TEST(wrong.output.find("fac64.safetensors") != std::string::npos, wrong.output);
}

BOOST_AUTO_TEST_CASE(bad_flags_and_files_exit_with_a_message) {
  TempDir tmp;
  struct Case {
    std::string args, says;
  } cases[] = {
      {common() + " --epochs 0", "--epochs 0: expected a whole number"},
      {common() + " --epochs", "--epochs needs a value"},
      {common() + " --learning-rate 1", "unknown flag --learning-rate"},
      {"--model '" + tmp.path.string() + "'", (tmp.path / "config.json").string()},
      {"--model '" + kModel.string() + "' --data '" + tmp.path.string() + "'", (tmp.path / "types.txt").string()},
  };
  for (const auto& c : cases) {
    const Run r = run(c.args, tmp.path);
    BOOST_TEST(r.code == 2, c.args << "\n" << r.output);
    BOOST_TEST(r.output.find(c.says) != std::string::npos, c.args << "\n" << r.output);
  }
}
