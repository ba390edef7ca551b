// `kadapter pretrain` killed midway (--stop-after) and continued with --resume ends with
// the same weights, bit for bit, as an uninterrupted run. Uses the all-MiniLM-L6-v2 encoder
// (scripts/setup.sh installs it; skipped without it) and the bundled linguistic data.
#define BOOST_TEST_MODULE train_resume
#include "support/skippable_main.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>
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
// A run from the working directory @p dir (relative paths in @p args are relative to it).
int run_in(const fs::path& dir, const std::string& args) {
  const std::string cmd = "cd '" + dir.string() + "' && '" + KA_CLI + "' " + args + " > /dev/null 2>&1";
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
// A fresh, empty scratch directory for one test case's runs (named with the process id).
fs::path scratch(const std::string& name) {
  const fs::path tmp = fs::temp_directory_path() / (name + "_" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  return tmp;
}
// A run that must fail: exit code 2 and an error containing @p words (the output goes to @p log).
void expect_failure(const std::string& args, const std::string& words, const fs::path& log) {
  const auto [code, text] = run_output(args, log);
  BOOST_TEST(code == 2, args << " ->\n" << text);
  BOOST_TEST(text.find(words) != std::string::npos, args << " ->\n" << text);
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
    const std::string flags = std::string(" --model '") + kModel.string() +
                              "' --max-steps 6 --save-steps 2 --batch-size 4 --max-seq-length 32"
                              " --adapter-size 32 --adapter-heads 2 --dropout 0.1 --learning-rate 1e-3";
    const std::string common = std::string("pretrain --task ") + task + " --data '" + (kData / task).string() + "'" + flags;
    const fs::path a = tmp / (std::string(task) + "_straight"), b = tmp / (std::string(task) + "_resumed");
    BOOST_REQUIRE_EQUAL(run(common + " --out '" + a.string() + "'"), 0);
    // The interrupted run names its data relative to its working directory.
    fs::create_directories(tmp / "cwd");
    if (!fs::exists(tmp / "cwd" / "data")) fs::create_directory_symlink(kData, tmp / "cwd" / "data");
    BOOST_REQUIRE_EQUAL(run_in(tmp / "cwd", std::string("pretrain --task ") + task + " --data data/" + task + flags + " --out '" +
                                                b.string() + "' --stop-after 3"),
                        0);
    BOOST_TEST(!fs::exists(b / "model.safetensors"));  // interrupted before the end
    // As if the process had been killed while writing a line.
    std::ofstream(b / "metrics.jsonl", std::ios::app) << "{\"step\":4,\"epo";
    const bool linked = std::string(task) == "fac";  // a log kept elsewhere through a link
    if (linked) {
      fs::rename(b / "metrics.jsonl", tmp / "fac_log.jsonl");
      fs::create_symlink(tmp / "fac_log.jsonl", b / "metrics.jsonl");
    }
    // The resume, from another directory, takes every flag from the run's record (its --task,
    // and its --data relative to the run's directory).
    BOOST_REQUIRE_EQUAL(run("pretrain --out '" + b.string() + "' --resume"), 0);
    BOOST_TEST(fs::is_symlink(b / "metrics.jsonl") == linked);
    BOOST_TEST(bytes(a / "model.safetensors") == bytes(b / "model.safetensors"), task);
    // The resume removed step 3 (after the checkpoint of step 2) and the cut line, then logged
    // steps 3 to 6 again: the log is that of the uninterrupted run. The removed lines are kept.
    BOOST_TEST(bytes(a / "metrics.jsonl") == bytes(b / "metrics.jsonl"), task);
    const std::string removed = bytes(b / "metrics.jsonl.removed");
    BOOST_TEST(std::count(removed.begin(), removed.end(), '\n') == 2, removed);
    BOOST_TEST(removed.find("\"step\":3}\n{\"step\":4,\"epo\n") != std::string::npos, removed);
    // `evaluate` scores a finished run and leaves its weights alone.
    const std::string before = bytes(a / "model.safetensors");
    const std::string eval_args = std::string("evaluate --task ") + task + " --model '" + kModel.string() +
                                  "' --data '" + (kData / task).string() +
                                  "' --batch-size 4 --max-seq-length 32 --adapter-size 32 --adapter-heads 2";
    BOOST_TEST(run(eval_args + " --out '" + a.string() + "' --eval-split test") == 0);
    BOOST_TEST(bytes(a / "model.safetensors") == before);
    const auto [code, text] = run_output(eval_args + " --out '" + (tmp / "missing").string() + "'", tmp / "log.txt");
    BOOST_TEST(code == 2);
    BOOST_TEST(text.find("missing/model.safetensors: not found (evaluate reads a finished") != std::string::npos, text);
  }
  fs::remove_all(tmp);
}

BOOST_AUTO_TEST_CASE(multiple_choice_finetunes_and_evaluates) {
  const fs::path tmp = fs::temp_directory_path() / ("kadapter_mc_cli_" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp / "data");
  // Six questions, each with its own right answer (label i % 4, given as the authors' strings).
  const char* capitals[] = {"Lima", "Nairobi", "Rome", "Oslo"};
  auto question = [&](int i, bool labelled) {
    std::string q = "{\"context\": \"Trip " + std::to_string(i) + ": we went to " + capitals[i % 4] + ".\", \"question\": \"Where did we go?\"";
    for (int a = 0; a < 4; ++a) q += ", \"answer" + std::to_string(a) + "\": \"" + capitals[a] + "\"";
    return q + (labelled ? ", \"label\": \"" + std::to_string(i % 4) + "\"}\n" : "}\n");
  };
  for (const char* split : {"train", "dev"}) {
    std::ofstream f(tmp / "data" / (std::string(split) + ".jsonl"));
    for (int i = 0; i < 6; ++i) f << question(i, true);
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
  {
    // As the authors' CosmosQA script, the scheduler steps before the optimizer: step k runs
    // at the schedule's value after k scheduler steps (2 steps, no warmup: 1/2, then 0).
    std::vector<double> lrs;
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
      const auto j = nlohmann::json::parse(line);
      if (j.contains("lr")) lrs.push_back(j["lr"].get<double>());
    }
    const kadapter::WarmupLinearSchedule schedule{0, 2};
    BOOST_REQUIRE_EQUAL(lrs.size(), 2u);
    BOOST_TEST(lrs[0] == 5e-5 * schedule.factor(1), boost::test_tools::tolerance(1e-12));
    BOOST_TEST(lrs[1] == 5e-5 * schedule.factor(2), boost::test_tools::tolerance(1e-12));
  }

  // An unlabelled test file (as CosmosQA's): evaluate predicts every question and scores none.
  {
    std::ofstream f(tmp / "data" / "test.jsonl");
    for (int i = 0; i < 5; ++i)
      f << "{\"id\": \"q" << i << "\", \"context\": \"We went to Kenya.\", \"question\": \"Which city is its capital?\", "
           "\"answer0\": \"Lima\", \"answer1\": \"Nairobi\", \"answer2\": \"Rome\", \"answer3\": \"Oslo " << i << "\"}\n";
  }
  const fs::path pred = tmp / "pred";
  BOOST_REQUIRE_EQUAL(run("evaluate --model '" + kModel.string() + "' --data '" + (tmp / "data").string() + "' --out '" +
                          out.string() + "' --batch-size 3 --eval-split test,dev --predictions '" + pred.string() + "'"),
                      0);
  std::ifstream mf(out / "metrics.jsonl");
  std::vector<nlohmann::json> evals;
  for (std::string line; std::getline(mf, line);)
    if (line.find("\"eval\"") != std::string::npos) {
      const auto j = nlohmann::json::parse(line);
      // evaluate's lines carry the step of the model scored (2) and say they come from evaluate.
      BOOST_TEST(j["step"].get<int>() == 2);
      BOOST_TEST(j.contains("evaluate") == !evals.empty());
      evals.push_back(j["eval"]);
    }
  BOOST_REQUIRE_EQUAL(evals.size(), 3u);  // the run's final evaluation, then test and dev
  BOOST_TEST(evals[1]["labelled"].get<int>() == 0);
  BOOST_TEST(!evals[1].contains("accuracy"));  // nothing to score
  BOOST_TEST(evals[1]["examples"].get<int>() == 5);
  BOOST_TEST(evals[2] == evals[0]);  // dev scored again, exactly as at the end of training
  std::ifstream pf(pred / "predictions_test.jsonl");
  std::size_t n = 0;
  for (std::string line; std::getline(pf, line); ++n) {
    const auto j = nlohmann::json::parse(line);
    BOOST_TEST(j["record"].get<std::size_t>() == n + 1);
    BOOST_TEST(j["id"].get<std::string>() == "q" + std::to_string(n));
    BOOST_TEST(j["gold"].is_null());
    const auto scores = j["scores"].get<std::vector<double>>();
    BOOST_REQUIRE_EQUAL(scores.size(), 4u);
    BOOST_TEST(j["predicted"].get<std::ptrdiff_t>() == std::max_element(scores.begin(), scores.end()) - scores.begin());
  }
  BOOST_TEST(n == 5u);
  // dev's predictions give its accuracy.
  std::ifstream df(pred / "predictions_dev.jsonl");
  std::size_t right = 0, total = 0;
  for (std::string line; std::getline(df, line); ++total) {
    const auto j = nlohmann::json::parse(line);
    BOOST_TEST(j["record"].get<std::size_t>() == total + 1);
    BOOST_TEST(j["gold"].get<std::size_t>() == total % 4);  // the file's label of that record
    right += j["gold"] == j["predicted"];
  }
  BOOST_REQUIRE_EQUAL(total, 6u);
  BOOST_TEST(static_cast<double>(right) / 6.0 == evals[2]["accuracy"].get<double>());
  // Training needs the answers, and so does an evaluation split scored during training.
  {
    std::ofstream f(tmp / "data" / "dev.jsonl");
    for (int i = 0; i < 6; ++i) f << question(i, i != 3);
  }
  {
    const auto [code, why] = run_output("finetune --task multiple-choice --model '" + kModel.string() + "' --data '" +
                                            (tmp / "data").string() + "' --out '" + (tmp / "run2").string() + "' --max-steps 1",
                                        tmp / "log.txt");
    BOOST_TEST(code == 2);
    BOOST_TEST(why.find("dev.jsonl: record 4 (line 4): field \"label\": missing") != std::string::npos, why);
  }
  fs::copy_file(tmp / "data" / "test.jsonl", tmp / "data" / "train.jsonl", fs::copy_options::overwrite_existing);
  const auto [code, why] = run_output("finetune --task multiple-choice --model '" + kModel.string() + "' --data '" +
                                          (tmp / "data").string() + "' --out '" + (tmp / "run2").string() + "' --max-steps 1",
                                      tmp / "log.txt");
  BOOST_TEST(code == 2);
  BOOST_TEST(why.find("train.jsonl: record 1 (line 1): field \"label\": missing") != std::string::npos, why);
  BOOST_TEST(!fs::exists(tmp / "run2"));
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

namespace {
// The evaluation lines of a metrics.jsonl, in order.
std::vector<nlohmann::json> eval_lines(const fs::path& metrics) {
  std::ifstream f(metrics);
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(f, line)) {
    nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("eval")) out.push_back(std::move(j));
  }
  return out;
}
nlohmann::json read_json(const fs::path& p) {
  std::ifstream f(p);
  return nlohmann::json::parse(f);
}
// Every line of a JSON-lines file.
std::vector<nlohmann::json> json_lines(const fs::path& p) {
  std::ifstream f(p);
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(f, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}
// @p n examples spread over each split of a data set in the authors' JSON list format
// (every (size / n)-th, so that they cover many relations).
void write_subset(const fs::path& from, const fs::path& to, std::size_t n) {
  fs::create_directories(to);
  for (const char* split : {"train.json", "dev.json", "test.json"}) {
    const nlohmann::json j = read_json(from / split);
    nlohmann::json sub = nlohmann::json::array();
    const std::size_t stride = std::max<std::size_t>(1, j.size() / n);
    for (std::size_t i = 0; i < j.size() && sub.size() < n; i += stride) sub.push_back(j[i]);
    std::ofstream(to / split) << sub.dump();
  }
}
}  // namespace

// --eval-steps: evaluations during training leave the training alone, are logged for every
// split, keep the best model (by the first split) in OUT/best, which `evaluate` scores the
// same, and survive a resume.
BOOST_AUTO_TEST_CASE(evaluation_during_training_keeps_the_best) {
  const fs::path tmp = fs::temp_directory_path() / ("kadapter_evalsteps_cli_" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  write_subset(kData / "fac", tmp / "data", 32);
  const std::string sizes = " --batch-size 8 --max-seq-length 32 --adapter-size 32 --adapter-heads 2";
  const std::string base = "pretrain --task fac --model '" + kModel.string() + "' --data '" + (tmp / "data").string() +
                           "'" + sizes + " --epochs 3 --dropout 0.1 --learning-rate 3e-3";
  const std::string common = base + " --feature-cache off";
  auto out = [&](const char* name) { return " --out '" + (tmp / name).string() + "'"; };
  const std::string evals = " --eval-steps 2 --eval-split dev,test --save-steps 4";
  BOOST_REQUIRE_EQUAL(run(common + out("plain")), 0);
  BOOST_REQUIRE_EQUAL(run(common + out("evals") + evals), 0);
  // 32 examples in batches of 8: 12 steps; evaluations at 2, 4, ..., 10 and after step 12.
  BOOST_TEST(bytes(tmp / "plain" / "model.safetensors") == bytes(tmp / "evals" / "model.safetensors"));
  const auto lines = eval_lines(tmp / "evals" / "metrics.jsonl");
  BOOST_REQUIRE_EQUAL(lines.size(), 12u);
  double best = -1;  // the best dev score so far, and its step
  std::int64_t best_step = -1;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    BOOST_TEST(lines[i]["step"].get<std::int64_t>() == static_cast<std::int64_t>(2 * (i / 2 + 1)));
    BOOST_TEST(lines[i]["eval"]["split"].get<std::string>() == (i % 2 == 0 ? "dev" : "test"));
    const double f1 = lines[i]["eval"]["micro_f1"].get<double>();
    const bool better = i % 2 == 0 && f1 > best;  // only the first split chooses
    BOOST_TEST(lines[i].contains("best") == better, "line " << i);
    if (better) {
      best = f1;
      best_step = lines[i]["step"].get<std::int64_t>();
    }
  }
  // The final evaluation is the same as that of the run without evaluations during training.
  const auto plain = eval_lines(tmp / "plain" / "metrics.jsonl");
  BOOST_REQUIRE_EQUAL(plain.size(), 1u);
  BOOST_TEST(plain[0]["eval"] == lines[10]["eval"]);
  const nlohmann::json chosen = read_json(tmp / "evals" / "best" / "eval.json");
  BOOST_TEST(chosen["step"].get<std::int64_t>() == best_step);
  BOOST_TEST(chosen["metric"].get<std::string>() == "micro_f1");
  BOOST_TEST(chosen["eval"]["micro_f1"].get<double>() == best);
  BOOST_TEST(kadapter::io::SafetensorsFile(tmp / "evals" / "best" / "model.safetensors").metadata().at("step") ==
             std::to_string(best_step));
  // With this data the best model is neither the first nor the last one evaluated (so the
  // checks above choose among several); other rounding could move it, hence only a warning.
  BOOST_WARN_MESSAGE(best_step > 2 && best_step < 12, "the best model is at step " << best_step);
  // `evaluate` on OUT/best scores the saved model exactly as it was scored during training.
  const std::string eval_args = "evaluate --task fac --model '" + kModel.string() + "' --data '" + (tmp / "data").string() + "'" + sizes;
  BOOST_REQUIRE_EQUAL(run(eval_args + " --out '" + (tmp / "evals" / "best").string() + "' --eval-split dev"), 0);
  const auto rescored = eval_lines(tmp / "evals" / "best" / "metrics.jsonl");
  BOOST_REQUIRE_EQUAL(rescored.size(), 1u);
  BOOST_TEST(rescored[0]["eval"] == chosen["eval"]);
  BOOST_TEST(bytes(tmp / "evals" / "best" / "runs.jsonl") == bytes(tmp / "evals" / "runs.jsonl"));  // evaluate adds none

  // Stopped after step 5 (last checkpoint at step 4) and resumed: the same model, best model
  // and evaluations as the straight run.
  BOOST_REQUIRE_EQUAL(run(common + out("part") + evals + " --stop-after 5"), 0);
  BOOST_REQUIRE_EQUAL(run(common + out("part") + evals + " --resume"), 0);
  BOOST_TEST(bytes(tmp / "part" / "model.safetensors") == bytes(tmp / "evals" / "model.safetensors"));
  BOOST_TEST(bytes(tmp / "part" / "best" / "model.safetensors") == bytes(tmp / "evals" / "best" / "model.safetensors"));
  BOOST_TEST(read_json(tmp / "part" / "best" / "eval.json") == chosen);
  BOOST_TEST(bytes(tmp / "part" / "metrics.jsonl") == bytes(tmp / "evals" / "metrics.jsonl"));
  // OUT/runs.jsonl: a line per invocation, with every option (defaults included); the best
  // model carries a copy of the lines written before it was saved.
  {
    const auto runs = json_lines(tmp / "part" / "runs.jsonl");
    BOOST_REQUIRE_EQUAL(runs.size(), 2u);
    BOOST_TEST(runs[0]["command"].get<std::string>() == "pretrain");
    BOOST_TEST(runs[0]["start_step"].get<std::int64_t>() == 0);
    BOOST_TEST(runs[1]["start_step"].get<std::int64_t>() == 4);  // the checkpoint of step 4
    BOOST_TEST(runs[0]["args"]["learning-rate"].get<std::string>() == "3e-3");
    BOOST_TEST(runs[0]["args"]["eval-split"].get<std::string>() == "dev,test");
    BOOST_TEST(runs[0]["args"]["stop-after"].get<std::string>() == "5");
    BOOST_TEST(runs[0]["args"]["resume"].get<bool>() == false);
    BOOST_TEST(runs[1]["args"]["resume"].get<bool>() == true);
    BOOST_TEST(runs[1]["args"]["seed"].get<std::string>() == "42");  // a default
    BOOST_TEST(runs[1]["version"].get<std::string>() == kadapter::version_string);
    BOOST_TEST(runs[1]["directory"].get<std::string>() == fs::current_path().string());
    const auto best_runs = json_lines(tmp / "part" / "best" / "runs.jsonl");
    BOOST_REQUIRE(!best_runs.empty());
    BOOST_TEST(best_runs[0] == runs[0]);
    BOOST_TEST(best_runs.size() == (chosen["step"].get<std::int64_t>() <= 5 ? 1u : 2u));
  }
  // A resume of the finished run evaluates again, replacing the final evaluation's lines
  // (added to metrics.jsonl.removed after those the first resume removed): the log, the model
  // and the best model stay as they were.
  const std::size_t removed_earlier = json_lines(tmp / "part" / "metrics.jsonl.removed").size();
  BOOST_REQUIRE_EQUAL(run(common + out("part") + evals + " --resume"), 0);
  BOOST_TEST(bytes(tmp / "part" / "metrics.jsonl") == bytes(tmp / "evals" / "metrics.jsonl"));
  BOOST_TEST(bytes(tmp / "part" / "model.safetensors") == bytes(tmp / "evals" / "model.safetensors"));
  BOOST_TEST(read_json(tmp / "part" / "best" / "eval.json") == chosen);
  {
    const auto removed = json_lines(tmp / "part" / "metrics.jsonl.removed");
    BOOST_REQUIRE_EQUAL(removed.size(), removed_earlier + 2u);
    for (std::size_t i = removed_earlier; i < removed.size(); ++i)
      BOOST_TEST((removed[i].contains("eval") && removed[i]["step"].get<std::int64_t>() == 12));
    BOOST_TEST(removed[removed_earlier] == lines[10]);
  }
  const std::string removed_first = bytes(tmp / "part" / "metrics.jsonl.removed");
  // An unreadable log is an error naming it, before anything is written.
  {
    const fs::path log = tmp / "part" / "metrics.jsonl";
    fs::rename(log, tmp / "kept.jsonl");
    fs::create_directory(log);
    const auto [code, text] = run_output(common + out("part") + evals + " --resume", tmp / "log.txt");
    BOOST_TEST(code == 2);
    BOOST_TEST(text.find(log.string() + ": not a regular file") != std::string::npos, text);
    fs::remove(log);
    fs::rename(tmp / "kept.jsonl", log);
  }
  // The best so far travels in the checkpoint: a resumed run compares with it, not with
  // nothing. A checkpoint claiming an unbeatable best keeps OUT/best as it was.
  const fs::path opt = tmp / "part" / "checkpoint" / "optimizer.safetensors";
  auto set_file_meta = [&](const std::string& key, const std::string& value, const fs::path& file) {
    kadapter::io::SafetensorsFile in(file);
    kadapter::io::SafetensorsWriter w;
    for (const auto& name : in.names()) {
      const std::vector<float> v = in.read<float>(name);
      w.add<float>(name, in.info(name).shape, std::span<const float>(v));
    }
    for (const auto& [k, v] : in.metadata()) w.set_metadata(k, v);
    w.set_metadata(key, value);
    w.set_metadata("step", "4");
    w.write(tmp / "meta.safetensors");
    fs::rename(tmp / "meta.safetensors", file);
  };
  // Both files of the checkpoint say step 4 (the weights file too, or --resume refuses them).
  auto set_meta = [&](const std::string& key, const std::string& value) {
    set_file_meta(key, value, opt);
    set_file_meta("step", "4", tmp / "part" / "checkpoint" / "model.safetensors");
  };
  BOOST_REQUIRE(kadapter::io::SafetensorsFile(opt).metadata().count("best_metric") == 1u);
  set_meta("best_metric", "2");
  set_meta("best_step", "1");
  const auto before_resume = eval_lines(tmp / "part" / "metrics.jsonl");
  const auto all_before = json_lines(tmp / "part" / "metrics.jsonl");
  BOOST_REQUIRE_EQUAL(before_resume.size(), 12u);
  const std::size_t logged = 4;  // steps 2 and 4 (the checkpoint now says 4), two splits each
  BOOST_REQUIRE_EQUAL(run(common + out("part") + evals + " --resume"), 0);
  const auto resumed = eval_lines(tmp / "part" / "metrics.jsonl");
  BOOST_REQUIRE_EQUAL(resumed.size(), logged + 8u);  // then steps 6, 8, 10 and 12 again
  for (std::size_t i = 0; i < logged; ++i) BOOST_TEST(resumed[i] == before_resume[i]);
  for (std::size_t i = logged; i < resumed.size(); ++i) BOOST_TEST(!resumed[i].contains("best"));
  {
    // This resume's removed lines (those of steps 5 to 12) follow the earlier resumes'.
    const std::string removed = bytes(tmp / "part" / "metrics.jsonl.removed");
    BOOST_TEST(removed.starts_with(removed_first), removed);
    const auto lines = json_lines(tmp / "part" / "metrics.jsonl.removed");
    const std::size_t first = static_cast<std::size_t>(std::count(removed_first.begin(), removed_first.end(), '\n'));
    std::vector<nlohmann::json> expected;
    for (const auto& l : all_before)
      if (l.value("step", std::int64_t{0}) > 4 && !l.contains("evaluate")) expected.push_back(l);
    BOOST_TEST(expected.size() >= 16u);  // at least steps 5 to 12 and their eight evaluations
    BOOST_REQUIRE_EQUAL(lines.size(), first + expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) BOOST_TEST(lines[first + i] == expected[i], i);
  }
  BOOST_TEST(read_json(tmp / "part" / "best" / "eval.json") == chosen);
  set_meta("best_metric", "abc");
  {
    const auto [code, text] = run_output(common + out("part") + evals + " --resume", tmp / "log.txt");
    BOOST_TEST(code == 2);
    BOOST_TEST(text.find("optimizer.safetensors: metadata \"best_metric\" = \"abc\" is not a finite number") != std::string::npos, text);
  }
  set_meta("best_metric", "0.5");
  set_meta("best_step", "7");
  {
    const auto [code, text] = run_output(common + out("part") + evals + " --resume", tmp / "log.txt");
    BOOST_TEST(code == 2);
    BOOST_TEST(text.find("metadata \"best_step\" = \"7\" is not an integer in [0, 4]") != std::string::npos, text);
  }

  // A resume whose --eval-split adds labels the checkpoint has no outputs for is refused,
  // and labels.json stays as it was.
  set_meta("best_metric", "0.5");
  set_meta("best_step", "2");
  const std::string labels_before = bytes(tmp / "part" / "labels.json");
  fs::copy(tmp / "data", tmp / "data_new");
  {
    nlohmann::json j = read_json(tmp / "data" / "test.json");
    j[0]["relation"] = "P_NEW";
    std::ofstream(tmp / "data_new" / "test.json") << j.dump();
  }
  {
    std::string args = common + out("part") + evals + " --resume";
    args.replace(args.find((tmp / "data").string()), (tmp / "data").string().size(), (tmp / "data_new").string());
    const auto [code, text] = run_output(args, tmp / "log.txt");
    BOOST_TEST(code == 2);
    BOOST_TEST(text.find("--resume: " + (tmp / "data_new" / "test.json").string() + " names label(s) \"P_NEW\"") != std::string::npos, text);
    BOOST_TEST(bytes(tmp / "part" / "labels.json") == labels_before);
  }
  // A resume that chooses by another split starts the choice over, and says so.
  {
    const auto [code, text] = run_output(common + out("part") + " --eval-steps 2 --eval-split test,dev --save-steps 4 --resume", tmp / "log.txt");
    BOOST_TEST(code == 0);
    BOOST_TEST(text.find("chosen by dev micro_f1, this run chooses by test micro_f1") != std::string::npos, text);
    BOOST_TEST(read_json(tmp / "part" / "best" / "eval.json")["eval"]["split"].get<std::string>() == "test");
  }

  // Without an evaluation before the last step, the final one still writes OUT/best.
  BOOST_REQUIRE_EQUAL(run(common + out("late") + " --eval-steps 100"), 0);
  BOOST_TEST(read_json(tmp / "late" / "best" / "eval.json")["step"].get<std::int64_t>() == 12);
  BOOST_TEST(eval_lines(tmp / "late" / "metrics.jsonl").size() == 1u);

  // A fresh run into the same --out starts the log and the list of runs over, keeping the
  // earlier ones as FILE.previous, and the earlier run's best model as best.previous/.
  const std::string log_before = bytes(tmp / "part" / "metrics.jsonl"), runs_before = bytes(tmp / "part" / "runs.jsonl");
  const std::string removed_before = bytes(tmp / "part" / "metrics.jsonl.removed");
  const std::string best_before = bytes(tmp / "part" / "best" / "model.safetensors");
  const std::string best_eval_before = bytes(tmp / "part" / "best" / "eval.json");
  BOOST_REQUIRE(!removed_before.empty());
  BOOST_REQUIRE(!best_before.empty());
  BOOST_REQUIRE_EQUAL(run(common + out("part") + " --max-steps 1"), 0);
  BOOST_TEST(!fs::exists(tmp / "part" / "best"));
  BOOST_TEST(bytes(tmp / "part" / "best.previous" / "model.safetensors") == best_before);
  BOOST_TEST(bytes(tmp / "part" / "best.previous" / "eval.json") == best_eval_before);
  BOOST_TEST(bytes(tmp / "part" / "metrics.jsonl.previous") == log_before);
  BOOST_TEST(bytes(tmp / "part" / "runs.jsonl.previous") == runs_before);
  BOOST_TEST(bytes(tmp / "part" / "metrics.jsonl.removed.previous") == removed_before);
  BOOST_TEST(!fs::exists(tmp / "part" / "metrics.jsonl.removed"));
  {
    const auto log = json_lines(tmp / "part" / "metrics.jsonl");
    BOOST_REQUIRE_EQUAL(log.size(), 2u);  // step 1 and the final evaluation
    BOOST_TEST(log[0]["step"].get<std::int64_t>() == 1);
    BOOST_TEST(log[1].contains("eval"));
    const auto runs = json_lines(tmp / "part" / "runs.jsonl");
    BOOST_REQUIRE_EQUAL(runs.size(), 1u);
    BOOST_TEST(runs[0]["args"]["max-steps"].get<std::string>() == "1");
  }
  // The next fresh run had no removed lines and no best model to keep: the older run's go, so
  // that no metrics.jsonl.removed.previous or best.previous/ sits beside a
  // metrics.jsonl.previous of another run.
  BOOST_REQUIRE_EQUAL(run(common + out("part") + " --max-steps 1"), 0);
  BOOST_TEST(!fs::exists(tmp / "part" / "metrics.jsonl.removed.previous"));
  BOOST_TEST(!fs::exists(tmp / "part" / "best.previous"));  // nor a best model of another run
  BOOST_TEST(json_lines(tmp / "part" / "metrics.jsonl.previous").size() == 2u);

  // --eval-steps epoch: after each of the 3 epochs of 4 steps (the last is the final one).
  BOOST_REQUIRE_EQUAL(run(common + out("epochs") + " --eval-steps epoch"), 0);
  const auto per_epoch = eval_lines(tmp / "epochs" / "metrics.jsonl");
  BOOST_REQUIRE_EQUAL(per_epoch.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) BOOST_TEST(per_epoch[i]["step"].get<std::int64_t>() == static_cast<std::int64_t>(4 * (i + 1)));
  BOOST_TEST(per_epoch[2]["eval"] == plain[0]["eval"]);

  // The evaluation splits get feature caches of their own; with fp32 states the scores are
  // those of the backbone run on the spot, and a second run reuses all three files.
  const std::string cached = " --feature-cache '" + (tmp / "cache").string() + "' --cache-dtype fp32 --eval-steps epoch --eval-split dev,test";
  BOOST_REQUIRE_EQUAL(run(base + out("cached") + cached), 0);
  std::size_t files = 0;
  for (const auto& e : fs::directory_iterator(tmp / "cache")) files += e.path().extension() == ".safetensors";
  BOOST_TEST(files == 3u);
  {
    const auto [code, text] = run_output(base + out("cached2") + cached, tmp / "log.txt");
    BOOST_REQUIRE_EQUAL(code, 0);
    for (const char* split : {"train", "dev", "test"})
      BOOST_TEST(text.find(std::string("feature cache (") + split + "): 32 sequences") != std::string::npos, text);
    BOOST_TEST(text.find("reused") != std::string::npos, text);
    BOOST_TEST(text.find("built") == std::string::npos, text);
  }
  BOOST_TEST(bytes(tmp / "cached" / "best" / "model.safetensors") == bytes(tmp / "cached2" / "best" / "model.safetensors"));
  const auto with_cache = eval_lines(tmp / "cached" / "metrics.jsonl");
  BOOST_REQUIRE_EQUAL(with_cache.size(), 6u);
  BOOST_REQUIRE_EQUAL(run(eval_args + out("cached") + " --eval-split dev,test"), 0);
  const auto direct = eval_lines(tmp / "cached" / "metrics.jsonl");
  BOOST_REQUIRE_EQUAL(direct.size(), 8u);
  BOOST_TEST(direct[6]["eval"] == with_cache[4]["eval"]);
  BOOST_TEST(direct[7]["eval"] == with_cache[5]["eval"]);

  // Bad values are named.
  for (const auto& [flags, words] : std::vector<std::pair<std::string, std::string>>{
           {" --eval-steps abc", "--eval-steps 'abc' is not \"epoch\" or an integer"},
           {" --eval-steps -2", "--eval-steps '-2' is not"},
           {" --eval-split dev,dev", "--eval-split 'dev,dev' names dev twice"},
           {" --eval-split dev,train", "\"train\" is not dev or test"}}) {
    const auto [code, text] = run_output(common + out("bad") + flags, tmp / "log.txt");
    BOOST_TEST(code == 2);
    BOOST_TEST(text.find(words) != std::string::npos, text);
  }
  BOOST_TEST(!fs::exists(tmp / "bad"));
  fs::remove_all(tmp);
}

// Entity typing with dev and test each naming a type of their own: every split is packed
// with one target column per type (the earlier ones again after a later split adds a type),
// both are scored during and after training, and `evaluate` scores the run the same.
BOOST_AUTO_TEST_CASE(entity_typing_with_types_only_the_evaluation_splits_name) {
  const fs::path tmp = fs::temp_directory_path() / ("kadapter_et_cli_" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  write_subset(kData / "entity_typing", tmp / "data", 24);
  for (const auto& [split, type] : {std::pair{"dev", "only_in_dev"}, std::pair{"test", "only_in_test"}}) {
    nlohmann::json j = read_json(tmp / "data" / (std::string(split) + ".json"));
    j[0]["labels"].push_back(type);
    j[1]["labels"] = nlohmann::json::array({type});
    std::ofstream(tmp / "data" / (std::string(split) + ".json")) << j.dump();
  }
  const std::string args = " --task entity-typing --model '" + kModel.string() + "' --data '" + (tmp / "data").string() +
                           "' --batch-size 8 --max-seq-length 32 --adapter-size 32 --adapter-heads 2 --eval-split dev,test";
  const fs::path out = tmp / "run";
  const auto [code, text] = run_output("finetune" + args + " --epochs 2 --eval-steps 2 --learning-rate 3e-3 --feature-cache off --out '" +
                                           out.string() + "'", tmp / "log.txt");
  BOOST_REQUIRE_MESSAGE(code == 0, text);
  BOOST_TEST(text.find("dev.json names ") != std::string::npos, text);
  BOOST_TEST(text.find("test.json names ") != std::string::npos, text);
  const std::vector<std::string> labels = read_json(out / "labels.json").get<std::vector<std::string>>();
  for (const char* type : {"only_in_dev", "only_in_test"})
    BOOST_TEST(std::count(labels.begin(), labels.end(), type) == 1, type);
  const auto lines = eval_lines(out / "metrics.jsonl");
  BOOST_REQUIRE_EQUAL(lines.size(), 6u);  // steps 2 and 4, then the final one at 6
  for (const auto& l : lines) BOOST_TEST(l["eval"]["examples"].get<int>() == 24);
  BOOST_REQUIRE_EQUAL(run("evaluate" + args + " --out '" + out.string() + "' --predictions '" + (tmp / "pred").string() + "'"), 0);
  const auto again = eval_lines(out / "metrics.jsonl");
  BOOST_REQUIRE_EQUAL(again.size(), 8u);
  BOOST_TEST(again[6]["eval"] == lines[4]["eval"]);
  BOOST_TEST(again[7]["eval"] == lines[5]["eval"]);
  // The predicted type sets give the strict accuracy; the split's own type is gold where the
  // data put it.
  for (const auto& [split, type, line] : {std::tuple{"dev", "only_in_dev", 6}, std::tuple{"test", "only_in_test", 7}}) {
    std::ifstream f(tmp / "pred" / ("predictions_" + std::string(split) + ".jsonl"));
    std::vector<nlohmann::json> preds;
    for (std::string l; std::getline(f, l);) preds.push_back(nlohmann::json::parse(l));
    BOOST_REQUIRE_EQUAL(preds.size(), 24u);
    BOOST_TEST(preds[1]["gold"] == nlohmann::json::array({type}));
    const auto g0 = preds[0]["gold"].get<std::vector<std::string>>();
    BOOST_TEST(std::count(g0.begin(), g0.end(), type) == 1);
    std::size_t exact = 0;
    for (const auto& p : preds) {
      auto g = p["gold"].get<std::vector<std::string>>(), q = p["predicted"].get<std::vector<std::string>>();
      std::sort(g.begin(), g.end());
      std::sort(q.begin(), q.end());
      exact += g == q;
    }
    BOOST_TEST(static_cast<double>(exact) / 24.0 == again[static_cast<std::size_t>(line)]["eval"]["strict_accuracy"].get<double>());
  }
  fs::remove_all(tmp);
}

namespace {
// The loss of every training step in a metrics.jsonl.
std::vector<double> step_losses(const fs::path& metrics) {
  std::vector<double> out;
  std::ifstream f(metrics);
  std::string line;
  while (std::getline(f, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("loss")) out.push_back(j["loss"].get<double>());
  }
  return out;
}
}  // namespace

// --gradient-accumulation-steps: two micro-batches of 2 make the step of one batch of 4 (the
// mean of the two means is the mean of the four), up to float rounding; an epoch whose
// batches do not fill the last step ends with a shorter one.
BOOST_AUTO_TEST_CASE(gradient_accumulation_equals_the_larger_batch) {
  const fs::path tmp = fs::temp_directory_path() / ("kadapter_accum_cli_" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  write_subset(kData / "fac", tmp / "data", 16);
  const std::string common = "pretrain --task fac --model '" + kModel.string() + "' --data '" + (tmp / "data").string() +
                             "' --max-seq-length 32 --adapter-size 32 --adapter-heads 2 --epochs 2 --dropout 0"
                             " --learning-rate 3e-3 --feature-cache off";
  auto out = [&](const char* name) { return " --out '" + (tmp / name).string() + "'"; };
  BOOST_REQUIRE_EQUAL(run(common + out("b4") + " --batch-size 4"), 0);
  BOOST_REQUIRE_EQUAL(run(common + out("b2x2") + " --batch-size 2 --gradient-accumulation-steps 2"), 0);
  BOOST_REQUIRE_EQUAL(run(common + out("b2") + " --batch-size 2"), 0);
  const auto whole = step_losses(tmp / "b4" / "metrics.jsonl"), accumulated = step_losses(tmp / "b2x2" / "metrics.jsonl");
  BOOST_REQUIRE_EQUAL(whole.size(), 8u);  // 16 examples in steps of 4, two epochs
  BOOST_REQUIRE_EQUAL(accumulated.size(), whole.size());
  for (std::size_t i = 0; i < whole.size(); ++i)
    BOOST_TEST(std::abs(accumulated[i] - whole[i]) <= 1e-5 * std::abs(whole[i]), "step " << i + 1);
  // Without accumulation, batches of 2 take other steps: the comparison above can fail.
  const auto halves = step_losses(tmp / "b2" / "metrics.jsonl");
  BOOST_REQUIRE_EQUAL(halves.size(), 16u);
  BOOST_TEST(std::abs(halves[15] - whole[7]) > 1e-5 * std::abs(whole[7]));
  // 16 examples in micro-batches of 3, two per step: batches 3,3 | 3,3 | 3,1 per epoch.
  BOOST_REQUIRE_EQUAL(run(common + out("b3x2") + " --batch-size 3 --gradient-accumulation-steps 2"), 0);
  BOOST_TEST(step_losses(tmp / "b3x2" / "metrics.jsonl").size() == 6u);
  const auto [code, text] = run_output(common + out("bad") + " --gradient-accumulation-steps 0", tmp / "log.txt");
  BOOST_TEST(code == 2);
  BOOST_TEST(text.find("--gradient-accumulation-steps '0' is not an integer in [1, 4096]") != std::string::npos, text);
  fs::remove_all(tmp);
}

// Bad run inputs: a clear error (exit 2) naming the file or flag, before any work is lost,
// and nothing of a finished run overwritten.
BOOST_AUTO_TEST_CASE(bad_run_inputs_fail_clearly) {
  const fs::path tmp = scratch("kadapter_badrun_cli");
  // Small copies of the data: what is checked here does not depend on its size.
  for (const std::string task : {"fac", "relation"}) {
    write_subset(kData / task, tmp / (task + "_data"), 48);
    fs::copy_file(kData / task / "relations.txt", tmp / (task + "_data") / "relations.txt");
  }
  const fs::path fac_data = tmp / "fac_data", relation_data = tmp / "relation_data";
  const std::string model = " --model '" + kModel.string() + "'";
  const std::string sizes = " --batch-size 4 --max-seq-length 32 --adapter-size 16 --adapter-heads 2";
  auto data = [&](const fs::path& d) { return " --data '" + d.string() + "'"; };
  auto out = [&](const char* name) { return " --out '" + (tmp / name).string() + "'"; };
  auto fails = [&](const std::string& args, const std::string& words) { expect_failure(args, words, tmp / "log.txt"); };
  const std::string fac = "pretrain --task fac" + model + data(fac_data) + sizes;
  BOOST_REQUIRE_EQUAL(run(fac + " --max-steps 2" + out("run")), 0);
  const std::string labels = bytes(tmp / "run" / "labels.json");
  {
    // The optimizer flags reach the optimizer: --max-grad-norm auto is 1 for pre-training, and
    // another clipping threshold or epsilon gives other weights.
    const std::string model_bytes = bytes(tmp / "run" / "model.safetensors");
    BOOST_REQUIRE_EQUAL(run(fac + " --max-steps 2 --max-grad-norm 1 --adam-epsilon 1e-8" + out("same")), 0);
    BOOST_TEST((bytes(tmp / "same" / "model.safetensors") == model_bytes));
    BOOST_REQUIRE_EQUAL(run(fac + " --max-steps 2 --max-grad-norm 1e-9" + out("clip")), 0);
    BOOST_TEST((bytes(tmp / "clip" / "model.safetensors") != model_bytes));
    BOOST_REQUIRE_EQUAL(run(fac + " --max-steps 2 --adam-epsilon 1" + out("eps")), 0);
    BOOST_TEST((bytes(tmp / "eps" / "model.safetensors") != model_bytes));
  }

  // evaluate on data with a relation the run was not trained with: an error, and the run's
  // labels.json stays as it was.
  fs::copy(fac_data, tmp / "fac2");
  {
    std::ifstream in(fac_data / "test.json");
    nlohmann::json j = nlohmann::json::parse(in);
    j[0]["relation"] = "P_NEW";
    std::ofstream(tmp / "fac2" / "test.json") << j.dump();
  }
  fails("evaluate --task fac" + model + data(tmp / "fac2") + sizes + out("run") + " --eval-split test",
        "\"P_NEW\" are not among the");
  BOOST_TEST(bytes(tmp / "run" / "labels.json") == labels);
  // A damaged labels.json is named.
  std::ofstream(tmp / "run" / "labels.json") << "{bad";
  fails("evaluate --task fac" + model + data(fac_data) + sizes + out("run"), "labels.json: not valid JSON");
  std::ofstream(tmp / "run" / "labels.json") << "{\"a\": 1}";
  fails("evaluate --task fac" + model + data(fac_data) + sizes + out("run"),
        "labels.json: expected a JSON list of label names");

  // Flags out of range, flags that cannot work together, and missing data fail before
  // anything is written to --out.
  fails(fac + " --dropout 1" + out("x"), "--dropout '1' is not a number in [0, 1)");
  fails(fac + " --learning-rate -1" + out("x"), "--learning-rate '-1' is not a number in [0, 1000]");
  fails(fac + " --warmup-steps 1.5" + out("x"), "--warmup-steps");
  fails(fac + " --adam-epsilon 0" + out("x"), "--adam-epsilon 0 divides by zero");
  fails(fac + " --max-grad-norm -1" + out("x"), "--max-grad-norm '-1' is not a number in [0, 1e+06]");
  fails(fac + " --max-grad-norm none" + out("x"), "--max-grad-norm 'none' is not a number");
  fails(fac + " --eval-split train" + out("x"), "--eval-split");
  fails(fac + " --cache-dtype fp8" + out("x"), "--cache-dtype");
  fails(fac + " --compat official --bucketing sort" + out("x"), "--bucketing sort needs --compat standard");
  fails(fac + " --adapter-skip-layers 5" + out("x"), "--adapter-skip-layers 5 is more than the 3 adapter layers");
  fails("pretrain --task fac" + model + data(tmp / "no_such_data") + sizes + out("x"), "no_such_data");
  fails("finetune --task relation" + model + data(relation_data) + sizes + out("x") + " --adapters fac --adapter-dirs '" +
            (tmp / "no_such_run").string() + "'",
        "no_such_run/model.safetensors not found");
  BOOST_TEST(!fs::exists(tmp / "x"));
  // A pre-trained adapter must be the one named, of this run's sizes and plug-in points:
  // refused before --out exists (same-shaped tensors with other heads or plug-in points would
  // load without a word).
  {
    const std::string ft_base = "finetune --task relation" + model + data(relation_data) + " --batch-size 4 --max-seq-length 32 --max-steps 1" + out("x");
    const std::string ft = ft_base + " --adapter-size 16 --adapter-heads 2";
    const std::string from_run = " --adapter-dirs '" + (tmp / "run").string() + "'";
    const std::string config = (tmp / "run" / "adapter_config.json").string();
    fails(ft_base + " --adapter-size 16 --adapter-heads 4 --adapters fac" + from_run, "--adapter-heads 4 differs from \"adapter_heads\": 2 in " + config);
    fails(ft + " --adapters fac" + from_run + " --adapter-list 0,2,4", "--adapter-list [0,2,4] differs from \"adapter_list\": [0,3,6] in " + config);
    fails(ft + " --adapters lin" + from_run, config + " is a pre-training run of the fac adapter, not of lin");
    fails(ft + " --adapters fac --freeze-adapters", "--freeze-adapters needs --adapter-dirs");
    fails(ft + " --adapter-list 3,0", "--adapter-list 3,0: the plug-in points must increase (3 is followed by 0)");
    fails(ft + " --adapter-list 0,3,3", "(3 is followed by 3)");
    // Without adapter_config.json (runs of older versions) tensors that do not fit are refused,
    // still before --out exists.
    fs::create_directories(tmp / "bare");
    fs::copy_file(tmp / "run" / "model.safetensors", tmp / "bare" / "model.safetensors");
    fails(ft_base + " --adapter-size 32 --adapter-heads 2 --adapters fac --adapter-dirs '" + (tmp / "bare").string() + "'", "tensors do not fit the model");
    // A directory with the authors' pytorch_model.bin: the error says how to convert it; once
    // converted, its tensors (a fac model of width 32, the parity fixture's) are checked
    // against this model like any other.
    fs::create_directories(tmp / "authors");
    fs::copy_file(fs::path(KA_FIXTURE_DIR) / "torch" / "fac_official_legacy.bin", tmp / "authors" / "pytorch_model.bin");
    const std::string authors = " --adapters fac --adapter-dirs '" + (tmp / "authors").string() + "'";
    fails(ft + authors, "pytorch_model.bin is there (a PyTorch checkpoint, such as the K-Adapter authors' released adapters): convert it first with `kadapter convert --in ");
    const auto [code, text] = run_output("convert --in '" + (tmp / "authors" / "pytorch_model.bin").string() + "' --out '" +
                                             (tmp / "authors" / "model.safetensors").string() + "'", tmp / "log.txt");
    BOOST_TEST_REQUIRE(code == 0, text);
    fails(ft + authors, "tensors do not fit the model");
    // With the authors' training_args.bin beside it, convert also writes adapter_config.json,
    // and the mismatch is named by what it is: the adapter was pre-trained on another encoder.
    fs::copy_file(fs::path(KA_FIXTURE_DIR) / "torch" / "training_args_fac.bin", tmp / "authors" / "training_args.bin");
    const auto [code2, text2] = run_output("convert --adapter-heads 2 --in '" + (tmp / "authors" / "pytorch_model.bin").string() +
                                               "' --out '" + (tmp / "authors" / "model.safetensors").string() + "'", tmp / "log.txt");
    BOOST_TEST_REQUIRE(code2 == 0, text2);
    fails(ft + authors, "differs from \"hidden\": 32 in " + (tmp / "authors" / "adapter_config.json").string() +
                            " (the adapter was pre-trained on another --model)");
    // The authors' adapters were pre-trained with their quirks (--compat official): a run
    // without them says so.
    fails(ft + authors, "note: --adapter-dirs " + (tmp / "authors").string() + " (fac): the adapter was pre-trained with --compat official (" +
                            (tmp / "authors" / "adapter_config.json").string() +
                            ") and this run uses --compat standard; give --compat official to run it as it was pre-trained");
    // A downstream run is no pre-trained adapter.
    fs::create_directories(tmp / "downstream");
    std::ofstream(tmp / "downstream" / "adapter_config.json") << R"({"task": "relation"})";
    fs::copy_file(tmp / "run" / "model.safetensors", tmp / "downstream" / "model.safetensors");
    fails(ft + " --adapters fac --adapter-dirs '" + (tmp / "downstream").string() + "'",
          "has \"task\": \"relation\", expected a pre-training run");
    BOOST_TEST(!fs::exists(tmp / "x"));
  }
  // Adapters far larger than any machine's memory are named before anything is allocated
  // (about 800 GiB of parameters alone).
  fails("pretrain --task fac" + model + data(fac_data) +
            " --batch-size 4 --max-seq-length 32 --adapter-size 8192 --adapter-heads 2 --adapter-transformer-layers 64" +
            out("big"),
        "lower --adapter-size (8192), --adapter-transformer-layers (64)");
  BOOST_TEST(!fs::exists(tmp / "big"));  // checked before anything is written to --out
  fails("pretrain --task fac" + model + data(fac_data) +
            " --batch-size 4 --max-seq-length 32 --adapter-size 10 --adapter-heads 4" + out("heads"),
        "--adapter-size 10 is not divisible by --adapter-heads 4");
  BOOST_TEST(!fs::exists(tmp / "heads"));
  fails(fac + " --resume" + out("y"), "--resume: ");
  fails(fac + " --resume=false" + out("y"), "option --resume takes no value (given --resume=false");
  BOOST_TEST(!fs::exists(tmp / "y"));  // a mistyped --out is not created
  fails("finetune --task relation" + model + data(relation_data) + sizes + out("x") +
            " --adapters fac,fac --adapter-dirs '" + (tmp / "run").string() + "','" + (tmp / "run").string() + "'",
        "--adapters names \"fac\" twice");
  fails(fac + " --max-steps 1 --out '" + (tmp / "run" / "labels.json").string() + "'", "cannot create the directory");

  // A checkpoint whose step metadata is not an integer, or whose two files are of different
  // steps (a run that stopped while saving), is named.
  BOOST_REQUIRE_EQUAL(run(fac + " --max-steps 4 --save-steps 2 --stop-after 2" + out("part")), 0);
  const fs::path opt = tmp / "part" / "checkpoint" / "optimizer.safetensors";
  // Resumed with fewer steps than the checkpoint has: the flags are named, not the file.
  fails(fac + " --max-steps 1 --save-steps 2 --resume" + out("part"),
        "--resume: the checkpoint is at step 2 but --epochs 1 and --max-steps 1 give the run 1 steps");
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
          bad == "99999" ? "model.safetensors is of step 2 but " + opt.string() +
                               " of step 99999: the run stopped while it saved its checkpoint"
                         : "optimizer.safetensors: metadata \"step\" = \"" + bad + "\" is not a non-negative integer");
  }

  // A fresh run moves an earlier run's checkpoint and model aside: stopped before its own
  // first checkpoint, it is not resumed from the earlier run's, nor evaluated as its model.
  BOOST_REQUIRE_EQUAL(run(fac + " --max-steps 4 --save-steps 2" + out("stale")), 0);
  const std::string earlier = bytes(tmp / "stale" / "model.safetensors");
  BOOST_REQUIRE_EQUAL(run(fac + " --max-steps 4 --save-steps 3 --stop-after 1" + out("stale")), 0);
  BOOST_TEST(bytes(tmp / "stale" / "model.safetensors.previous") == earlier);
  BOOST_TEST(fs::exists(tmp / "stale" / "checkpoint.previous" / "optimizer.safetensors"));
  BOOST_TEST(fs::exists(tmp / "stale" / "adapter_config.json.previous"));
  BOOST_TEST(!fs::exists(tmp / "stale" / "model.safetensors"));
  fails(fac + " --max-steps 4 --save-steps 3 --resume" + out("stale"), "checkpoint/optimizer.safetensors not found (no checkpoint");
  // A second fresh run would send the finished run's model (now NAME.previous) away with the
  // unfinished run's files: refused, and nothing moves.
  const std::string unfinished_runs = bytes(tmp / "stale" / "runs.jsonl");
  fails(fac + " --max-steps 4" + out("stale"), "holds a run that did not finish (it has no model.safetensors) and, as "
                                                "model.safetensors.previous, the model of the run before it");
  BOOST_TEST(bytes(tmp / "stale" / "model.safetensors.previous") == earlier);
  BOOST_TEST(bytes(tmp / "stale" / "runs.jsonl") == unfinished_runs);
  BOOST_TEST(fs::exists(tmp / "stale" / "checkpoint.previous" / "optimizer.safetensors"));
  // A --feature-cache DIR that cannot be one is an error before --out is touched.
  fails(fac + " --max-steps 4 --feature-cache '" + (tmp / "stale" / "runs.jsonl").string() + "'" + out("stale"),
        "--feature-cache " + (tmp / "stale" / "runs.jsonl").string() + ": cannot create the directory");
  BOOST_TEST(bytes(tmp / "stale" / "runs.jsonl") == unfinished_runs);
  BOOST_TEST(bytes(tmp / "stale" / "model.safetensors.previous") == earlier);
  fails("evaluate --task fac" + model + data(fac_data) + out("stale"), "model.safetensors: not found (evaluate reads a finished");

  // --resume continues with the run's settings (the last line of runs.jsonl): those that
  // define the model or the examples may not change; those of the schedule may, with a note;
  // left out, every one is the run's.
  BOOST_REQUIRE_EQUAL(run(fac + " --max-steps 4 --save-steps 2 --stop-after 3 --seed 3 --learning-rate 1e-3" + out("flags")), 0);
  const std::string runs_before = bytes(tmp / "flags" / "runs.jsonl");
  fails(fac + " --compat official --resume" + out("flags"), "--resume: --compat official differs from the run's standard (" +
                                                                (tmp / "flags" / "runs.jsonl").string());
  fails("pretrain --task fac" + model + data(fac_data) + " --batch-size 8 --resume" + out("flags"), "--batch-size 8 differs from the run's 4");
  fails(fac + " --seed 4 --resume" + out("flags"), "--seed 4 differs from the run's 3");
  fails("pretrain --task fac" + model + data(fac_data) + " --adapter-size 32 --resume" + out("flags"), "--adapter-size 32 differs from the run's 16");
  BOOST_TEST(bytes(tmp / "flags" / "runs.jsonl") == runs_before);
  {
    const auto [code, text] = run_output("pretrain --task fac" + data(fac_data) + " --learning-rate 0.002 --resume" + out("flags"), tmp / "log.txt");
    BOOST_REQUIRE_MESSAGE(code == 0, text);
    BOOST_TEST(text.find("note: --learning-rate 0.002 differs from the run's 1e-3") != std::string::npos, text);
    BOOST_TEST(text.find("resumed from " + (tmp / "flags" / "checkpoint").string() + " at step 2") != std::string::npos, text);
    const auto args = json_lines(tmp / "flags" / "runs.jsonl").back()["args"];
    BOOST_TEST(args["seed"].get<std::string>() == "3");
    BOOST_TEST(args["max-steps"].get<std::string>() == "4");
    BOOST_TEST(args["adapter-size"].get<std::string>() == "16");
    BOOST_TEST(args["model"].get<std::string>() == kModel.string());  // given as an absolute path
    BOOST_TEST(args["learning-rate"].get<std::string>() == "0.002");
    BOOST_TEST(json_lines(tmp / "flags" / "metrics.jsonl").size() == 5u);  // steps 1 to 4 and the final evaluation
  }
  // evaluate says which training step it scored, on the console as in the log. Without
  // --model it reads the run's encoder (runs.jsonl), not the default path.
  BOOST_REQUIRE(!fs::exists("models/all-MiniLM-L6-v2"));  // the default, relative to the working directory
  {
    const auto [code, text] = run_output("evaluate --task fac" + data(fac_data) + out("flags"), tmp / "log.txt");
    BOOST_TEST(code == 0);
    BOOST_TEST(text.find("step 4: {") != std::string::npos, text);
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

// `evaluate` takes the model flags of the run from its adapter_config.json (a flag given must
// agree), refuses what only training reads, and writes per-example predictions whose scores
// are those it logs.
BOOST_AUTO_TEST_CASE(evaluate_reads_the_run_and_writes_predictions) {
  const fs::path tmp = scratch("kadapter_predict_cli");
  const std::string model = " --model '" + kModel.string() + "'";
  auto data = [&](const char* task) { return " --data '" + (kData / task).string() + "'"; };
  auto out = [&](const std::string& name) { return " --out '" + (tmp / name).string() + "'"; };
  // Sizes other than the defaults, and a length that drops some examples.
  const std::string sizes = " --batch-size 8 --max-seq-length 16 --adapter-size 16 --adapter-heads 2 --adapter-list 0,2";
  auto fails = [&](const std::string& args, const std::string& words) { expect_failure(args, words, tmp / "log.txt"); };
  for (const char* task : {"fac", "lin"}) {
    BOOST_TEST_CONTEXT(task) {
      BOOST_REQUIRE_EQUAL(run(std::string("pretrain --task ") + task + model + data(task) + sizes + " --max-steps 3" + out(task)), 0);
      const fs::path pred = tmp / (std::string(task) + "_pred");
      const auto [code, text] = run_output("evaluate" + model + data(task) + out(task) + " --batch-size 8 --predictions '" +
                                               pred.string() + "'", tmp / "log.txt");
      BOOST_REQUIRE_MESSAGE(code == 0, text);
      const auto lines = eval_lines(tmp / task / "metrics.jsonl");
      BOOST_REQUIRE_EQUAL(lines.size(), 2u);
      BOOST_TEST(lines[1]["eval"] == lines[0]["eval"]);  // the run's own final evaluation
      // One line per record of dev.json, in order; the dropped ones say why.
      const nlohmann::json dev = read_json(kData / task / "dev.json");
      const std::size_t records = dev.size();
      std::ifstream f(pred / "predictions_dev.jsonl");
      std::size_t n = 0, dropped = 0, right = 0, counted = 0;
      const auto names = read_json(tmp / task / "labels.json").get<std::vector<std::string>>();
      for (std::string line; std::getline(f, line); ++n) {
        const auto j = nlohmann::json::parse(line);
        BOOST_TEST(j["record"].get<std::size_t>() == n + 1);
        if (j.contains("dropped")) {
          ++dropped;
          BOOST_TEST(!j["dropped"].get<std::string>().empty());
          continue;
        }
        if (std::string(task) == "fac") {
          BOOST_TEST(j["gold"] == dev.at(j["record"].get<std::size_t>() - 1)["relation"]);
          BOOST_TEST(std::count(names.begin(), names.end(), j["predicted"].get<std::string>()) == 1);
          const double p = j["probability"].get<double>();
          BOOST_TEST((p > 0.0 && p <= 1.0));
          right += j["gold"] == j["predicted"];
          ++counted;
        } else {
          const auto gold = j["gold"].get<std::vector<int>>(), guess = j["predicted"].get<std::vector<int>>();
          BOOST_REQUIRE_EQUAL(gold.size(), guess.size());
          BOOST_TEST(j["positions"].size() == gold.size());
          for (std::size_t i = 0; i < gold.size(); ++i) right += gold[i] == guess[i];
          counted += gold.size();
        }
      }
      BOOST_TEST(n == records);
      BOOST_TEST(dropped > 0u);  // max length 16 leaves some out
      BOOST_TEST(n - dropped == lines[0]["eval"]["examples"].get<std::size_t>());
      const char* metric = std::string(task) == "fac" ? "accuracy" : "head_accuracy";
      BOOST_TEST(static_cast<double>(right) / static_cast<double>(counted) == lines[0]["eval"][metric].get<double>());
    }
  }

  const std::string eval = "evaluate" + model + data("fac");
  // A model flag that disagrees with the run, and flags evaluate has no use for.
  fails(eval + out("fac") + " --adapter-size 32", "--adapter-size 32 differs from \"adapter_size\": 16");
  fails(eval + out("fac") + " --adapter-list 0,3", "--adapter-list 0,3 differs from \"adapter_list\": [0,2]");
  fails(eval + out("fac") + " --task lin", "--task lin differs from \"task\": \"fac\"");
  fails(eval + out("fac") + " --compat official", "--compat official differs from \"compat\": \"standard\"");
  fails(eval + out("fac") + " --adapters lin", "--adapters is for downstream runs");
  fails(eval + out("fac") + " --fusion add", "--fusion is for downstream runs");
  fails(eval + out("fac") + " --learning-rate 1e-3", "--learning-rate is read only by training");
  fails(eval + out("fac") + " --eval-steps 2", "--eval-steps is read only by training");
  fails(eval + out("nothing"), "nothing/model.safetensors: not found");
  // The same flags as the run's are accepted.
  BOOST_TEST(run(eval + out("fac") + sizes + " --task fac --compat standard") == 0);
  // A damaged adapter_config.json, one from another encoder, one without compat (older runs:
  // the weights' metadata still knows), and none at all.
  fs::copy(tmp / "fac", tmp / "edited", fs::copy_options::recursive);
  const nlohmann::json cfg = read_json(tmp / "fac" / "adapter_config.json");
  auto edit = [&](const std::function<void(nlohmann::json&)>& change) {
    nlohmann::json j = cfg;
    change(j);
    std::ofstream(tmp / "edited" / "adapter_config.json") << j.dump();
  };
  edit([](nlohmann::json& j) { j["adapter_size"] = "16"; });
  fails(eval + out("edited"), "adapter_config.json: \"adapter_size\" is \"16\", expected an integer");
  edit([](nlohmann::json& j) { j["adapter_list"] = {0, "x"}; });
  fails(eval + out("edited"), "\"adapter_list\" is [0,\"x\"], expected a list of integers");
  edit([](nlohmann::json& j) { j["max_seq_length"] = 4; });
  fails(eval + out("edited"), "--max-seq-length '4' (from " + (tmp / "edited" / "adapter_config.json").string() +
                                  ") is not an integer in [8, 512]");
  edit([](nlohmann::json& j) { j["hidden"] = 768; });
  fails(eval + out("edited"), "\"hidden\" is 768 but the encoder in");
  edit([](nlohmann::json& j) { j.erase("compat"); });
  fails(eval + out("edited") + " --compat official", "the run was trained with --compat standard, not official");
  std::ofstream(tmp / "edited" / "adapter_config.json") << "[1, 2]";
  fails(eval + out("edited"), "adapter_config.json: expected a JSON object, found array");
  fs::remove(tmp / "edited" / "adapter_config.json");
  fails(eval + out("edited"), "--task is needed");
  BOOST_TEST(run(eval + out("edited") + sizes + " --task fac") == 0);  // flags as given

  // A downstream run's adapters and fusion; runs of older versions, whose adapter_config.json
  // has neither fusion nor compat, get them from the weights.
  write_subset(kData / "relation", tmp / "rel", 24);
  const std::string rel = " --data '" + (tmp / "rel").string() + "'";
  for (const char* fusion : {"add", "concat"}) {
    BOOST_TEST_CONTEXT(fusion) {
      const std::string name = std::string("rel_") + fusion;
      BOOST_REQUIRE_EQUAL(run("finetune --task relation --adapters fac,lin --fusion " + std::string(fusion) + model + rel + sizes +
                              " --max-steps 2" + out(name)),
                          0);
      BOOST_REQUIRE_EQUAL(run("evaluate" + model + rel + out(name) + " --batch-size 8"), 0);
      auto lines = eval_lines(tmp / name / "metrics.jsonl");
      BOOST_REQUIRE_EQUAL(lines.size(), 2u);
      BOOST_TEST(lines[1]["eval"] == lines[0]["eval"]);
      fails("evaluate" + model + rel + out(name) + (std::string(fusion) == "add" ? " --fusion concat" : " --fusion add"),
            "differs from \"fusion\": \"" + std::string(fusion) + "\"");
      fails("evaluate" + model + rel + out(name) + " --adapters lin,fac", "--adapters lin,fac differs from \"adapters\": [\"fac\",\"lin\"]");
      nlohmann::json old = read_json(tmp / name / "adapter_config.json");
      old.erase("fusion");
      old.erase("compat");
      std::ofstream(tmp / name / "adapter_config.json") << old.dump();
      BOOST_REQUIRE_EQUAL(run("evaluate" + model + rel + out(name) + " --batch-size 8"), 0);
      lines = eval_lines(tmp / name / "metrics.jsonl");
      BOOST_REQUIRE_EQUAL(lines.size(), 3u);
      BOOST_TEST(lines[2]["eval"] == lines[0]["eval"]);
      fails("evaluate" + model + rel + out(name) + " --compat official", "the run was trained with --compat standard, not official");
    }
  }
  fs::remove_all(tmp);
}

// --train-fraction trains on a seeded share of the training examples, listed in
// OUT/train_records.json: the same run as one on a file holding just those records, resumable
// only with the same fraction.
BOOST_AUTO_TEST_CASE(train_fraction_trains_on_the_listed_examples) {
  const fs::path tmp = fs::temp_directory_path() / ("kadapter_fewshot_cli_" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  write_subset(kData / "lin", tmp / "data", 40);
  auto out = [&](const std::string& name) { return " --out '" + (tmp / name).string() + "'"; };
  auto common = [&](const fs::path& data) {
    return "pretrain --task lin --model '" + kModel.string() + "' --data '" + data.string() +
           "' --epochs 2 --batch-size 4 --max-seq-length 32 --adapter-size 16 --adapter-heads 2 --learning-rate 1e-3";
  };
  const std::string few = common(tmp / "data") + " --train-fraction 0.25";
  const auto [code, text] = run_output(few + out("few"), tmp / "log.txt");
  BOOST_REQUIRE_MESSAGE(code == 0, text);
  const auto records = read_json(tmp / "few" / "train_records.json").get<std::vector<std::size_t>>();
  // A quarter of the usable examples (those the features keep), in file order.
  const auto at = text.find("lin: ");
  BOOST_REQUIRE(at != std::string::npos);
  const std::size_t usable = std::stoul(text.substr(at + 5));
  BOOST_TEST(records.size() == static_cast<std::size_t>(std::llround(0.25 * static_cast<double>(usable))));
  BOOST_TEST(text.find("training on " + std::to_string(records.size()) + " of the " + std::to_string(usable) + " examples") !=
             std::string::npos, text);
  BOOST_TEST(std::is_sorted(records.begin(), records.end()));
  BOOST_TEST((std::adjacent_find(records.begin(), records.end()) == records.end()));
  // The same training as on a file of just those records.
  const nlohmann::json all = read_json(tmp / "data" / "train.json");
  nlohmann::json chosen = nlohmann::json::array();
  for (auto r : records) chosen.push_back(all.at(r - 1));
  fs::create_directories(tmp / "chosen");
  for (const char* split : {"dev.json", "test.json"}) fs::copy_file(tmp / "data" / split, tmp / "chosen" / split);
  std::ofstream(tmp / "chosen" / "train.json") << chosen.dump();
  BOOST_REQUIRE_EQUAL(run(common(tmp / "chosen") + out("direct")), 0);
  BOOST_TEST(!fs::exists(tmp / "direct" / "train_records.json"));
  BOOST_TEST(bytes(tmp / "direct" / "model.safetensors") == bytes(tmp / "few" / "model.safetensors"));
  // Another seed, another share; the best model carries the list.
  BOOST_REQUIRE_EQUAL(run(few + " --seed 7 --eval-steps epoch" + out("seed7")), 0);
  BOOST_TEST((read_json(tmp / "seed7" / "train_records.json").get<std::vector<std::size_t>>() != records));
  BOOST_TEST(bytes(tmp / "seed7" / "best" / "train_records.json") == bytes(tmp / "seed7" / "train_records.json"));
  // Interrupted and resumed: the same examples and weights. Another fraction or seed is
  // refused before anything is written; left out, the flags are the run's (runs.jsonl).
  BOOST_REQUIRE_EQUAL(run(few + " --save-steps 1 --stop-after 2" + out("resumed")), 0);
  const auto [c3, why3] = run_output(common(tmp / "data") + " --train-fraction 0.5 --resume" + out("resumed"), tmp / "log.txt");
  BOOST_TEST(c3 == 2);
  BOOST_TEST(why3.find("--resume: --train-fraction 0.5 differs from the run's 0.25 (" + (tmp / "resumed" / "runs.jsonl").string()) !=
                 std::string::npos, why3);
  const auto [c5, why5] = run_output(few + " --seed 7 --resume" + out("resumed"), tmp / "log.txt");
  BOOST_TEST(c5 == 2);
  BOOST_TEST(why5.find("--seed 7 differs from the run's 42") != std::string::npos, why5);
  BOOST_TEST((read_json(tmp / "resumed" / "train_records.json").get<std::vector<std::size_t>>() == records));
  BOOST_REQUIRE_EQUAL(run(common(tmp / "data") + " --resume" + out("resumed")), 0);
  BOOST_TEST(bytes(tmp / "resumed" / "model.safetensors") == bytes(tmp / "few" / "model.safetensors"));
  BOOST_TEST(json_lines(tmp / "resumed" / "runs.jsonl").back()["args"]["train-fraction"].get<std::string>() == "0.25");
  // A share that rounds to every example still lists them.
  {
    const auto [code, text] = run_output(common(tmp / "data") + " --train-fraction 0.999 --max-steps 1" + out("nearly"), tmp / "log.txt");
    BOOST_REQUIRE_MESSAGE(code == 0, text);
    long long used = -1, usable = -2;
    const auto at = text.find("--train-fraction 0.999: training on ");
    BOOST_REQUIRE_MESSAGE(at != std::string::npos, text);
    BOOST_REQUIRE(std::sscanf(text.c_str() + at, "--train-fraction 0.999: training on %lld of the %lld", &used, &usable) == 2);
    BOOST_TEST(used == usable);
    BOOST_TEST(read_json(tmp / "nearly" / "train_records.json").size() == static_cast<std::size_t>(usable));
  }
  // A full run into the same --out drops the list; bad values are named.
  BOOST_REQUIRE_EQUAL(run(common(tmp / "data") + " --max-steps 1" + out("few")), 0);
  BOOST_TEST(!fs::exists(tmp / "few" / "train_records.json"));
  for (const auto& [value, words] : std::vector<std::pair<std::string, std::string>>{
           {"0", "--train-fraction 0 leaves nothing to train on"}, {"1.5", "--train-fraction '1.5' is not a number in [0, 1]"},
           {"x", "--train-fraction 'x' is not a number"}}) {
    const auto [c, t] = run_output(common(tmp / "data") + " --train-fraction " + value + out("bad"), tmp / "log.txt");
    BOOST_TEST(c == 2);
    BOOST_TEST(t.find(words) != std::string::npos, t);
  }
  BOOST_TEST(!fs::exists(tmp / "bad"));
  fs::remove_all(tmp);
}

// --negative-sample N keeps only the first N - 1 no_relation examples of the training file
// (the authors' counter): the same run as one on a file without the others.
BOOST_AUTO_TEST_CASE(negative_sample_keeps_the_first_no_relation_examples) {
  const fs::path tmp = fs::temp_directory_path() / ("kadapter_negative_cli_" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  write_subset(kData / "relation", tmp / "data", 40);
  const nlohmann::json all = read_json(tmp / "data" / "train.json");
  nlohmann::json kept = nlohmann::json::array();
  std::size_t negatives = 0;
  for (const auto& x : all) {
    if (x["relation"] == "no_relation" && ++negatives > 3) continue;
    kept.push_back(x);
  }
  BOOST_REQUIRE(negatives > 4u);  // the subset has no_relation examples to leave out
  fs::create_directories(tmp / "filtered");
  for (const char* split : {"dev.json", "test.json"}) fs::copy_file(tmp / "data" / split, tmp / "filtered" / split);
  std::ofstream(tmp / "filtered" / "train.json") << kept.dump();
  auto common = [&](const fs::path& data) {
    return "finetune --task relation --model '" + kModel.string() + "' --data '" + data.string() +
           "' --epochs 2 --batch-size 8 --max-seq-length 48 --adapter-size 16 --adapter-heads 2 --learning-rate 1e-3";
  };
  const auto [code, text] = run_output(common(tmp / "data") + " --negative-sample 4 --out '" + (tmp / "sampled").string() + "'",
                                       tmp / "log.txt");
  BOOST_REQUIRE_MESSAGE(code == 0, text);
  BOOST_TEST(text.find(std::to_string(negatives - 3) + " no_relation left out by --negative-sample") != std::string::npos, text);
  BOOST_REQUIRE_EQUAL(run(common(tmp / "filtered") + " --out '" + (tmp / "direct").string() + "'"), 0);
  BOOST_TEST(bytes(tmp / "sampled" / "model.safetensors") == bytes(tmp / "direct" / "model.safetensors"));
  BOOST_TEST(bytes(tmp / "sampled" / "labels.json") == bytes(tmp / "direct" / "labels.json"));
  // The evaluation splits are read whole.
  BOOST_TEST(eval_lines(tmp / "sampled" / "metrics.jsonl").back()["eval"] == eval_lines(tmp / "direct" / "metrics.jsonl").back()["eval"]);
  // A resume must read the same training examples: another --negative-sample is refused, and
  // left out it is the run's.
  BOOST_REQUIRE_EQUAL(run(common(tmp / "data") + " --negative-sample 4 --save-steps 1 --stop-after 1 --out '" + (tmp / "cut").string() + "'"), 0);
  const auto [c3, t3] = run_output(common(tmp / "data") + " --negative-sample 2 --resume --out '" + (tmp / "cut").string() + "'", tmp / "log.txt");
  BOOST_TEST(c3 == 2);
  BOOST_TEST(t3.find("--negative-sample 2 differs from the run's 4") != std::string::npos, t3);
  BOOST_REQUIRE_EQUAL(run(common(tmp / "data") + " --resume --out '" + (tmp / "cut").string() + "'"), 0);
  BOOST_TEST(bytes(tmp / "cut" / "model.safetensors") == bytes(tmp / "sampled" / "model.safetensors"));
  // Only relation data has no_relation examples to count.
  const auto [c2, t2] = run_output("pretrain --task lin --model '" + kModel.string() + "' --data '" + (kData / "lin").string() +
                                       "' --negative-sample 4 --out '" + (tmp / "bad").string() + "'",
                                   tmp / "log.txt");
  BOOST_TEST(c2 == 2);
  BOOST_TEST(t2.find("--negative-sample 4 applies to relation data") != std::string::npos, t2);
  BOOST_TEST(!fs::exists(tmp / "bad"));
  fs::remove_all(tmp);
}

// The data set's label list (DATA/relations.txt, DATA/types.txt) numbers the labels and names
// every label outside it; an earlier run's labels in --out are not a fresh run's; adapters are
// never evaluated, resumed or fine-tuned on other encoder weights than they were trained on;
// linguistic data may be CoNLL-U; questionable flag combinations are warned about.
BOOST_AUTO_TEST_CASE(label_lists_encoder_weights_and_conllu) {
  const fs::path tmp = scratch("kadapter_labels_cli");
  const std::string model = " --model '" + kModel.string() + "'";
  const std::string shape = " --batch-size 4 --max-seq-length 32 --adapter-size 16 --adapter-heads 2";
  const std::string sizes = shape + " --max-steps 2";
  auto data = [&](const fs::path& d) { return " --data '" + d.string() + "'"; };
  auto out = [&](const char* name) { return " --out '" + (tmp / name).string() + "'"; };
  auto fails = [&](const std::string& args, const std::string& words) { expect_failure(args, words, tmp / "log.txt"); };
  auto write = [](const fs::path& p, const nlohmann::json& j) { std::ofstream(p) << j.dump(); };
  auto pretrain = [&](const char* task, const fs::path& d) { return std::string("pretrain --task ") + task + model + data(d) + sizes; };

  // Labels are numbered as relations.txt lists them (not in order of first appearance).
  BOOST_REQUIRE_EQUAL(run(pretrain("fac", kData / "fac") + out("fac")), 0);
  const auto listed = kadapter::io::read_label_list(kData / "fac" / "relations.txt");
  BOOST_TEST(read_json(tmp / "fac" / "labels.json").get<std::vector<std::string>>() == listed);
  BOOST_TEST(kadapter::io::relation_labels(kadapter::io::read_relations(kData / "fac" / "train.json").examples) != listed);

  // A listed label without training examples gets an output, and a note.
  fs::copy(kData / "fac", tmp / "extra");
  std::ofstream(tmp / "extra" / "relations.txt", std::ios::app) << "P999\tunused\n";
  {
    const auto [code, text] = run_output(pretrain("fac", tmp / "extra") + out("extra"), tmp / "log.txt");
    BOOST_TEST(code == 0, text);
    BOOST_TEST(text.find("note: 1 label(s) of " + (tmp / "extra" / "relations.txt").string() + " have no training example (\"P999\")") !=
                   std::string::npos,
               text);
    BOOST_TEST(read_json(tmp / "extra" / "labels.json").size() == listed.size() + 1);
  }

  // A label the list does not name is an error naming the file and record; nothing is written.
  fs::copy(kData / "fac", tmp / "typo");
  const nlohmann::json train = read_json(kData / "fac" / "train.json"), dev = read_json(kData / "fac" / "dev.json");
  nlohmann::json bad = train;
  bad[2]["relation"] = "P17x";
  write(tmp / "typo" / "train.json", bad);
  fails(pretrain("fac", tmp / "typo") + out("x"), (tmp / "typo" / "train.json").string() + ": record 3: relation \"P17x\" is not in " +
                                                      (tmp / "typo" / "relations.txt").string());
  write(tmp / "typo" / "train.json", train);
  bad = dev;
  bad[0]["relation"] = "P999";
  write(tmp / "typo" / "dev.json", bad);
  fails(pretrain("fac", tmp / "typo") + out("x"), (tmp / "typo" / "dev.json").string() + ": record 1: relation \"P999\" is not in");
  write(tmp / "typo" / "dev.json", dev);
  std::ofstream(tmp / "typo" / "relations.txt", std::ios::app) << "P17\tagain\n";
  fails(pretrain("fac", tmp / "typo") + out("x"), "relations.txt: line 12: label \"P17\" is listed again (first on line 1)");
  fs::copy(kData / "entity_typing", tmp / "types");
  bad = read_json(kData / "entity_typing" / "dev.json");
  bad[0]["labels"].push_back("planet");
  write(tmp / "types" / "dev.json", bad);
  fails("finetune --task entity-typing" + model + data(tmp / "types") + sizes + out("x"),
        (tmp / "types" / "dev.json").string() + ": record 1: type \"planet\" is not in " + (tmp / "types" / "types.txt").string());
  BOOST_TEST(!fs::exists(tmp / "x"));

  // A fresh run does not take the labels of an earlier run in --out (here without a label
  // list: in order of first appearance), and keeps that run's as labels.json.previous.
  write_subset(kData / "relation", tmp / "rel", 24);
  fs::copy(tmp / "fac", tmp / "mix", fs::copy_options::recursive);
  BOOST_REQUIRE_EQUAL(run("finetune --task relation" + model + data(tmp / "rel") + sizes + out("mix")), 0);
  {
    auto seen = kadapter::io::read_relations(tmp / "rel" / "train.json").examples;
    for (auto& x : kadapter::io::read_relations(tmp / "rel" / "dev.json").examples) seen.push_back(x);
    BOOST_TEST(read_json(tmp / "mix" / "labels.json").get<std::vector<std::string>>() == kadapter::io::relation_labels(seen));
  }
  BOOST_TEST(bytes(tmp / "mix" / "labels.json.previous") == bytes(tmp / "fac" / "labels.json"));
  // Behind the interrupted run below, which has no model, the relation run's model is
  // model.safetensors.previous: a fresh run, which would remove it, is refused until it has
  // been moved away. Then a .previous file of a run older than the earlier one goes, so that
  // none stays as if it were the interrupted run's.
  BOOST_REQUIRE(fs::exists(tmp / "mix" / "model.safetensors"));
  BOOST_REQUIRE_EQUAL(run(pretrain("fac", kData / "fac") + " --stop-after 1" + out("mix")), 0);
  const std::string relation_model = bytes(tmp / "mix" / "model.safetensors.previous");
  BOOST_REQUIRE(!relation_model.empty());
  fails(pretrain("fac", kData / "fac") + out("mix"), "holds a run that did not finish (it has no model.safetensors)");
  BOOST_TEST(bytes(tmp / "mix" / "model.safetensors.previous") == relation_model);
  fs::rename(tmp / "mix" / "model.safetensors.previous", tmp / "relation_model.safetensors");
  BOOST_REQUIRE(fs::exists(tmp / "mix" / "adapter_config.json.previous"));  // the relation run's
  BOOST_REQUIRE_EQUAL(run(pretrain("fac", kData / "fac") + out("mix")), 0);
  BOOST_TEST(!fs::exists(tmp / "mix" / "model.safetensors.previous"));
  BOOST_TEST(!fs::exists(tmp / "mix" / "adapter_config.json.previous"));
  BOOST_TEST(bytes(tmp / "mix" / "labels.json.previous") == bytes(tmp / "fac" / "labels.json"));

  // What a fresh run left when it failed before writing its log (an empty checkpoint/ and its
  // labels.json) is no earlier run: the next fresh run keeps the .previous files of the run
  // before it.
  BOOST_REQUIRE_EQUAL(run(pretrain("fac", kData / "fac") + out("keep")), 0);
  const std::string kept_model = bytes(tmp / "keep" / "model.safetensors");
  BOOST_REQUIRE_EQUAL(run(pretrain("fac", kData / "fac") + out("keep")), 0);
  for (const char* name : {"model.safetensors", "adapter_config.json", "metrics.jsonl", "runs.jsonl"}) fs::remove(tmp / "keep" / name);
  fs::remove_all(tmp / "keep" / "checkpoint");
  fs::create_directories(tmp / "keep" / "checkpoint");
  {
    const auto [code, text] = run_output(pretrain("fac", kData / "fac") + out("keep"), tmp / "log.txt");
    BOOST_REQUIRE_MESSAGE(code == 0, text);
    BOOST_TEST(text.find("note: moved") == std::string::npos, text);
    BOOST_TEST(bytes(tmp / "keep" / "model.safetensors.previous") == kept_model);
  }

  // A resume whose label list changed is refused.
  fs::copy(kData / "fac", tmp / "grow");
  const std::string grow = "pretrain --task fac" + model + data(tmp / "grow") + shape + " --max-steps 4 --save-steps 2";
  BOOST_REQUIRE_EQUAL(run(grow + " --stop-after 2" + out("part")), 0);
  std::ofstream(tmp / "grow" / "relations.txt", std::ios::app) << "P999\tnew\n";
  fails(grow + " --resume" + out("part"),
        "--resume: " + (tmp / "grow" / "relations.txt").string() + " names 12 labels, not the 11 labels of the run");
  // A resume whose training file was edited in place (the same records, another word) is
  // refused; with the file as it was, it goes on.
  fs::copy(kData / "fac", tmp / "edit");
  const std::string edit = "pretrain --task fac" + model + data(tmp / "edit") + shape + " --max-steps 4 --save-steps 2";
  BOOST_REQUIRE_EQUAL(run(edit + " --stop-after 2" + out("part3")), 0);
  {
    nlohmann::json edited = train;
    edited[0]["token"][0] = "Zebra";
    write(tmp / "edit" / "train.json", edited);
  }
  fails(edit + " --resume" + out("part3"), "--resume: the training examples' tokens or labels differ from those of the checkpoint (" +
                                              (tmp / "part3" / "checkpoint" / "optimizer.safetensors").string() + "): " +
                                              (tmp / "edit" / "train.json").string() + " or the tokenizer of --model changed");
  write(tmp / "edit" / "train.json", train);
  BOOST_REQUIRE_EQUAL(run(edit + " --resume" + out("part3")), 0);
  // A run numbered without a list resumes with its own ids when a list of the same labels
  // (in another order) has appeared.
  fs::create_directories(tmp / "nolist");
  for (const char* split : {"train.json", "dev.json", "test.json"}) fs::copy_file(kData / "fac" / split, tmp / "nolist" / split);
  const std::string nolist = "pretrain --task fac" + model + data(tmp / "nolist") + shape + " --max-steps 4 --save-steps 2";
  BOOST_REQUIRE_EQUAL(run(nolist + " --stop-after 2" + out("part2")), 0);
  const std::string first_seen = bytes(tmp / "part2" / "labels.json");
  BOOST_TEST(read_json(tmp / "part2" / "labels.json").get<std::vector<std::string>>() != listed);
  fs::copy_file(kData / "fac" / "relations.txt", tmp / "nolist" / "relations.txt");
  BOOST_REQUIRE_EQUAL(run(nolist + " --resume" + out("part2")), 0);
  BOOST_TEST(bytes(tmp / "part2" / "labels.json") == first_seen);
  BOOST_TEST(fs::exists(tmp / "part2" / "model.safetensors"));

  // Other encoder weights (one value changed) under another --model: refused by evaluate,
  // --resume and finetune --adapter-dirs. The same weights under another path are accepted.
  for (const char* name : {"changed", "same"}) {
    fs::create_directories(tmp / name);
    for (const auto& e : fs::directory_iterator(kModel))
      if (e.is_regular_file()) fs::copy_file(e.path(), tmp / name / e.path().filename());
  }
  {
    const fs::path file = tmp / "changed" / "model.safetensors";
    const kadapter::io::TensorInfo info = kadapter::io::SafetensorsFile(file).info("embeddings.LayerNorm.weight");
    std::fstream f(file, std::ios::binary | std::ios::in | std::ios::out);
    std::uint64_t header = 0;
    f.read(reinterpret_cast<char*>(&header), 8);
    f.seekp(static_cast<std::streamoff>(8 + header + info.begin));
    const float v = 0.5f;
    f.write(reinterpret_cast<const char*>(&v), 4);
  }
  const std::string changed = " --model '" + (tmp / "changed").string() + "'";
  fails("evaluate --task fac" + changed + data(kData / "fac") + out("fac"), "was trained on an encoder with other weights");
  BOOST_REQUIRE_EQUAL(run("evaluate --task fac --model '" + (tmp / "same").string() + "'" + data(kData / "fac") + out("fac")), 0);
  // A run of an older version, without a "backbone", is evaluated on the --model given.
  fs::copy(tmp / "fac", tmp / "old", fs::copy_options::recursive);
  {
    nlohmann::json cfg = read_json(tmp / "old" / "adapter_config.json");
    BOOST_TEST(cfg.erase("backbone") == 1u);
    write(tmp / "old" / "adapter_config.json", cfg);
  }
  BOOST_TEST(run("evaluate --task fac" + changed + data(kData / "fac") + out("old")) == 0);
  fs::remove(tmp / "grow" / "relations.txt");
  fs::copy_file(kData / "fac" / "relations.txt", tmp / "grow" / "relations.txt");
  fails("pretrain --task fac" + changed + data(tmp / "grow") + " --resume" + out("part"),
        "--resume: the checkpoint " + (tmp / "part" / "checkpoint" / "optimizer.safetensors").string() +
            " was trained on an encoder with other weights");
  fails("finetune --task relation" + changed + data(tmp / "rel") + sizes + " --adapters fac --adapter-dirs '" + (tmp / "fac").string() + "'" +
            out("x"),
        "(" + (tmp / "fac" / "adapter_config.json").string() + ") was trained on an encoder with other weights");
  BOOST_TEST(!fs::exists(tmp / "x"));

  // Linguistic data from CoNLL-U files trains as the same sentences in find_head JSON.
  fs::create_directories(tmp / "conllu");
  for (const char* split : {"train", "dev", "test"})
    fs::copy_file(kData / "lin" / (std::string(split) + ".conllu"), tmp / "conllu" / (std::string(split) + ".conllu"));
  BOOST_REQUIRE_EQUAL(run(pretrain("lin", kData / "lin") + out("lin_json")), 0);
  BOOST_REQUIRE_EQUAL(run(pretrain("lin", tmp / "conllu") + out("lin_conllu")), 0);
  BOOST_TEST(step_losses(tmp / "lin_conllu" / "metrics.jsonl") == step_losses(tmp / "lin_json" / "metrics.jsonl"));
  BOOST_TEST(eval_lines(tmp / "lin_conllu" / "metrics.jsonl").back()["eval"] == eval_lines(tmp / "lin_json" / "metrics.jsonl").back()["eval"]);
  fs::create_directories(tmp / "empty");
  fails(pretrain("lin", tmp / "empty") + out("x"), "--data " + (tmp / "empty").string() + ": no train.json or train.conllu (the train split: find_head JSON or CoNLL-U)");
  // Relation data is a JSON list: a train.jsonl is not taken for it.
  fs::create_directories(tmp / "lines");
  fs::copy_file(kData / "fac" / "train.json", tmp / "lines" / "train.jsonl");
  fails(pretrain("fac", tmp / "lines") + out("x"),
        "--data " + (tmp / "lines").string() + ": no train.json (the train split: a JSON list of relation records)");
  BOOST_TEST(!fs::exists(tmp / "x"));

  // Combinations that run, but likely not as meant, are warned about.
  {
    write_subset(kData / "fac", tmp / "small", 24);  // 6 batches of 4
    const auto [code, text] = run_output(pretrain("fac", tmp / "small") + " --warmup-steps 2 --stop-after 3 --gradient-accumulation-steps 8" +
                                             out("warn"), tmp / "log.txt");
    BOOST_TEST(code == 0, text);
    BOOST_TEST(text.find("warning: --warmup-steps 2 is not less than the run's 2 steps") != std::string::npos, text);
    BOOST_TEST(text.find("warning: --stop-after 3 is beyond the run's 2 steps") != std::string::npos, text);
    BOOST_TEST(text.find("warning: --gradient-accumulation-steps 8 is more than the 6 batches of an epoch") != std::string::npos, text);
    const auto [quiet_code, quiet] = run_output(pretrain("fac", tmp / "small") + " --warmup-steps 1 --stop-after 2 --gradient-accumulation-steps 6" +
                                                    out("warn"), tmp / "log.txt");
    BOOST_TEST(quiet_code == 0, quiet);
    BOOST_TEST(quiet.find("warning:") == std::string::npos, quiet);
  }
  fs::remove_all(tmp);
}
