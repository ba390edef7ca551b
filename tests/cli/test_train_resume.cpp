// `kadapter pretrain` killed midway (--stop-after) and continued with --resume ends with
// the same weights, bit for bit, as an uninterrupted run. Uses the all-MiniLM-L6-v2 encoder
// (scripts/setup.sh installs it; skipped without it) and the bundled linguistic data.
#define BOOST_TEST_MODULE train_resume
#include "support/skippable_main.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "kadapter/kadapter.hpp"

namespace fs = std::filesystem;

namespace {
const fs::path kModel = KA_MINILM_DIR;
const fs::path kData = fs::path(KA_FIXTURE_DIR).parent_path().parent_path() / "data" / "demo";

int run(const std::string& args) {
  const std::string cmd = std::string("'") + KA_CLI + "' " + args + " > /dev/null 2>&1";
  return std::system(cmd.c_str());
}
// Exit code and output (stdout and stderr) of a run.
std::pair<int, std::string> run_output(const std::string& args, const fs::path& log) {
  const std::string cmd = std::string("'") + KA_CLI + "' " + args + " > '" + log.string() + "' 2>&1";
  const int status = std::system(cmd.c_str());
  std::ifstream f(log);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1,
          std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>())};
}
std::string bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
}  // namespace

bool ka_test_can_run(std::string& why_not) {
  if (fs::exists(kModel / "model.safetensors") && fs::exists(kModel / "vocab.txt")) return true;
  why_not = "the all-MiniLM-L6-v2 checkpoint is not installed at " + kModel.string();
  return false;
}

