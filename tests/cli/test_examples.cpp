// examples/train_entity_typing.cpp end to end on the real all-MiniLM-L6-v2 checkpoint and the
// bundled entity-typing data: it trains (the loss falls from the first epoch to the second,
// the dev strict accuracy beats any constant answer), saves what it trained, loads a
// pre-trained adapter of its sizes and refuses others, and refuses bad flags and files with a
// message and exit status 2. Skipped when the checkpoint is not
// installed (scripts/setup.sh installs it).
#define BOOST_TEST_MODULE examples
#include "support/skippable_main.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

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
  // Better than any constant answer: the share of dev entities whose type set is the most
  // common one is the best strict accuracy without looking at the sentence.
  const auto dev = io::read_entity_typing(kData / "dev.json").examples;
  std::map<std::vector<std::string>, std::size_t> sets;
  std::size_t most = 0;
  for (const auto& x : dev) {
    auto l = x.labels;
    std::sort(l.begin(), l.end());
    most = std::max(most, ++sets[l]);
  }
  const double constant = static_cast<double>(most) / static_cast<double>(dev.size());
  const double strict = number_after(r.output, "dev:", "strict accuracy");
  BOOST_TEST(strict > constant, "strict accuracy " << strict << ", the best constant answer " << constant);
  BOOST_TEST(r.output.find("dev: " + std::to_string(dev.size()) + " entities") != std::string::npos, r.output);
  // What it saved is an entity-typing model with a fac adapter, under the authors' names.
  io::SafetensorsFile saved(out);
  BOOST_TEST(saved.contains("fac_adapter.adapter.0.down_project.weight"));
  BOOST_TEST(saved.contains("out_proj.weight"));
  // Its metadata says how to use it: the labels in logit order (as many as out_proj has
  // rows), the adapter's plug-in points (a fresh one taps states 0, L/2 and L of the 6-layer
  // MiniLM) and the encoder it was trained on.
  const auto& meta = saved.metadata();
  BOOST_TEST(meta.at("task") == "entity_typing");
  const auto types = io::read_label_list(kData / "types.txt");
  const auto labels = nlohmann::json::parse(meta.at("labels"));
  BOOST_TEST(labels == nlohmann::json(types));
  BOOST_TEST(saved.info("out_proj.weight").shape.at(0) == static_cast<std::int64_t>(types.size()));
  BOOST_TEST(meta.at("adapter") == "fac");
  const auto ac = nlohmann::json::parse(meta.at("adapter_config"));
  BOOST_TEST(ac.at("adapter_list") == nlohmann::json({0, 3, 6}));
  BOOST_TEST(ac.at("hidden") == saved.info("fac_adapter.adapter.0.down_project.weight").shape.at(1));
  BOOST_TEST(ac.at("adapter_size") == saved.info("fac_adapter.adapter.0.down_project.weight").shape.at(0));
  BOOST_TEST(ac.at("adapter_size") == 192);  // the example's fresh adapter: 192 wide, 1 layer, 4 heads
  BOOST_TEST(ac.at("adapter_transformer_layers") == 1);
  BOOST_TEST(ac.at("adapter_heads") == 4);
  BOOST_TEST(ac.at("adapter_skip_layers") == 0);
  BOOST_TEST(meta.at("max_seq_length") == "64");
  FrozenEncoder<dynamic_encoder, float> encoder(io::read_hf_config(kModel / "config.json"));
  io::load_encoder_weights(encoder, io::SafetensorsFile(kModel / "model.safetensors"));
  BOOST_TEST(meta.at("backbone") == io::backbone_id(encoder));
}

namespace {

/// A `kadapter pretrain` output directory: adapter_config.json as written, and the weights of
/// a fac model with adapters of width @p size (which may disagree with the file on purpose).
fs::path pretrain_dir(const fs::path& dir, const nlohmann::json& config, index_t size) {
  fs::create_directories(dir);
  std::ofstream(dir / "adapter_config.json") << config.dump();
  const EncoderConfig ec = io::read_hf_config(kModel / "config.json");
  AdapterConfig ac{ec.hidden, size, 1, 4, 4 * size, 0, 3, {}, 1e-5};
  for (std::size_t k = 0; k < 3; ++k) ac.plug_in[k] = config["adapter_list"][k].get<index_t>();
  TaskConfig tc;
  tc.task = Task::fac;
  tc.num_labels = 5;
  tc.adapters = {"fac"};
  TaskModel<dynamic_adapter, float> fac(tc, ac);
  init_parameters(fac.parameters(), 7);
  io::save_parameters(fac.parameters(), dir / "model.safetensors");
  return dir;
}

nlohmann::json fac_config() {
  return {{"task", "fac"},          {"hidden", 384},  {"adapter_size", 192}, {"adapter_transformer_layers", 1},
          {"adapter_heads", 4},     {"adapter_skip_layers", 0}, {"adapter_list", {0, 3, 6}}};
}

}  // namespace

