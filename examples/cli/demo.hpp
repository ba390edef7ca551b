// `kadapter demo`: the whole K-Adapter pipeline on the bundled data and the small real
// encoder: pre-train a factual and a linguistic adapter, then fine-tune relation
// classification with the head only, +factual, +linguistic and +both, and print the table.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cli/train.hpp"

namespace kadapter::cli {

inline int run_demo(const std::vector<std::string>& argv) {
  Args args("demo",
            {{"model", "DIR", "frozen encoder", false, "models/all-MiniLM-L6-v2"},
             {"data", "DIR", "the bundled data sets", false, "data/demo"},
             {"out", "DIR", "checkpoints, metrics and the table", false, "runs/demo"},
             {"threads", "N", "threads for the matrix products (0: default)", false, "0"}},
            argv);
  if (args.help()) {
    std::fputs(args.usage().c_str(), stdout);
    return 0;
  }
  const std::string model = args.get("model"), data = args.get("data"), out = args.get("out");
  if (!fs::exists(fs::path(model) / "model.safetensors"))
    throw Error(model + ": no model.safetensors (scripts/setup.sh installs all-MiniLM-L6-v2 there)");
  const std::vector<std::string> common = {"--model", model, "--threads", args.get("threads"),
                                           "--adapter-list", "0,3,6", "--adapter-size", "192",
                                           "--adapter-heads", "4", "--batch-size", "32",
                                           "--max-seq-length", "64"};
  auto run = [&](const std::string& cmd, std::vector<std::string> a) {
    a.insert(a.end(), common.begin(), common.end());
    std::fprintf(stderr, "\n== kadapter %s", cmd.c_str());
    for (const auto& s : a) std::fprintf(stderr, " %s", s.c_str());
    std::fprintf(stderr, "\n");
    Args parsed(cmd, training_options(cmd == "finetune"), a);
    return run_training(parsed, cmd == "finetune");
  };
  const TrainResult fac = run("pretrain", {"--task", "fac", "--data", data + "/fac", "--out", out + "/fac",
                                           "--epochs", "2", "--learning-rate", "1e-3", "--warmup-steps", "20"});
  const TrainResult lin = run("pretrain", {"--task", "lin", "--data", data + "/lin", "--out", out + "/lin",
                                           "--epochs", "3", "--learning-rate", "1e-3", "--warmup-steps", "20"});
  struct Row {
    std::string name, adapters, dirs;
  };
  const std::vector<Row> rows = {{"head only", "", ""},
                                 {"+factual", "fac", out + "/fac"},
                                 {"+linguistic", "lin", out + "/lin"},
                                 {"+factual +linguistic", "fac,lin", out + "/fac," + out + "/lin"}};
  std::vector<TrainResult> results;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::vector<std::string> a = {"--task", "relation", "--data", data + "/relation",
                                  "--out", out + "/relation_" + std::to_string(i), "--epochs", "2",
                                  "--learning-rate", "1e-3", "--warmup-steps", "20",
                                  "--eval-split", "test", "--freeze-adapters"};
    if (!rows[i].adapters.empty()) {
      a.insert(a.end(), {"--adapters", rows[i].adapters, "--adapter-dirs", rows[i].dirs});
    }
    results.push_back(run("finetune", a));
  }
  std::printf("\nPre-training (dev): factual accuracy %.3f, linguistic head accuracy %.3f\n",
              fac.metrics.value("accuracy", 0.0), lin.metrics.value("head_accuracy", 0.0));
  std::printf("\nRelation classification on the held-out test split (micro F1 without no_relation)\n\n");
  std::printf("| model | precision | recall | micro F1 |\n|---|---|---|---|\n");
  for (std::size_t i = 0; i < rows.size(); ++i)
    std::printf("| %s | %.3f | %.3f | %.3f |\n", rows[i].name.c_str(),
                results[i].metrics.value("precision", 0.0), results[i].metrics.value("recall", 0.0),
                results[i].metrics.value("micro_f1", 0.0));
  std::printf("\nCheckpoints and metrics.jsonl under %s\n", out.c_str());
  // Learning curves: scripts/plot_metrics.py, with the first Python that has matplotlib
  // (scripts/setup.sh installs Debian's python3-matplotlib for /usr/bin/python3).
  const std::string plot_args = " scripts/plot_metrics.py '" + out + "/fac' '" + out + "/lin' '" +
                                out + "/relation_0' '" + out + "/relation_3' --out '" + out +
                                "/curves.png' > /dev/null 2>&1";
  bool plotted = false;
  for (const char* py : {"python3", "/usr/bin/python3"})
    if (!plotted && std::system((std::string(py) + plot_args).c_str()) == 0) plotted = true;
  if (plotted)
    std::printf("Learning curves: %s/curves.png\n", out.c_str());
  else
    std::printf("Learning curves: install matplotlib, then python3%s\n",
                plot_args.substr(0, plot_args.find(" > /dev/null")).c_str());
  return 0;
}

}  // namespace kadapter::cli