BOOST_AUTO_TEST_CASE(resume_gives_the_same_weights) {
  const fs::path tmp = fs::temp_directory_path() / ("kadapter_resume_cli_" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  for (const char* task : {"lin", "fac"}) {
    const std::string common = std::string("pretrain --task ") + task + " --model '" + kModel.string() +
                               "' --data '" + (kData / task).string() +
                               "' --max-steps 6 --save-steps 2 --batch-size 4 --max-seq-length 32"
                               " --adapter-size 32 --adapter-heads 2 --dropout 0.1 --learning-rate 1e-3";
    const fs::path a = tmp / (std::string(task) + "_straight"), b = tmp / (std::string(task) + "_resumed");
    BOOST_REQUIRE_EQUAL(run(common + " --out '" + a.string() + "'"), 0);
    BOOST_REQUIRE_EQUAL(run(common + " --out '" + b.string() + "' --stop-after 3"), 0);
    BOOST_TEST(!fs::exists(b / "model.safetensors"));  // interrupted before the end
    BOOST_REQUIRE_EQUAL(run(common + " --out '" + b.string() + "' --resume"), 0);
    BOOST_TEST(bytes(a / "model.safetensors") == bytes(b / "model.safetensors"), task);
    // `evaluate` scores a finished run and leaves its weights alone.
    const std::string before = bytes(a / "model.safetensors");
    const std::string eval_args = std::string("evaluate --task ") + task + " --model '" + kModel.string() +
                                  "' --data '" + (kData / task).string() +
                                  "' --batch-size 4 --max-seq-length 32 --adapter-size 32 --adapter-heads 2";
    BOOST_TEST(run(eval_args + " --out '" + a.string() + "' --eval-split test") == 0);
    BOOST_TEST(bytes(a / "model.safetensors") == before);
    BOOST_TEST(run(eval_args + " --out '" + (tmp / "missing").string() + "'") != 0);
  }
  fs::remove_all(tmp);
}

BOOST_AUTO_TEST_CASE(multiple_choice_finetunes_and_evaluates) {
  const fs::path tmp = fs::temp_directory_path() / ("kadapter_mc_cli_" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp / "data");
  for (const char* split : {"train", "dev"}) {
    std::ofstream f(tmp / "data" / (std::string(split) + ".jsonl"));
    for (int i = 0; i < 6; ++i)
      f << "{\"context\": \"We went to Kenya.\", \"question\": \"Which city is its capital?\", "
           "\"answer0\": \"Lima\", \"answer1\": \"Nairobi\", \"answer2\": \"Rome\", \"answer3\": "
           "\"Oslo\", \"label\": \"1\"}\n";
  }
  const fs::path out = tmp / "run";
  BOOST_REQUIRE_EQUAL(run("finetune --task multiple-choice --model '" + kModel.string() + "' --data '" +
                          (tmp / "data").string() + "' --out '" + out.string() +
                          "' --max-steps 2 --batch-size 3 --max-seq-length 24"),
                      0);
  std::ifstream log(out / "metrics.jsonl");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  BOOST_TEST(text.find("\"accuracy\"") != std::string::npos);
  BOOST_TEST(text.find("\"examples\":6") != std::string::npos);
  fs::remove_all(tmp);
}

namespace {
// The loss of the last training step in a metrics.jsonl.
double last_loss(const fs::path& metrics) {
  std::ifstream f(metrics);
  std::string line;
  double loss = -1;
  while (std::getline(f, line)) {
    const auto at = line.find("\"loss\":");
    if (at != std::string::npos) loss = std::stod(line.substr(at + 7));
  }
  return loss;
}
}  // namespace

BOOST_AUTO_TEST_CASE(bucketing_and_feature_cache_keep_the_numbers) {
  const fs::path tmp = fs::temp_directory_path() / ("kadapter_bucket_cli_" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  const std::string common = "pretrain --task fac --model '" + kModel.string() + "' --data '" +
                             (kData / "fac").string() +
                             "' --max-steps 6 --batch-size 4 --max-seq-length 48 --adapter-size 32"
                             " --adapter-heads 2 --dropout 0.1 --learning-rate 1e-3";
  auto out = [&](const char* name) { return " --out '" + (tmp / name).string() + "'"; };
  BOOST_REQUIRE_EQUAL(run(common + out("none") + " --bucketing none --feature-cache off"), 0);
  BOOST_REQUIRE_EQUAL(run(common + out("trim") + " --bucketing trim --feature-cache off"), 0);
  const std::string cache = " --feature-cache '" + (tmp / "cache").string() + "' --cache-dtype fp32";
  BOOST_REQUIRE_EQUAL(run(common + out("cached") + " --bucketing trim" + cache), 0);
  BOOST_REQUIRE_EQUAL(run(common + out("reused") + " --bucketing trim" + cache), 0);
  const double none = last_loss(tmp / "none" / "metrics.jsonl"), trim = last_loss(tmp / "trim" / "metrics.jsonl");
  const double cached = last_loss(tmp / "cached" / "metrics.jsonl");
  BOOST_TEST(none > 0.0);
  // Trimmed batches: the same computation (dropout masks included) up to float rounding.
  BOOST_TEST(std::abs(none - trim) <= 1e-5 * none);
  // Cached fp32 states were computed in other batches: again equal up to rounding.
  BOOST_TEST(std::abs(cached - trim) <= 1e-5 * trim);
  // A second run finds the complete cache file and reproduces the first bit for bit.
  BOOST_TEST(bytes(tmp / "cached" / "model.safetensors") == bytes(tmp / "reused" / "model.safetensors"));
  std::size_t files = 0;
  for (const auto& e : fs::directory_iterator(tmp / "cache")) {
    ++files;
    BOOST_TEST(e.path().extension() == ".safetensors");
  }
  BOOST_TEST(files == 1u);
  // Grouping by length changes the batches, not the training: it runs and learns.
  BOOST_REQUIRE_EQUAL(run(common + out("sort") + " --bucketing sort --feature-cache memory"), 0);
  BOOST_TEST(last_loss(tmp / "sort" / "metrics.jsonl") > 0.0);
  // The authors' mode keeps full padding.
  BOOST_TEST(run(common + out("official") + " --compat official --bucketing trim") != 0);
  fs::remove_all(tmp);
}

// Bad run inputs: a clear error (exit 2) naming the file or flag, before any work is lost,
// and nothing of a finished run overwritten.
BOOST_AUTO_TEST_CASE(bad_run_inputs_fail_clearly) {
  const fs::path tmp = fs::temp_directory_path() / ("kadapter_badrun_cli_" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  const std::string model = " --model '" + kModel.string() + "'";
  const std::string sizes = " --batch-size 4 --max-seq-length 32 --adapter-size 16 --adapter-heads 2";
  auto data = [&](const fs::path& d) { return " --data '" + d.string() + "'"; };
  auto out = [&](const char* name) { return " --out '" + (tmp / name).string() + "'"; };
  auto fails = [&](const std::string& args, const std::string& words) {
    const auto [code, text] = run_output(args, tmp / "log.txt");
    BOOST_TEST_INFO(args << " ->\n" << text);
    BOOST_TEST(code == 2);
    BOOST_TEST(text.find(words) != std::string::npos);
  };
  const std::string fac = "pretrain --task fac" + model + data(kData / "fac") + sizes;
  BOOST_REQUIRE_EQUAL(run(fac + " --max-steps 2" + out("run")), 0);
  const std::string labels = bytes(tmp / "run" / "labels.json");

  // evaluate on data with a relation the run was not trained with: an error, and the run's
  // labels.json stays as it was.
  fs::copy(kData / "fac", tmp / "fac2");
  {
    std::ifstream in(kData / "fac" / "test.json");
    nlohmann::json j = nlohmann::json::parse(in);
    j[0]["relation"] = "P_NEW";
    std::ofstream(tmp / "fac2" / "test.json") << j.dump();
  }
  fails("evaluate --task fac" + model + data(tmp / "fac2") + sizes + out("run") + " --eval-split test",
        "\"P_NEW\" are not among the");
  BOOST_TEST(bytes(tmp / "run" / "labels.json") == labels);
  // A damaged labels.json is named.
  std::ofstream(tmp / "run" / "labels.json") << "{bad";
  fails("evaluate --task fac" + model + data(kData / "fac") + sizes + out("run"), "labels.json: not valid JSON");
  std::ofstream(tmp / "run" / "labels.json") << "{\"a\": 1}";
  fails("evaluate --task fac" + model + data(kData / "fac") + sizes + out("run"),
        "labels.json: expected a JSON list of label names");

  // Flags out of range, flags that cannot work together, and missing data fail before
  // anything is written to --out.
  fails(fac + " --dropout 1" + out("x"), "--dropout '1' is not a number in [0, 1)");
  fails(fac + " --learning-rate -1" + out("x"), "--learning-rate '-1' is not a number in [0, 1000]");
  fails(fac + " --warmup-steps 1.5" + out("x"), "--warmup-steps");
  fails(fac + " --eval-split train" + out("x"), "--eval-split");
  fails(fac + " --cache-dtype fp8" + out("x"), "--cache-dtype");
  fails(fac + " --compat official --bucketing sort" + out("x"), "--bucketing sort needs --compat standard");
  fails(fac + " --adapter-skip-layers 5" + out("x"), "--adapter-skip-layers 5 is more than the 3 adapter layers");
  fails("pretrain --task fac" + model + data(tmp / "no_such_data") + sizes + out("x"), "no_such_data");
  fails("finetune --task relation" + model + data(kData / "relation") + sizes + out("x") + " --adapters fac --adapter-dirs '" +
            (tmp / "no_such_run").string() + "'",
        "no_such_run/model.safetensors not found");
  BOOST_TEST(!fs::exists(tmp / "x"));
  // Adapters far larger than any machine's memory are named before anything is allocated
  // (about 800 GiB of parameters alone).
  fails("pretrain --task fac" + model + data(kData / "fac") +
            " --batch-size 4 --max-seq-length 32 --adapter-size 8192 --adapter-heads 2 --adapter-transformer-layers 64" +
            out("big"),
        "lower --adapter-size (8192), --adapter-transformer-layers (64)");
  BOOST_TEST(!fs::exists(tmp / "big"));  // checked before anything is written to --out
  fails("pretrain --task fac" + model + data(kData / "fac") +
            " --batch-size 4 --max-seq-length 32 --adapter-size 10 --adapter-heads 4" + out("heads"),
        "--adapter-size 10 is not divisible by --adapter-heads 4");
  BOOST_TEST(!fs::exists(tmp / "heads"));
  fails(fac + " --resume" + out("y"), "--resume: ");
  BOOST_TEST(!fs::exists(tmp / "y"));  // a mistyped --out is not created
  fails("finetune --task relation" + model + data(kData / "relation") + sizes + out("x") +
            " --adapters fac,fac --adapter-dirs '" + (tmp / "run").string() + "','" + (tmp / "run").string() + "'",
        "--adapters names \"fac\" twice");
  fails(fac + " --max-steps 1 --out '" + (tmp / "run" / "labels.json").string() + "'", "cannot create the directory");

  // A checkpoint whose step metadata is not an integer in [0, total steps] is named.
  BOOST_REQUIRE_EQUAL(run(fac + " --max-steps 4 --save-steps 2 --stop-after 2" + out("part")), 0);
  const fs::path opt = tmp / "part" / "checkpoint" / "optimizer.safetensors";
  for (const std::string bad : {"abc", "-3", "2.5", "12abc", "99999"}) {
    {
      kadapter::io::SafetensorsFile in(opt);
      kadapter::io::SafetensorsWriter w;
      for (const auto& name : in.names()) {
        const std::vector<float> v = in.read<float>(name);
        w.add<float>(name, in.info(name).shape, std::span<const float>(v));
      }
      for (const auto& [key, value] : in.metadata()) w.set_metadata(key, value);
      w.set_metadata("step", bad);
      w.write(tmp / "opt.safetensors");
    }
    fs::rename(tmp / "opt.safetensors", opt);
    fails(fac + " --max-steps 4 --save-steps 2 --resume" + out("part"),
          "optimizer.safetensors: metadata \"step\" = \"" + bad + "\" is not an integer in [0, 4]");
  }

  // A cache file whose states were damaged (0xFF bytes: NaN in fp16) gives a non-finite loss:
  // the run stops with an error and saves nothing.
  const std::string cached = fac + " --max-steps 3 --feature-cache '" + (tmp / "cache").string() + "'";
  BOOST_REQUIRE_EQUAL(run(cached + out("c1")), 0);
  for (const auto& e : fs::directory_iterator(tmp / "cache")) {
    std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
    const auto size = static_cast<std::streamoff>(fs::file_size(e.path()));
    f.seekp(size / 2);  // past the header and the lengths, inside the states
    const std::string ff(static_cast<std::size_t>(size - size / 2), '\xff');
    f.write(ff.data(), static_cast<std::streamsize>(ff.size()));
  }
  fails(cached + " --save-steps 1" + out("c2"), "is not finite; stopped without saving");
  BOOST_TEST(!fs::exists(tmp / "c2" / "model.safetensors"));
  BOOST_TEST(!fs::exists(tmp / "c2" / "checkpoint" / "model.safetensors"));
  fs::remove_all(tmp);
}