BOOST_AUTO_TEST_CASE(loads_a_pretrained_adapter_of_its_sizes_only) {
  TempDir tmp;
  BOOST_TEST_REQUIRE(io::read_hf_config(kModel / "config.json").hidden == 384);
  // Plug-in points other than the program's own default, on this very encoder.
  FrozenEncoder<dynamic_encoder, float> encoder(io::read_hf_config(kModel / "config.json"));
  io::load_encoder_weights(encoder, io::SafetensorsFile(kModel / "model.safetensors"));
  auto config = fac_config();
  config["adapter_list"] = {0, 2, 4};
  config["backbone"] = io::backbone_id(encoder);
  const fs::path good = pretrain_dir(tmp.path / "fac", config, 192);
  const Run loaded = run(common() + " --epochs 1 --adapter '" + good.string() + "'", tmp.path);
  BOOST_TEST_REQUIRE(loaded.code == 0, loaded.output);
  BOOST_TEST(loaded.output.find("loaded the fac adapter of " + good.string()) != std::string::npos, loaded.output);
  // The loaded weights are the ones trained from: the first epoch differs from a fresh start.
  const Run fresh = run(common() + " --epochs 1", tmp.path);
  BOOST_TEST_REQUIRE(fresh.code == 0, fresh.output);
  BOOST_TEST(number_after(loaded.output, "epoch 1:", "mean training loss") !=
             number_after(fresh.output, "epoch 1:", "mean training loss"));

  struct Case {
    std::string dir;
    nlohmann::json config;
    index_t weights_size;
    std::string says;
  };
  auto with = [](const char* field, nlohmann::json v) {
    auto c = fac_config();
    c[field] = std::move(v);
    return c;
  };
  const Case cases[] = {
      {"narrow", with("adapter_size", 64), 192, "tensors do not fit the model"},
      {"wide", fac_config(), 64, "tensors do not fit the model"},
      {"other_model", with("hidden", 768), 192, "field \"hidden\" is 768, but the encoder's hidden size is 384"},
      {"finetuned", with("task", "relation"), 192, "field \"task\" is \"relation\", expected \"fac\" or \"lin\""},
      {"deep", with("adapter_list", {0, 3, 7}), 192, "expected hidden-state indices 0..6"},
      {"other_weights", with("backbone", "0123456789abcdef:22565376"), 192, "an adapter pre-trained on another model"},
  };
  for (const auto& c : cases) {
    const fs::path d = pretrain_dir(tmp.path / c.dir, c.config, c.weights_size);
    const Run r = run(common() + " --adapter '" + d.string() + "'", tmp.path);
    BOOST_TEST(r.code == 2, c.dir << "\n" << r.output);
    BOOST_TEST(r.output.find(d.string()) != std::string::npos, c.dir << "\n" << r.output);
    BOOST_TEST(r.output.find(c.says) != std::string::npos, c.dir << "\n" << r.output);
  }
  auto missing = fac_config();
  missing.erase("adapter_heads");
  const fs::path d = pretrain_dir(tmp.path / "missing", missing, 192);
  const Run r = run(common() + " --adapter '" + d.string() + "'", tmp.path);
  BOOST_TEST(r.code == 2, r.output);
  BOOST_TEST(r.output.find((d / "adapter_config.json").string() + ": field \"adapter_heads\" is missing") != std::string::npos, r.output);
  const Run none = run(common() + " --adapter '" + tmp.path.string() + "'", tmp.path);
  BOOST_TEST(none.code == 2, none.output);
  BOOST_TEST(none.output.find((tmp.path / "adapter_config.json").string() + ": cannot open") != std::string::npos, none.output);
}

BOOST_AUTO_TEST_CASE(bad_flags_and_files_exit_with_a_message) {
  TempDir tmp;
  struct Case {
    std::string args, says;
  } cases[] = {
      {common() + " --epochs 0", "--epochs 0: expected a whole number"},
      {common() + " --epochs", "--epochs needs a value"},
      {common() + " --learning-rate 1", "unknown flag --learning-rate"},
      {common() + " --verbose", "unknown flag --verbose"},
      {common() + " --max-seq-length 4", "--max-seq-length 4: expected a whole number from 8"},
      {common() + " --max-seq-length 600", "--max-seq-length 600 needs 600 position embeddings"},
      {common() + " --out '" + (tmp.path / "no" / "x.safetensors").string() + "'", "expected a file in an existing directory"},
      {common() + " --out '" + tmp.path.string() + "'", "expected a file in an existing directory"},
      {"--model '" + tmp.path.string() + "'", (tmp.path / "config.json").string()},
      {"--model '" + kModel.string() + "' --data '" + tmp.path.string() + "'", (tmp.path / "types.txt").string()},
  };
  for (const auto& c : cases) {
    const Run r = run(c.args, tmp.path);
    BOOST_TEST(r.code == 2, c.args << "\n" << r.output);
    BOOST_TEST(r.output.find(c.says) != std::string::npos, c.args << "\n" << r.output);
  }
  // A type that types.txt does not list: the error names the file.
  fs::copy_file(kData / "types.txt", tmp.path / "types.txt");
  fs::copy_file(kData / "dev.json", tmp.path / "dev.json");
  std::ofstream(tmp.path / "train.json") << R"([{"sent":"Paris is in France.","start":0,"end":5,"labels":["planet"]}])";
  const Run r = run("--model '" + kModel.string() + "' --data '" + tmp.path.string() + "'", tmp.path);
  BOOST_TEST(r.code == 2, r.output);
  BOOST_TEST(r.output.find((tmp.path / "train.json").string() + ": ") != std::string::npos, r.output);
  BOOST_TEST(r.output.find("planet") != std::string::npos, r.output);
}
