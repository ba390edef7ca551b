// `kadapter pretrain` and `kadapter finetune`: train an adapter (and head) on one of the
// authors' data formats, on top of a frozen encoder, with checkpoints and exact resume.
#pragma once

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <chrono>
#include <random>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "cli/args.hpp"
#include "cli/memory.hpp"
#include "cli/progress.hpp"
#include "kadapter/io/bpe.hpp"
#include "kadapter/io/wordpiece.hpp"
#include "kadapter/kadapter.hpp"

namespace kadapter::cli {

namespace fs = std::filesystem;

/// Every example of a split as fixed-length rows, ready to be cut into batches.
struct PackedSplit {
  index_t count = 0, seq = 0, labels_per_row = 0;
  index_t rows_per_example = 1;                 // multiple choice: one sequence per answer
  std::vector<std::int64_t> ids, mask, labels;  // (n, T) (n, T) (n) or (n, T)
  std::vector<float> targets, subj, obj, start; // entity typing (n, C); marker rows (n, T)
  std::size_t read = 0, dropped = 0;
  std::size_t filtered = 0;                     // no_relation records left out (negative_sample)
  std::vector<std::size_t> records;             // (n) each example's 1-based record in its file
  std::vector<io::DroppedExample> left_out;     // the examples dropped, with the reason
  std::vector<std::string> ids_of_examples;     // multiple choice: each question's `id` ("" when none)
};

/// Options shared by pretrain and finetune.
inline std::vector<OptionSpec> training_options(bool finetune) {
  std::vector<OptionSpec> o = {
      {"task", finetune ? "relation|entity-typing|multiple-choice" : "fac|lin", "what to train", true, ""},
      {"model", "DIR", "frozen encoder: config.json, model.safetensors and the tokenizer files", false, "models/all-MiniLM-L6-v2"},
      {"data", "DIR", "train, dev, test in the authors' formats: fac, relation: NAME.json (a JSON list); lin: NAME.json (find_head) or NAME.conllu; entity typing: NAME.jsonl or NAME.json (a JSON list or JSON lines); multiple choice: NAME.jsonl or NAME.json (CosmosQA JSON lines); relations.txt or types.txt, when present, fixes the label ids", true, ""},
      {"out", "DIR", "output: model.safetensors, metrics.jsonl, runs.jsonl (each invocation's options), checkpoint/", true, ""},
      {"max-seq-length", "T", "tokens per sequence", false, "64"},
      {"batch-size", "B", "examples per step (multiple choice: questions, each with all its answer choices; per micro-batch with --gradient-accumulation-steps)", false, "32"},
      {"gradient-accumulation-steps", "N", "micro-batches of --batch-size per optimizer step (the gradient of their mean loss)", false, "1"},
      {"epochs", "N", "passes over the training data", false, "1"},
      {"max-steps", "N", "stop after N steps (0: run the epochs)", false, "0"},
      {"learning-rate", "LR", "peak learning rate", false, "5e-5"},
      {"warmup-steps", "N", "linear warmup steps", false, "0"},
      {"weight-decay", "W", "AdamW weight decay", false, "0"},
      {"adam-epsilon", "EPS", "AdamW epsilon (the authors' CosmosQA run: 1e-6)", false, "1e-8"},
      {"max-grad-norm", "auto|N", "clip the gradient's global norm at N (0: no clipping); auto: 1, or 0 for multiple-choice, as the authors' scripts", false, "auto"},
      {"adapter-list", "LIST", "plug-in points (hidden-state indices)", false, "0,3,6"},
      {"adapter-size", "HA", "adapter width", false, "192"},
      {"adapter-transformer-layers", "N", "transformer layers per adapter layer", false, "1"},
      {"adapter-heads", "A", "attention heads inside the adapter", false, "4"},
      {"adapter-skip-layers", "K", "skip connections every K adapter layers", false, "0"},
      {"dropout", "P", "dropout of adapters and head", false, "0.1"},
      {"compat", "standard|official", "official: the authors' quirks", false, "standard"},
      {"seed", "S", "data order and dropout seed", false, "42"},
      {"save-steps", "N", "checkpoint every N steps (0: only at the end)", false, "0"},
      {"resume", "", "continue from OUT/checkpoint exactly, with the run's settings (OUT/runs.jsonl): a flag left out takes the run's value (--task and --data included)", false, ""},
      {"stop-after", "N", "stop after N steps without the final save (to test --resume)", false, "0"},
      {"eval-split", "dev|test|dev,test", "split(s) evaluated at the end (and during training with --eval-steps); the first one chooses the best model", false, "dev"},
      {"eval-steps", "N|epoch", "also evaluate every N steps, or after every epoch (as the authors' fine-tuning scripts), and keep the best model in OUT/best (0: only at the end)", false, "0"},
      {"threads", "N", "threads for the matrix products (0: default)", false, "0"},
      {"device", "cpu|cuda", "where the backbone and the model run (cuda: the first GPU)", false, "cpu"},
      {"dtype", "fp32|tf32|bf16", "arithmetic of the matrix products; tf32 and bf16 (tensor cores, fp32 accumulation, fp32 weights and optimizer) need --device cuda", false, "fp32"},
      {"bucketing", "auto|none|trim|sort", "none: pad every batch to T; trim: pad a batch to its longest sequence (same numbers); sort: also group sequences of similar length; auto: trim, or none under --compat official", false, "auto"},
      {"feature-cache", "auto|off|memory|DIR", "compute the frozen backbone's states once and reuse them every epoch (and every evaluation with --eval-steps), in memory or in a file under DIR; auto: memory when training runs more than one epoch (evaluation splits: when evaluated during training), within half of the available memory", false, "auto"},
      {"cache-dtype", "fp16|bf16|fp32", "storage of the cached states", false, "fp16"},
      {"negative-sample", "N", "relation data (fac, relation): keep only the first N - 1 no_relation examples of the training file, as the authors' --negative_sample (their TACRED script: 45000; 0: keep all)", false, "0"},
      {"train-fraction", "F", "train on a random share F in (0, 1] of the usable training examples, chosen by --seed (few-shot runs, as the paper's 1%, 5% and 10% of TACRED); OUT/train_records.json lists their records", false, "1"}};
  if (finetune) {
    o.push_back({"adapters", "LIST", "downstream adapters, e.g. fac,lin (empty: head only)", false, ""});
    o.push_back({"adapter-dirs", "LIST", "pre-training outputs of those adapters, same order", false, ""});
    o.push_back({"fusion", "concat|add", "how adapters are combined", false, "concat"});
    o.push_back({"freeze-adapters", "", "train only fusion and head", false, ""});
  }
  return o;
}

namespace detail {

inline std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (!s.empty() && start <= s.size()) {
    const std::size_t end = std::min(s.find(',', start), s.size());
    if (end > start) out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

/// The examples of @p file as rows. Multiple-choice questions without a label are an error
/// when @p labels_required, else read as unscored (label -100: predicted, not scored).
/// Relation data keeps only the first @p negative_sample - 1 `no_relation` records when it is
/// positive (the authors' `--negative_sample` of training files). Labels not in @p labels
/// are added, unless @p closed_by names the file that @p labels came from: then such a label
/// is an error naming the record, the file and (@p closed_why) what to do.
template <class Tok>
PackedSplit pack(Task task, const fs::path& file, const Tok& tok, io::LabelMap& labels,
                 index_t T, io::Convention conv, bool labels_required, std::int64_t negative_sample = 0,
                 const fs::path& closed_by = {}, const std::string& closed_why = {}) {
  PackedSplit p;
  auto add_label = [&](const std::string& name, std::size_t record, const char* what) {
    if (!closed_by.empty() && !labels.contains(name))
      throw Error(file.string() + ": record " + std::to_string(record) + ": " + what + " \"" + name + "\" is not in " +
                  closed_by.string() + " (" + closed_why + ")");
    labels.add(name);
  };
  p.seq = T;
  auto append_rows = [&](const std::vector<std::int64_t>& ids, const std::vector<std::int64_t>& mask) {
    p.ids.insert(p.ids.end(), ids.begin(), ids.end());
    p.mask.insert(p.mask.end(), mask.begin(), mask.end());
    ++p.count;
  };
  if (task == Task::fac || task == Task::relation) {
    io::RelationReadOptions ro;
    if (negative_sample > 0) ro.negative_sample = negative_sample;
    const auto r = io::read_relations(file, ro);
    p.filtered = r.report.filtered;
    for (const auto& x : r.examples) add_label(x.relation, x.record, "relation");
    io::RelationFeatureOptions fo;
    fo.max_seq_length = T;
    fo.convention = conv;
    const auto fs_ = io::build_relation_features(r.examples, tok, labels, fo);
    for (std::size_t i = 0; i < fs_.features.size(); ++i) {
      const auto& f = fs_.features[i];
      p.records.push_back(r.examples[fs_.example_index[i]].record);
      append_rows(f.input_ids, f.attention_mask);
      p.labels.push_back(f.label);
      p.subj.insert(p.subj.end(), f.subj_special_start_id.begin(), f.subj_special_start_id.end());
      p.obj.insert(p.obj.end(), f.obj_special_start_id.begin(), f.obj_special_start_id.end());
    }
    p.read = r.examples.size();
    p.dropped = fs_.dropped.size();
    p.left_out = fs_.dropped;
  } else if (task == Task::lin) {
    const auto r = file.extension() == ".conllu" ? io::read_conllu(file, io::HeadReadOptions{})
                                                 : io::read_find_head(file, io::HeadReadOptions{});
    io::HeadFeatureOptions fo;
    fo.max_seq_length = T;
    fo.convention = conv;
    const auto fs_ = io::build_head_features(r.examples, tok, fo);
    for (std::size_t i = 0; i < fs_.features.size(); ++i) {
      const auto& f = fs_.features[i];
      p.records.push_back(r.examples[fs_.example_index[i]].record);
      // The loss counts the positions the authors count (loss_mask).
      append_rows(f.input_ids, f.attention_mask);
      p.labels.insert(p.labels.end(), f.labels.begin(), f.labels.end());
      p.targets.insert(p.targets.end(), f.loss_mask.begin(), f.loss_mask.end());
    }
    p.read = r.examples.size();
    p.dropped = fs_.dropped.size();
    p.left_out = fs_.dropped;
  } else if (task == Task::multiple_choice) {
    io::MultipleChoiceReadOptions ro;
    ro.require_label = labels_required;
    const auto r = io::read_multiple_choice(file, ro);
    io::MultipleChoiceFeatureOptions fo;
    fo.max_seq_length = T;
    fo.convention = conv;
    const auto feats = io::build_multiple_choice_features(r.examples, tok, fo);
    for (std::size_t i = 0; i < feats.size(); ++i) {
      const auto& f = feats[i];
      p.records.push_back(r.examples[i].record);
      p.ids_of_examples.push_back(r.examples[i].id);
      p.rows_per_example = static_cast<index_t>(f.input_ids.size());
      for (std::size_t c = 0; c < f.input_ids.size(); ++c) {
        p.ids.insert(p.ids.end(), f.input_ids[c].begin(), f.input_ids[c].end());
        p.mask.insert(p.mask.end(), f.attention_mask[c].begin(), f.attention_mask[c].end());
      }
      // An unlabelled question (CosmosQA's test file) is scored by no loss or accuracy.
      p.labels.push_back(f.label < 0 ? -100 : f.label);
      ++p.count;
    }
    p.read = r.examples.size();
  } else {
    const auto r = io::read_entity_typing(file, io::EntityTypingReadOptions{});
    for (const auto& x : r.examples)
      for (const auto& l : x.labels) add_label(l, x.record, "type");
    io::EntityTypingFeatureOptions fo;
    fo.max_seq_length = T;
    fo.convention = conv;
    const auto fs_ = io::build_entity_typing_features(r.examples, tok, labels, fo);
    for (std::size_t i = 0; i < fs_.features.size(); ++i) {
      const auto& f = fs_.features[i];
      p.records.push_back(r.examples[fs_.example_index[i]].record);
      append_rows(f.input_ids, f.attention_mask);
      p.start.insert(p.start.end(), f.start_id.begin(), f.start_id.end());
      p.targets.insert(p.targets.end(), f.labels.begin(), f.labels.end());
    }
    p.labels_per_row = static_cast<index_t>(labels.size());
    p.read = r.examples.size();
    p.dropped = fs_.dropped.size();
    p.left_out = fs_.dropped;
  }
  return p;
}

/// Keep only the examples @p keep (increasing indices) of @p p.
inline void keep_examples(PackedSplit& p, const std::vector<index_t>& keep) {
  const auto n = static_cast<std::size_t>(p.count);
  auto select = [&](auto& v) {  // every per-example array: n rows of equal width
    if (v.empty()) return;
    if (v.size() % n != 0) throw Error("keep_examples: an array of " + std::to_string(v.size()) + " is not " + std::to_string(n) + " rows");
    const std::size_t w = v.size() / n;
    std::decay_t<decltype(v)> kept;
    kept.reserve(keep.size() * w);
    for (index_t e : keep)
      kept.insert(kept.end(), v.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(e) * w),
                  v.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(e + 1) * w));
    v = std::move(kept);
  };
  select(p.ids);
  select(p.mask);
  select(p.labels);
  select(p.targets);
  select(p.subj);
  select(p.obj);
  select(p.start);
  select(p.records);
  select(p.ids_of_examples);
  p.count = static_cast<index_t>(keep.size());
}

/// Write @p text to @p path through `PATH.tmp` and a rename, checking every step: a full disk
/// or an unwritable directory is an error, and never leaves a truncated file under @p path.
inline void write_text_file(const fs::path& path, const std::string& text) {
  fs::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw Error(tmp.string() + ": cannot create (" + std::strerror(errno) + ")");
    f << text;
    f.close();
    if (f.fail()) {
      const std::string why = std::strerror(errno);
      std::error_code ignored;
      fs::remove(tmp, ignored);
      throw Error(tmp.string() + ": write failed (" + why + ")");
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw Error(path.string() + ": cannot replace it with " + tmp.string() + " (" + ec.message() + ")");
  }
}

/// Prepares the metrics log @p path (if any) for a run resumed at @p step of @p total: removes
/// the lines of steps after @p step, which the run logs again; with @p step = @p total also the
/// evaluation lines of that step (the final evaluation, which comes after the last checkpoint
/// and is run again); and a last line without its newline (a write cut short). Lines that are
/// not a JSON object with an integer "step" stay, and so do those of `evaluate` (which the
/// resumed run does not repeat). The removed lines are appended to `PATH.removed` (which so
/// holds those of every resume of the run, in order), so that they survive a resumed run that
/// fails before logging them again. A @p path that is a symbolic link is rewritten through it:
/// the link stays and its target gets the kept lines.
inline void drop_lines_after(const fs::path& path, std::int64_t step, std::int64_t total) {
  const fs::file_type type = fs::status(path).type();
  if (type == fs::file_type::not_found) return;
  if (type != fs::file_type::regular) throw Error(path.string() + ": not a regular file (expected the run's metrics log)");
  auto read_all = [](const fs::path& file) {
    std::string text;
    try {
      std::ifstream f(file, std::ios::binary);
      if (!f.is_open()) throw Error(file.string() + ": cannot open (" + std::strerror(errno) + ")");
      text.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
      if (f.bad()) throw Error(file.string() + ": read failed");
    } catch (const std::ios_base::failure& e) {
      throw Error(file.string() + ": read failed (" + e.what() + ")");
    }
    return text;
  };
  const std::string text = read_all(path);
  std::string kept, removed;
  std::size_t dropped = 0;
  for (std::size_t a = 0; a < text.size();) {
    const std::size_t nl = text.find('\n', a);
    if (nl == std::string::npos) {  // cut short
      ++dropped;
      removed.append(text, a, std::string::npos).push_back('\n');
      break;
    }
    const std::string_view line(text.data() + a, nl + 1 - a);
    a = nl + 1;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("step") && j["step"].is_number_integer() && !j.contains("evaluate")) {
      const std::int64_t s = j["step"].get<std::int64_t>();
      if (s > step || (s == step && step == total && j.contains("eval"))) {
        ++dropped;
        removed += line;
        continue;
      }
    }
    kept += line;
  }
  if (dropped == 0) return;
  fs::path aside = path;
  aside += ".removed";
  switch (fs::status(aside).type()) {
    case fs::file_type::not_found: break;
    case fs::file_type::regular: {  // an earlier resume's lines go first
      std::string earlier = read_all(aside);
      if (!earlier.empty() && earlier.back() != '\n') earlier.push_back('\n');
      removed.insert(0, earlier);
      break;
    }
    default: throw Error(aside.string() + ": not a regular file (expected the lines earlier resumes removed from " + path.string() + ")");
  }
  std::error_code ec;
  const fs::path target = fs::is_symlink(path) ? fs::canonical(path, ec) : path;
  if (ec) throw Error(path.string() + ": cannot resolve the symbolic link (" + ec.message() + ")");
  write_text_file(aside, removed);
  write_text_file(target, kept);
  std::fprintf(stderr, "note: %s: moved %zu line(s) after the checkpoint (step %lld), which this run logs again, to %s\n",
               path.string().c_str(), dropped, static_cast<long long>(step), aside.string().c_str());
}

/// The JSON document in @p path; errors name the file and say what was @p expected.
inline nlohmann::json read_json_file(const fs::path& path, const std::string& expected) {
  if (fs::is_directory(path)) throw Error(path.string() + ": is a directory, expected " + expected);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot open (" + std::strerror(errno) + ")");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(path.string() + ": not valid JSON (" + e.what() + "); expected " + expected);
  }
}

/// The label names of a run (`labels.json`: a JSON list of distinct strings).
inline std::vector<std::string> read_labels_file(const fs::path& path) {
  const nlohmann::json j = read_json_file(path, "a list of label names");
  if (!j.is_array()) throw Error(path.string() + ": expected a JSON list of label names, found " + j.type_name());
  std::vector<std::string> names;
  for (std::size_t i = 0; i < j.size(); ++i) {
    if (!j[i].is_string()) throw Error(path.string() + ": entry " + std::to_string(i) + " is " + j[i].type_name() + ", expected a label name (string)");
    names.push_back(j[i].get<std::string>());
  }
  try {
    return io::LabelMap(names).names();
  } catch (const Error& e) {
    throw Error(path.string() + ": " + e.what());
  }
}

/// A run's `adapter_config.json` (a JSON object).
inline nlohmann::json read_run_config(const fs::path& path) {
  nlohmann::json j = read_json_file(path, "the object a pretrain or finetune run writes");
  if (!j.is_object()) throw Error(path.string() + ": expected a JSON object, found " + j.type_name());
  return j;
}

/// The last line of a run's `runs.jsonl` at @p path (a JSON object with an "args" object), or
/// null when there is no such file or it is empty (runs of older versions).
inline nlohmann::json last_run_record(const fs::path& path) {
  const fs::file_type type = fs::status(path).type();
  if (type == fs::file_type::not_found) return nullptr;
  if (type != fs::file_type::regular) throw Error(path.string() + ": not a regular file (expected the run's list of invocations)");
  std::ifstream f(path, std::ios::binary);
  if (!f.is_open()) throw Error(path.string() + ": cannot open (" + std::strerror(errno) + ")");
  std::string last;
  for (std::string line; std::getline(f, line);)
    if (line.find_first_not_of(" \t\r") != std::string::npos) last = line;
  if (f.bad()) throw Error(path.string() + ": read failed");
  if (last.empty()) return nullptr;
  nlohmann::json rec = nlohmann::json::parse(last, nullptr, /*allow_exceptions=*/false);
  if (!rec.is_object() || !rec.contains("args") || !rec["args"].is_object())
    throw Error(path.string() + ": the last line is not a run record (a JSON object with \"args\"), so the run's settings cannot be read");
  return rec;
}

/// A path option @p value of run record @p rec: a relative one was relative to the run's
/// working directory ("directory").
inline std::string run_path(const nlohmann::json& rec, const std::string& value) {
  const auto dir = rec.find("directory");
  if (!fs::path(value).is_relative() || dir == rec.end() || !dir->is_string() || dir->get<std::string>().empty()) return value;
  return (fs::path(dir->get<std::string>()) / value).lexically_normal().string();
}

/// `evaluate`: the model flags of the run in --out come from its `adapter_config.json`; a flag
/// also given on the command line must agree with it. Runs of older versions: fusion and
/// compat, when the file lacks them, come from the weights; without the file the flags are
/// taken as given.
inline void adopt_run_config(Args& args) {
  const fs::path run = args.get("out");
  if (!fs::exists(run / "model.safetensors"))
    throw Error((run / "model.safetensors").string() + ": not found (evaluate reads a finished pretrain or finetune run)");
  const fs::path path = run / "adapter_config.json";
  const std::string from = path.string();
  if (!fs::exists(path)) {
    if (!args.has("task"))
      throw Error(args.command() + ": --task is needed: " + from +
                  " is not there to say what the run trained (nor its model flags, which must then be given as for training)");
    return;
  }
  const nlohmann::json j = read_run_config(path);
  // The encoder the run was trained on (its last invocation's --model, in runs.jsonl) unless
  // --model names one.
  if (const nlohmann::json rec = args.has("model") ? nlohmann::json() : last_run_record(run / "runs.jsonl"); !rec.is_null()) {
    const auto m = rec["args"].find("model");
    if (m != rec["args"].end() && m->is_string())
      args.fill("model", run_path(rec, m->get<std::string>()), (run / "runs.jsonl").string() + " (the run's --model)");
  }
  auto mismatch = [&](const std::string& flag, const std::string& field) {
    return Error(args.command() + ": --" + flag + " " + args.get(flag) + " differs from \"" + field + "\": " + j[field].dump() +
                 " in " + from + " (the run was trained with that; leave the flag out)");
  };
  auto wrong = [&](const std::string& field, const char* expected) {
    return Error(from + ": \"" + field + "\" is " + j[field].dump() + ", expected " + expected);
  };
  auto integers = [](const std::string& v) {  // a comma-separated list, or nothing when malformed
    std::vector<long long> out;
    for (const auto& item : split_list(v)) {
      long long x = 0;
      const auto [e, err] = std::from_chars(item.data(), item.data() + item.size(), x);
      if (err != std::errc() || e != item.data() + item.size()) return std::vector<long long>{};
      out.push_back(x);
    }
    return out;
  };
  auto text = [&](const std::string& field, const std::string& flag) {
    if (!j.contains(field)) return;
    if (!j[field].is_string()) throw wrong(field, "a string");
    const std::string v = j[field].get<std::string>();
    if (args.has(flag) && args.get(flag) != v) throw mismatch(flag, field);
    args.fill(flag, v, from);
  };
  auto integer_list = [&](const std::string& field, const std::string& flag, bool list) {
    if (!j.contains(field)) return;
    std::vector<long long> v;
    if (list && j[field].is_array()) {
      for (const auto& x : j[field]) {
        if (!x.is_number_integer() || (x.is_number_unsigned() && x.get<std::uint64_t>() > INT64_MAX))
          throw wrong(field, "a list of integers");
        v.push_back(x.get<long long>());
      }
    } else if (!list && j[field].is_number_integer() &&
               !(j[field].is_number_unsigned() && j[field].get<std::uint64_t>() > INT64_MAX)) {
      v.push_back(j[field].get<long long>());
    } else {
      throw wrong(field, list ? "a list of integers" : "an integer");
    }
    std::string joined;
    for (auto x : v) {
      if (!joined.empty()) joined += ',';
      joined += std::to_string(x);
    }
    // A flag that does not parse is left for the usual check to name.
    if (args.has(flag) && !integers(args.get(flag)).empty() && integers(args.get(flag)) != v) throw mismatch(flag, field);
    args.fill(flag, joined, from);
  };
  text("task", "task");
  integer_list("max_seq_length", "max-seq-length", false);
  integer_list("adapter_size", "adapter-size", false);
  integer_list("adapter_transformer_layers", "adapter-transformer-layers", false);
  integer_list("adapter_heads", "adapter-heads", false);
  integer_list("adapter_skip_layers", "adapter-skip-layers", false);
  integer_list("adapter_list", "adapter-list", true);
  const std::string task = args.get("task");
  const io::SafetensorsFile weights(run / "model.safetensors");
  const std::string weights_name = (run / "model.safetensors").string();
  if (j.contains("compat")) {
    text("compat", "compat");
  } else if (const auto it = weights.metadata().find("compat"); it != weights.metadata().end()) {
    args.fill("compat", it->second, weights_name);
  }
  if (task == "fac" || task == "lin") {  // a pre-training run's "adapters" is its own name
    for (const char* flag : {"adapters", "fusion"})
      if (args.has(flag))
        throw Error(args.command() + ": --" + flag + " is for downstream runs; " + run.string() + " pre-trained the " + task +
                    " adapter (" + from + ")");
    return;
  }
  if (j.contains("adapters")) {
    if (!j["adapters"].is_array()) throw wrong("adapters", "a list of adapter names");
    std::string joined;
    for (const auto& x : j["adapters"]) {
      if (!x.is_string()) throw wrong("adapters", "a list of adapter names");
      if (!joined.empty()) joined += ',';
      joined += x.get<std::string>();
    }
    if (args.has("adapters") && split_list(args.get("adapters")) != split_list(joined)) throw mismatch("adapters", "adapters");
    args.fill("adapters", joined, from);
  }
  if (j.contains("fusion")) {
    text("fusion", "fusion");
  } else if (!split_list(args.get("adapters")).empty()) {
    // concat fusion has task_dense layers; add has none.
    bool dense = false;
    for (const auto& name : weights.names()) dense = dense || name.rfind("task_dense", 0) == 0;
    args.fill("fusion", dense ? "concat" : "add", weights_name);
  }
}

/// `--resume`: the run's settings are those of its last invocation (the last line of
/// `OUT/runs.jsonl`). A flag left out takes that value. A flag given with another value is an
/// error where it defines the model, the training examples or their order (the resumed run
/// would not continue the run it names), and a note where it changes the schedule or the
/// arithmetic (allowed, but the result is no longer that of an uninterrupted run). Runs of
/// older versions without the file: the flags are taken as given.
inline void adopt_resume_flags(Args& args) {
  const fs::path path = fs::path(args.get("out")) / "runs.jsonl";
  const nlohmann::json rec = last_run_record(path);
  if (rec.is_null()) return;
  const nlohmann::json& was = rec["args"];
  // Flags that must keep the run's value; those that may change, with a note; those that are
  // the run's when left out, without a word when given (where and how often to save,
  // evaluate and cache, where the files are).
  static const std::set<std::string> fixed = {
      "task", "compat", "max-seq-length", "batch-size", "gradient-accumulation-steps", "seed", "adapter-list", "adapter-size",
      "adapter-transformer-layers", "adapter-heads", "adapter-skip-layers", "adapters", "fusion", "freeze-adapters",
      "train-fraction", "negative-sample"};
  static const std::set<std::string> noted = {"learning-rate", "weight-decay", "adam-epsilon", "max-grad-norm", "warmup-steps",
                                              "epochs", "max-steps", "dropout", "device", "dtype", "bucketing"};
  static const std::set<std::string> quiet = {"model", "data", "save-steps", "eval-steps", "eval-split", "feature-cache",
                                              "cache-dtype", "adapter-dirs"};
  // Equal as text, as numbers ("1e-3" and "0.001") or as lists of those ("0, 3,6" and "0,3,6").
  auto canonical = [](const std::string& v) {
    std::string outv;
    for (std::string item : split_list(v)) {
      double x = 0;
      const auto [e, err] = std::from_chars(item.data(), item.data() + item.size(), x);
      if (err == std::errc() && e == item.data() + item.size()) {
        char b[40];
        std::snprintf(b, sizeof b, "%.17g", x);
        item = b;
      }
      outv += item + ",";
    }
    return outv;
  };
  const std::string source = path.string() + " (the run's last invocation)";
  for (const OptionSpec& o : args.specs()) {
    if (!fixed.count(o.name) && !noted.count(o.name) && !quiet.count(o.name)) continue;
    const auto it = was.find(o.name);
    if (it == was.end()) continue;  // not an option of the version that wrote the line
    std::string value;
    if (o.value_name.empty()) {
      if (!it->is_boolean()) throw Error(path.string() + ": \"args\".\"" + o.name + "\" is " + it->dump() + ", expected true or false");
      if (!it->get<bool>()) {
        if (args.has(o.name) && fixed.count(o.name))
          throw Error(args.command() + " --resume: --" + o.name + " was not given to the run (" + source + "); leave it out");
        continue;
      }
      value = "1";
    } else {
      if (!it->is_string()) throw Error(path.string() + ": \"args\".\"" + o.name + "\" is " + it->dump() + ", expected a string");
      value = it->get<std::string>();
    }
    if (!args.has(o.name)) {
      // Paths relative to the run's working directory.
      if (o.name == "model" || o.name == "data" ||
          (o.name == "feature-cache" && value != "auto" && value != "off" && value != "memory"))
        value = run_path(rec, value);
      if (o.name == "adapter-dirs") {
        std::string dirs;
        for (const std::string& d : split_list(value)) dirs += (dirs.empty() ? "" : ",") + run_path(rec, d);
        value = dirs;
      }
      args.fill(o.name, value, source);
      continue;
    }
    const std::string given = args.get(o.name);
    if (o.value_name.empty() || canonical(given) == canonical(value) || quiet.count(o.name)) continue;
    if (fixed.count(o.name))
      throw Error(args.command() + " --resume: --" + o.name + " " + given + " differs from the run's " + value + " (" + source +
                  "); a resumed run keeps the settings that define its model and its examples (give the run's value, or leave the flag out)");
    std::fprintf(stderr, "note: --%s %s differs from the run's %s (%s): the resumed run continues with %s, so its result is not that of an uninterrupted run\n",
                 o.name.c_str(), given.c_str(), value.c_str(), source.c_str(), given.c_str());
  }
  // Versions without --max-grad-norm clipped multiple choice at 1 and stepped its optimizer
  // before the scheduler; now it follows the authors' CosmosQA script.
  const auto task_it = was.find("task");
  if (!was.contains("max-grad-norm") && task_it != was.end() && *task_it == "multiple-choice")
    std::fprintf(stderr,
                 "note: the run was started by a version that clipped multiple-choice gradients at 1 and stepped the optimizer "
                 "before the learning-rate schedule (%s); the resumed run steps the schedule first, as the authors' CosmosQA "
                 "script, and clips at --max-grad-norm %s, so its result is not that of an uninterrupted run\n",
                 source.c_str(), args.has("max-grad-norm") ? args.get("max-grad-norm").c_str() : "auto (no clipping)");
}

/// One line of `OUT/runs.jsonl`: the command, the library version, when it started (UTC), the
/// working directory, the step it started from and every option's value, defaults included (flags as true / false),
/// so that a run can be repeated from its output directory.
inline nlohmann::json run_record(const Args& args, std::int64_t start_step) {
  nlohmann::json values = nlohmann::json::object();
  for (const OptionSpec& o : args.specs()) {
    if (!o.refused.empty()) continue;
    if (o.value_name.empty()) values[o.name] = args.has(o.name);
    else if (args.has(o.name) || !o.default_value.empty()) values[o.name] = args.get(o.name);
  }
  char started[32] = "";
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  if (gmtime_r(&now, &utc)) std::strftime(started, sizeof started, "%Y-%m-%dT%H:%M:%SZ", &utc);
  std::error_code ec;  // relative paths in the options are relative to it
  const fs::path cwd = fs::current_path(ec);
  return {{"command", args.command()}, {"version", version_string}, {"started", started},
          {"directory", ec ? std::string() : cwd.string()}, {"start_step", start_step}, {"args", values}};
}

/// The integer @p field (default `step`) of a checkpoint's metadata, in [0, @p total].
inline std::int64_t checkpoint_step(const std::map<std::string, std::string>& meta, const fs::path& file,
                                    std::int64_t total, const std::string& field = "step") {
  const auto it = meta.find(field);
  if (it == meta.end()) throw Error(file.string() + ": metadata has no \"" + field + "\" (not a kadapter checkpoint?)");
  const std::string& v = it->second;
  long long x = -1;
  const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  if (ec != std::errc() || p != v.data() + v.size() || x < 0 || x > total)
    throw Error(file.string() + ": metadata \"" + field + "\" = \"" + v + "\" is not " +
                (total == std::numeric_limits<std::int64_t>::max()
                     ? std::string("a non-negative integer")
                     : "an integer in [0, " + std::to_string(total) + "]" +
                           (field == "step" ? " (the run's total steps)" : " (the checkpoint's step)")));
  return x;
}

/// Throws when @p recorded (a run's "backbone", empty when the run predates it) is not @p ours.
inline void check_backbone(const std::string& recorded, const std::string& ours, const std::string& where,
                           const std::string& model, const std::string& advice) {
  if (recorded.empty() || recorded == ours) return;
  throw Error(where + " was trained on an encoder with other weights (\"backbone\": \"" + recorded + "\") than --model " + model +
              " (\"" + ours + "\"); " + advice);
}

/// The frozen encoder as train_with() uses it, whatever its compile-time preset, so that
/// train_with() is compiled once per backend rather than once per preset and tokenizer.
template <class T, class Dev>
struct Backbone {
  using Ids = std::span<const std::int64_t>;
  EncoderConfig config;
  std::function<std::string()> id;  ///< io::backbone_id() (a hash of every weight: computed when asked)
  /// io::feature_cache_key(encoder, ids, mask, seq, options)
  std::function<std::map<std::string, std::string>(Ids, Ids, index_t, const ForwardOptions&)> cache_key;
  /// io::fill_feature_cache(cache, encoder, ids, mask, seq, options, batch, report)
  std::function<void(io::FeatureCache&, Ids, Ids, index_t, const ForwardOptions&, index_t,
                     const std::function<void(index_t)>&)>
      fill_cache;
  /// encoder.forward(states, batch, options)
  std::function<void(HiddenStates<T, Dev>&, const TokenBatch&, const ForwardOptions&)> forward;
};

template <class Enc>
Backbone<typename Enc::scalar_type, typename Enc::backend_type> backbone_of(Enc& enc) {
  using Ids = std::span<const std::int64_t>;
  Backbone<typename Enc::scalar_type, typename Enc::backend_type> b;
  b.config = enc.config();
  b.id = [&enc] { return io::backbone_id(enc); };
  b.cache_key = [&enc](Ids ids, Ids mask, index_t seq, const ForwardOptions& eo) {
    return io::feature_cache_key(enc, ids, mask, seq, eo);
  };
  b.fill_cache = [&enc](io::FeatureCache& cache, Ids ids, Ids mask, index_t seq, const ForwardOptions& eo, index_t batch,
                        const std::function<void(index_t)>& report) {
    io::fill_feature_cache(cache, enc, ids, mask, seq, eo, batch, report);
  };
  b.forward = [&enc](HiddenStates<typename Enc::scalar_type, typename Enc::backend_type>& states, const TokenBatch& in,
                     const ForwardOptions& eo) { enc.forward(states, in, eo); };
  return b;
}

/// pack() with the run's tokenizer bound, whichever tokenizer it is.
using Packer = std::function<PackedSplit(Task, const fs::path&, io::LabelMap&, index_t, io::Convention, bool,
                                         std::int64_t, const fs::path&, const std::string&)>;

template <class Tok>
Packer packer_of(Tok tok) {
  return [tok = std::make_shared<const Tok>(std::move(tok))](Task task, const fs::path& file, io::LabelMap& labels, index_t T, io::Convention conv,
                                bool labels_required, std::int64_t negative_sample, const fs::path& closed_by,
                                const std::string& closed_why) {
    return pack(task, file, *tok, labels, T, conv, labels_required, negative_sample, closed_by, closed_why);
  };
}

}  // namespace detail

/// Results of one training run.
struct TrainResult {
  double final_loss = 0;
  nlohmann::json metrics;  // evaluation on the chosen split
  std::int64_t steps = 0;
};

/// Train (or evaluate) with the encoder @p enc, packing the data with @p packer; the task
/// model runs on the encoder's backend @p Dev.
template <class T, class Dev>
TrainResult train_with(const detail::Backbone<T, Dev>& enc, const detail::Packer& packer, const Args& args, bool finetune,
                       bool evaluate_only = false) {
  // (B is the batch size below.)
  auto pack = [&](Task t, const fs::path& file, io::LabelMap& labels, index_t len, io::Convention c, bool labels_required,
                  std::int64_t negative_sample = 0, const fs::path& closed_by = {}, const std::string& closed_why = {}) {
    return packer(t, file, labels, len, c, labels_required, negative_sample, closed_by, closed_why);
  };
  const Task task = [&] {
    const std::string t = args.get("task");
    if (t == "fac") return Task::fac;
    if (t == "lin") return Task::lin;
    if (t == "relation") return Task::relation;
    if (t == "multiple-choice") return Task::multiple_choice;
    return Task::entity_typing;
  }();
  const index_t S = static_cast<index_t>(args.integer("max-seq-length", 8, 512));
  const index_t B = static_cast<index_t>(args.integer("batch-size", 1, 4096));
  const bool official = args.choice("compat", {"standard", "official"}) == "official";
  const io::Convention conv = official ? io::Convention::official : io::Convention::standard;
  const fs::path data = args.get("data"), out = args.get("out");
  const EncoderConfig& ec = enc.config;
  {
    // Position ids of a sequence run from position_offset() (RoBERTa: pad_id + 1) under the
    // standard scheme; the model must have rows for all of them.
    const index_t need = official ? S : S + ec.position_offset();
    if (need > ec.max_positions)
      throw Error("--max-seq-length " + std::to_string(S) + " needs " + std::to_string(need) + " position embeddings but " +
                  (fs::path(args.get("model")) / "config.json").string() + " has max_position_embeddings " +
                  std::to_string(ec.max_positions));
  }
  if (evaluate_only && !fs::exists(out / "model.safetensors"))
    throw Error((out / "model.safetensors").string() + ": not found (evaluate reads a finished pretrain or finetune run)");
  const std::string backbone = enc.id();
  // A string field of a run's adapter_config.json ("" when absent: runs of older versions).
  auto config_string = [](const nlohmann::json& rc, const char* field, const fs::path& file) {
    const auto it = rc.find(field);
    if (it == rc.end()) return std::string();
    if (!it->is_string()) throw Error(file.string() + ": \"" + field + "\" is " + it->dump() + ", expected a string");
    return it->get<std::string>();
  };
  if (evaluate_only && fs::exists(out / "adapter_config.json")) {
    // The run's adapters read states of the encoder they were trained on.
    const nlohmann::json rc = detail::read_run_config(out / "adapter_config.json");
    if (const auto it = rc.find("hidden"); it != rc.end() && (!it->is_number_integer() || it->get<std::int64_t>() != ec.hidden))
      throw Error((out / "adapter_config.json").string() + ": \"hidden\" is " + it->dump() + " but the encoder in " +
                  args.get("model") + " has hidden_size " + std::to_string(ec.hidden) +
                  " (evaluate with the --model the run was trained on)");
    detail::check_backbone(config_string(rc, "backbone", out / "adapter_config.json"), backbone,
                           "the run in " + out.string() + " (" + (out / "adapter_config.json").string() + ")", args.get("model"),
                           "evaluate with the --model the run was trained on");
  }
  if (args.has("resume") && !evaluate_only) {
    const fs::path opt = out / "checkpoint" / "optimizer.safetensors";
    if (!fs::exists(opt))
      throw Error("--resume: " + opt.string() + " not found (no checkpoint to continue from; without --resume the run starts anew)");
    const auto meta = io::SafetensorsFile(opt).metadata();
    const auto it = meta.find("backbone");
    detail::check_backbone(it == meta.end() ? std::string() : it->second, backbone, "--resume: the checkpoint " + opt.string(),
                           args.get("model"), "resume with the --model the run started with");
    // The weights file records its step too (checkpoints of earlier versions: not): a run that
    // stopped between the two writes left files of different steps.
    const fs::path weights = out / "checkpoint" / "model.safetensors";
    if (!fs::exists(weights)) throw Error("--resume: " + weights.string() + " not found (the checkpoint is incomplete)");
    const auto wmeta = io::SafetensorsFile(weights).metadata();
    const std::int64_t opt_step = detail::checkpoint_step(meta, opt, std::numeric_limits<std::int64_t>::max());
    if (const auto ws = wmeta.find("step");
        ws != wmeta.end() && detail::checkpoint_step(wmeta, weights, std::numeric_limits<std::int64_t>::max()) != opt_step)
      throw Error("--resume: " + weights.string() + " is of step " + ws->second + " but " + opt.string() + " of step " +
                  std::to_string(opt_step) + ": the run stopped while it saved its checkpoint, which cannot be continued exactly");
  }
  // The model's sizes, checked before anything is written to --out.
  AdapterConfig ac;
  ac.hidden = ec.hidden;
  ac.size = static_cast<index_t>(args.integer("adapter-size", 1, 8192));
  ac.layers = static_cast<index_t>(args.integer("adapter-transformer-layers", 0, 64));
  ac.heads = static_cast<index_t>(args.integer("adapter-heads", 1, 1024));
  ac.ffn = 4 * ac.size;
  ac.skip_layers = static_cast<index_t>(args.integer("adapter-skip-layers", 0, 64));
  const auto plug = args.integer_list("adapter-list");
  ac.count = static_cast<index_t>(plug.size());
  if (plug.empty() || plug.size() > kMaxPlugPoints) throw Error("--adapter-list needs 1.." + std::to_string(kMaxPlugPoints) + " plug-in points");
  for (std::size_t k = 0; k < plug.size(); ++k) {
    if (plug[k] > ec.layers) throw Error("--adapter-list names hidden state " + std::to_string(plug[k]) + " but the encoder has 0.." + std::to_string(ec.layers));
    // Adapter layer k reads hidden state plug[k] and adapter layer k - 1's output: the chain
    // runs up the encoder, as in the authors' adapter_list.
    if (k > 0 && plug[k] <= plug[k - 1])
      throw Error("--adapter-list " + args.get("adapter-list") + ": the plug-in points must increase (" + std::to_string(plug[k - 1]) +
                  " is followed by " + std::to_string(plug[k]) + ")");
    ac.plug_in[k] = plug[k];
  }
  TaskConfig tc;
  tc.task = task;
  tc.compat = official ? Compat::official : Compat::standard;
  tc.dropout = static_cast<float>(args.number("dropout", 0.0, 1.0, /*hi_open=*/true));
  if (ac.skip_layers > ac.count)
    throw Error("--adapter-skip-layers " + std::to_string(ac.skip_layers) + " is more than the " + std::to_string(ac.count) +
                " adapter layers of --adapter-list (0 turns the skip connections off)");
  std::vector<std::string> adapter_dirs;
  if (finetune) {
    tc.adapters = detail::split_list(args.get("adapters"));
    adapter_dirs = detail::split_list(args.get("adapter-dirs"));
    if (!adapter_dirs.empty() && adapter_dirs.size() != tc.adapters.size())
      throw Error("--adapter-dirs names " + std::to_string(adapter_dirs.size()) + " directories for " + std::to_string(tc.adapters.size()) + " adapters");
    for (std::size_t j = 0; j < tc.adapters.size(); ++j)
      for (std::size_t i = 0; i < j; ++i)
        if (tc.adapters[i] == tc.adapters[j])
          throw Error("--adapters names \"" + tc.adapters[j] + "\" twice (each adapter's tensors are saved under its name)");
    if (!evaluate_only && args.has("freeze-adapters") && adapter_dirs.empty() && !tc.adapters.empty())
      throw Error("--freeze-adapters needs --adapter-dirs: without pre-trained weights the frozen adapters would stay at their "
                  "random initialisation");
    for (std::size_t j = 0; j < adapter_dirs.size() && !evaluate_only; ++j) {
      const fs::path d = adapter_dirs[j];
      if (!fs::is_regular_file(d / "model.safetensors")) {
        if (fs::is_regular_file(d / "pytorch_model.bin"))
          throw Error("--adapter-dirs: " + (d / "model.safetensors").string() + " not found, but " + (d / "pytorch_model.bin").string() +
                      " is there (a PyTorch checkpoint, such as the K-Adapter authors' released adapters): convert it first with "
                      "`kadapter convert --in " + (d / "pytorch_model.bin").string() + " --out " + (d / "model.safetensors").string() + "`");
        throw Error("--adapter-dirs: " + (d / "model.safetensors").string() +
                    " not found (expected the --out directory of a finished pretrain run)");
      }
      // The pre-training run's adapter_config.json (runs of older versions may lack it): the
      // adapter must be of the sizes and plug-in points of this run's flags (same-shaped
      // tensors with other heads or plug-in points would load and compute something else),
      // and an adapter named fac or lin must be that adapter.
      const fs::path cfg = d / "adapter_config.json";
      if (!fs::exists(cfg)) continue;
      const nlohmann::json rc = detail::read_run_config(cfg);
      const std::string what = "--adapter-dirs " + d.string() + " (" + tc.adapters[j] + ")";
      const auto run_task = rc.find("task");
      if (run_task == rc.end() || !run_task->is_string() || (*run_task != "fac" && *run_task != "lin"))
        throw Error(what + ": " + cfg.string() + " has \"task\": " + (run_task == rc.end() ? std::string("none") : run_task->dump()) +
                    ", expected a pre-training run (\"fac\" or \"lin\")");
      if ((tc.adapters[j] == "fac" || tc.adapters[j] == "lin") && *run_task != tc.adapters[j])
        throw Error(what + ": " + cfg.string() + " is a pre-training run of the " + run_task->get<std::string>() +
                    " adapter, not of " + tc.adapters[j] + " (--adapters and --adapter-dirs go in the same order)");
      auto agree = [&](const char* field, const std::string& flag, const nlohmann::json& ours) {
        const auto it = rc.find(field);
        if (it == rc.end() || *it == ours) return;
        throw Error(what + ": " + (flag.empty() ? std::string("the encoder's hidden size ") : "--" + flag + " ") + ours.dump() +
                    " differs from \"" + field + "\": " + it->dump() + " in " + cfg.string() +
                    (flag.empty() ? " (the adapter was pre-trained on another --model)" : " (the adapter was pre-trained with that; give the same value)"));
      };
      // Another --compat is allowed (the adapter's tensors are the same) but computes the
      // adapter on other inputs than in pre-training: said, not refused.
      if (const auto c = rc.find("compat"); c != rc.end() && c->is_string() && *c != (official ? "official" : "standard"))
        std::fprintf(stderr,
                     "note: %s: the adapter was pre-trained with --compat %s (%s) and this run uses --compat %s; give --compat %s "
                     "to run it as it was pre-trained\n",
                     what.c_str(), c->get<std::string>().c_str(), cfg.c_str(), official ? "official" : "standard",
                     c->get<std::string>().c_str());
      agree("hidden", "", ac.hidden);
      agree("adapter_size", "adapter-size", ac.size);
      agree("adapter_transformer_layers", "adapter-transformer-layers", ac.layers);
      agree("adapter_heads", "adapter-heads", ac.heads);
      agree("adapter_skip_layers", "adapter-skip-layers", ac.skip_layers);
      agree("adapter_list", "adapter-list", plug);
      detail::check_backbone(config_string(rc, "backbone", cfg), backbone, what + ": the adapter (" + cfg.string() + ")", args.get("model"),
                             "fine-tune on the encoder the adapter was pre-trained on");
    }
    tc.fusion = args.choice("fusion", {"concat", "add"}) == "add" ? Fusion::add : Fusion::concat;
    tc.adapter_trainable.assign(tc.adapters.size(), !args.has("freeze-adapters"));
  } else {
    tc.adapters = {args.get("task")};
  }
  // Sizes that cannot fit are named before anything is allocated (otherwise a bad_alloc, or
  // the kernel's OOM killer, says nothing about which flag asked for them).
  {
    if (ac.size % ac.heads != 0)
      throw Error("--adapter-size " + std::to_string(ac.size) + " is not divisible by --adapter-heads " +
                  std::to_string(ac.heads));
    const double A = static_cast<double>(ac.size), F = static_cast<double>(ac.ffn);
    const double adapters = static_cast<double>(tc.adapters.size()) * static_cast<double>(ac.count);
    // values and gradients, and for training AdamW's two moments; the saved activations of
    // one batch.
    const double param_bytes = (evaluate_only ? 2.0 : 4.0) * static_cast<double>(tc.adapters.size()) *
                               static_cast<double>(ac.parameter_count()) * sizeof(T);
    const double tokens = static_cast<double>(B) * static_cast<double>(S);
    const double act_bytes = adapters * static_cast<double>(ac.layers) *
                             (tokens * (8 * A + 2 * F) + static_cast<double>(B * ac.heads) * static_cast<double>(S * S)) * sizeof(T);
    const std::optional<double> machine = memory::total_bytes();
    if (machine && param_bytes + act_bytes > *machine) {
      char msg[512];
      std::snprintf(msg, sizeof msg,
                    "the adapters asked for need at least %.1f GiB (%.1f GiB of parameters, gradients and AdamW state, "
                    "%.1f GiB of saved activations per batch) but this process may use %.1f GiB: lower --adapter-size (%lld), "
                    "--adapter-transformer-layers (%lld), the number of --adapter-list plug-in points (%lld), "
                    "--batch-size (%lld) or --max-seq-length (%lld)",
                    (param_bytes + act_bytes) / 1073741824.0, param_bytes / 1073741824.0, act_bytes / 1073741824.0,
                    *machine / 1073741824.0, static_cast<long long>(ac.size), static_cast<long long>(ac.layers),
                    static_cast<long long>(ac.count), static_cast<long long>(B), static_cast<long long>(S));
      throw Error(msg);
    }
  }
  // Every other flag is read here too: a mistyped value is an error before anything is
  // written to --out.
  const std::int64_t epochs = args.integer("epochs", 1, 100000);
  const std::int64_t max_steps = args.integer("max-steps", 0, 1LL << 40);
  const double learning_rate = args.number("learning-rate", 0.0, 1e3);
  const double weight_decay = args.number("weight-decay", 0.0, 1e3);
  const double adam_epsilon = args.number("adam-epsilon", 0.0, 1.0);
  if (adam_epsilon == 0.0)
    throw Error(args.command() + ": --adam-epsilon 0 divides by zero where a gradient is 0 (expected a number in (0, 1])");
  // The authors' CosmosQA script never clips; their other scripts clip at 1.
  const double max_grad_norm = args.get("max-grad-norm") == "auto" ? (task == Task::multiple_choice ? 0.0 : 1.0)
                                                                   : args.number("max-grad-norm", 0.0, 1e6);
  const std::int64_t warmup_steps = args.integer("warmup-steps", 0, 1LL << 40);
  const std::uint64_t seed = static_cast<std::uint64_t>(args.integer("seed", 0, 1LL << 62));
  const std::int64_t save_steps = args.integer("save-steps", 0, 1LL << 40);
  const std::int64_t stop_after = args.integer("stop-after", 0, 1LL << 40);
  const index_t accumulation = static_cast<index_t>(args.integer("gradient-accumulation-steps", 1, 4096));
  const double train_fraction = args.number("train-fraction", 0.0, 1.0);
  const std::int64_t negative_sample = args.integer("negative-sample", 0, 1LL << 40);
  if (negative_sample > 0 && task != Task::fac && task != Task::relation)
    throw Error(args.command() + ": --negative-sample " + args.get("negative-sample") +
                " applies to relation data (--task fac or relation), not --task " + args.get("task"));
  if (train_fraction == 0.0) throw Error(args.command() + ": --train-fraction 0 leaves nothing to train on (expected a number in (0, 1])");
  // The split(s) evaluated; the first one chooses the best model.
  const std::string eval_list = args.get("eval-split");
  const std::vector<std::string> eval_names = detail::split_list(eval_list);
  if (eval_names.empty()) throw Error(args.command() + ": --eval-split '" + eval_list + "': expected dev, test or dev,test");
  for (std::size_t i = 0; i < eval_names.size(); ++i) {
    if (eval_names[i] != "dev" && eval_names[i] != "test")
      throw Error(args.command() + ": --eval-split '" + eval_list + "': \"" + eval_names[i] + "\" is not dev or test (one split, or both as dev,test)");
    for (std::size_t j = 0; j < i; ++j)
      if (eval_names[j] == eval_names[i]) throw Error(args.command() + ": --eval-split '" + eval_list + "' names " + eval_names[i] + " twice");
  }
  // Evaluation during training: every N steps, or at the end of every epoch.
  const std::string eval_steps_arg = args.get("eval-steps");
  const bool eval_each_epoch = eval_steps_arg == "epoch";
  std::int64_t eval_every = 0;
  if (!eval_each_epoch) {
    long long x = -1;
    const auto [end, err] = std::from_chars(eval_steps_arg.data(), eval_steps_arg.data() + eval_steps_arg.size(), x);
    if (err != std::errc() || end != eval_steps_arg.data() + eval_steps_arg.size() || x < 0 || x > (1LL << 40))
      throw Error(args.command() + ": --eval-steps '" + eval_steps_arg + "' is not \"epoch\" or an integer in [0, " + std::to_string(1LL << 40) + "]");
    eval_every = x;
  }
  // evaluate --predictions DIR: DIR/predictions_SPLIT.jsonl, one line per example.
  const fs::path predictions_dir = args.get("predictions");
  if (evaluate_only && (eval_each_epoch || eval_every > 0))
    throw Error(args.command() + ": --eval-steps " + eval_steps_arg + ": evaluate scores a finished run once (the flag is for pretrain and finetune)");
  const std::string cache_dtype = args.choice("cache-dtype", {"fp16", "bf16", "fp32"});
  // Padding: the authors pad every batch to max_seq_length; with correct masks a batch padded
  // to its own longest sequence gives the same numbers (tests/models/test_length_trim.cpp).
  std::string bucketing = args.choice("bucketing", {"auto", "none", "trim", "sort"});
  if (bucketing == "auto") bucketing = official ? "none" : "trim";
  if (official && bucketing != "none")
    throw Error("--bucketing " + bucketing + " needs --compat standard: under --compat official padding changes the numbers, so every batch keeps max_seq_length");

  // Labels: kept with the model (labels.json) so that evaluation and resume see the same ids.
  // A fresh run numbers them in the order of the data set's label list (DATA/relations.txt or
  // DATA/types.txt: one name per line) when there is one, and then refuses any other label;
  // else in order of first appearance in the data. An earlier run's labels.json in --out is
  // not this run's.
  io::LabelMap labels;
  const fs::path labels_path = out / "labels.json";
  const bool named_labels = task == Task::fac || task == Task::relation || task == Task::entity_typing;
  const bool resume = args.has("resume") && !evaluate_only;
  if ((evaluate_only || resume) && fs::exists(labels_path)) {
    labels = io::LabelMap(detail::read_labels_file(labels_path));
  } else if (evaluate_only && named_labels) {
    throw Error(labels_path.string() + ": not found (evaluate reads the label names of a finished run)");
  }
  const fs::path label_list = !named_labels ? fs::path{} : data / (task == Task::entity_typing ? "types.txt" : "relations.txt");
  fs::path closed_by;  // the label list that the training and evaluation labels must be in
  std::string closed_why;
  if (!evaluate_only && named_labels && fs::exists(label_list)) {
    const std::vector<std::string> listed = io::read_label_list(label_list);
    closed_by = label_list;
    closed_why = "the data set's label list; add it there, or move that file away to number the labels as they first appear";
    if (!resume || !fs::exists(labels_path)) {
      labels = io::LabelMap(listed);
    } else {
      // The checkpoint has one output per label of labels.json: the list must name the same
      // labels (in any order: the ids are those of labels.json).
      std::vector<std::string> a = listed, b = labels.names();
      std::sort(a.begin(), a.end());
      std::sort(b.begin(), b.end());
      if (a != b)
        throw Error("--resume: " + label_list.string() + " names " + std::to_string(listed.size()) + " labels, not the " +
                    std::to_string(labels.size()) + " labels of the run (" + labels_path.string() +
                    "): the run was numbered by another list or without one; restore the run's list, or move this one away "
                    "to resume with the labels of " + labels_path.string());
      closed_why = "the labels of the run, in " + labels_path.string() + ", which a resume keeps";
    }
  }
  // A split's file: NAME.jsonl, else NAME.json (fac, relation and lin data, which are JSON
  // lists: NAME.json only), else (lin) NAME.conllu.
  auto split_file = [&](const std::string& name) {
    std::vector<std::string> kinds = {".jsonl", ".json"};
    if (task == Task::fac || task == Task::relation || task == Task::lin) kinds = {".json"};
    if (task == Task::lin) kinds.push_back(".conllu");
    std::string looked;
    for (const auto& k : kinds) {
      if (fs::exists(data / (name + k))) return data / (name + k);
      looked += (looked.empty() ? "" : k == kinds.back() ? " or " : ", ") + name + k;
    }
    throw Error("--data " + data.string() + ": no " + looked + " (the " + name + " split" +
                (task == Task::lin                                  ? ": find_head JSON or CoNLL-U)"
                 : task == Task::fac || task == Task::relation ? ": a JSON list of relation records)"
                                                                    : ")"));
  };
  const std::size_t run_labels = labels.size();  // those of labels.json, when there is one
  PackedSplit train = evaluate_only ? PackedSplit{}
                                    : pack(task, split_file("train"), labels, S, conv, true, negative_sample, closed_by, closed_why);
  const std::size_t train_labels = labels.size();
  // A resumed run has one output per label of its checkpoint: no split may add a label (and
  // labels.json must stay as it was when the checkpoint was written).
  if (resume && fs::exists(labels_path) && train_labels > run_labels)
    throw Error("--resume: " + split_file("train").string() + " names " + std::to_string(train_labels - run_labels) +
                " label(s) that are not among the labels of the checkpoint (" + labels_path.string() +
                "); the training data changed since the run started");
  // The evaluation splits, with their lengths and (filled below) feature caches.
  struct EvalSplit {
    std::string name;
    fs::path file;
    PackedSplit data;
    std::vector<std::int32_t> len;
    std::optional<io::FeatureCache> cache;
  };
  std::vector<EvalSplit> evals(eval_names.size());
  for (std::size_t j = 0; j < evals.size(); ++j) {
    evals[j].name = eval_names[j];
    evals[j].file = split_file(eval_names[j]);
    const std::size_t before = labels.size();
    evals[j].data = pack(task, evals[j].file, labels, S, conv, !evaluate_only, 0, closed_by, closed_why);
    if (labels.size() == before) continue;
    std::string extra;
    for (std::size_t i = before; i < labels.size() && i < before + 5; ++i)
      extra += (extra.empty() ? "\"" : ", \"") + labels.names()[i] + "\"";
    if (labels.size() > before + 5) extra += ", ...";
    // A finished run has one output per label it was trained with: new names cannot be scored.
    if (evaluate_only)
      throw Error(evals[j].file.string() + ": label(s) " + extra + " are not among the " +
                  std::to_string(train_labels) + " labels of the run (" + labels_path.string() + ")");
    if (resume)
      throw Error("--resume: " + evals[j].file.string() + " names label(s) " + extra + " that are not among the labels of the checkpoint (" +
                  labels_path.string() + "); resume with the --eval-split of the run that wrote it");
    std::fprintf(stderr, "note: %s names %zu label(s) that %s does not (%s); they get outputs but no training examples\n",
                 evals[j].file.string().c_str(), labels.size() - before, split_file("train").string().c_str(), extra.c_str());
  }
  // Entity typing keeps one target column per label: splits packed before the last new type
  // was seen are packed again, so that every row has a column for every type.
  if (task == Task::entity_typing && labels.size() > train_labels) {
    train = pack(task, split_file("train"), labels, S, conv, true, negative_sample);
    for (auto& e : evals)
      if (e.data.labels_per_row != static_cast<index_t>(labels.size()))
        e.data = pack(task, e.file, labels, S, conv, !evaluate_only);
  }
  // Few-shot runs: a seeded random share of the usable training examples, in file order.
  const index_t usable = train.count;
  if (!evaluate_only && train_fraction < 1.0 && train.count > 0) {
    const auto k = std::max<index_t>(1, static_cast<index_t>(std::llround(train_fraction * static_cast<double>(train.count))));
    std::vector<index_t> pick(static_cast<std::size_t>(train.count));
    std::iota(pick.begin(), pick.end(), index_t{0});
    std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + 0x5851F42D4C957F2Dull);
    std::shuffle(pick.begin(), pick.end(), rng);
    pick.resize(static_cast<std::size_t>(k));
    std::sort(pick.begin(), pick.end());
    detail::keep_examples(train, pick);
  }
  // Labels of the list that no training example has get an output that nothing trains.
  if (!closed_by.empty() && !evaluate_only && train.count > 0) {
    std::vector<char> seen(labels.size(), 0);
    if (task == Task::entity_typing) {
      const std::size_t L = labels.size();
      for (std::size_t i = 0; i < train.targets.size(); ++i)
        if (train.targets[i] != 0.0f) seen[i % L] = 1;
    } else {
      for (const std::int64_t y : train.labels)
        if (y >= 0 && static_cast<std::size_t>(y) < seen.size()) seen[static_cast<std::size_t>(y)] = 1;
    }
    std::string unseen;
    std::size_t n = 0;
    for (std::size_t i = 0; i < seen.size(); ++i)
      if (!seen[i] && ++n <= 5) unseen += (n == 1 ? "\"" : ", \"") + labels.names()[i] + "\"";
    if (n > 5) unseen += ", ...";
    if (n > 0)
      std::fprintf(stderr, "note: %zu label(s) of %s have no training example (%s); they get outputs that nothing trains\n", n,
                   closed_by.string().c_str(), unseen.c_str());
  }
  // Which training examples this run reads (their records, in order): a resumed run must read
  // the same ones, whatever could change them (data, --train-fraction, --seed,
  // --negative-sample, --max-seq-length).
  const std::string train_examples = io::hex64(io::fingerprint_of(std::span<const std::size_t>(train.records))) + ":" +
                                     std::to_string(train.count);
  // ... and their contents: tokens, labels and marker rows (a training file edited in place,
  // another tokenizer).
  std::uint64_t content = io::fingerprint_of(std::span<const std::int64_t>(train.ids));
  for (const auto* v : {&train.mask, &train.labels}) content = io::fingerprint_of(std::span<const std::int64_t>(*v), content);
  for (const auto* v : {&train.targets, &train.subj, &train.obj, &train.start})
    content = io::fingerprint_of(std::span<const float>(*v), content);
  const std::string train_data = io::hex64(content);
  if (resume) {
    const fs::path opt = out / "checkpoint" / "optimizer.safetensors";
    const auto meta = io::SafetensorsFile(opt).metadata();
    const auto tf = meta.find("train_fraction");
    const std::string had = tf == meta.end() ? "1" : tf->second;
    double value = 0;
    const auto [end, err] = std::from_chars(had.data(), had.data() + had.size(), value);
    if (err != std::errc() || end != had.data() + had.size())
      throw Error(opt.string() + ": metadata \"train_fraction\" = \"" + had + "\" is not a number");
    if (value != train_fraction)
      throw Error("--resume: " + opt.string() + " was written by a run with --train-fraction " + had + ", not " +
                  args.get("train-fraction") + " (give the run's value)");
    if (const auto te = meta.find("train_examples"); te != meta.end() && te->second != train_examples)
      throw Error("--resume: the training examples differ from those of the checkpoint (" + opt.string() +
                  "): the training file, --seed with --train-fraction, --negative-sample or --max-seq-length changed");
    if (const auto td = meta.find("train_data"); td != meta.end() && td->second != train_data)
      throw Error("--resume: the training examples' tokens or labels differ from those of the checkpoint (" + opt.string() +
                  "): " + split_file("train").string() + " or the tokenizer of --model changed");
  }
  if (!evaluate_only && train.count == 0)
    throw Error(split_file("train").string() + ": no usable example (" + std::to_string(train.read) + " read, " +
                std::to_string(train.dropped) + " dropped, e.g. entity or marker positions beyond --max-seq-length " +
                std::to_string(S) + ")");
  {
    std::string counts;
    if (!evaluate_only)
      counts = std::to_string(usable) + " training examples (" + std::to_string(train.dropped) + " dropped" +
               (negative_sample > 0 ? ", " + std::to_string(train.filtered) + " no_relation left out by --negative-sample" : std::string()) +
               ")";
    for (const auto& e : evals)
      counts += (counts.empty() ? "" : ", ") + std::to_string(e.data.count) + " " + e.name + " examples" +
                (e.data.dropped > 0 ? " (" + std::to_string(e.data.dropped) + " dropped)" : std::string());
    if (named_labels) counts += ", " + std::to_string(labels.size()) + " labels";
    std::fprintf(stderr, "%s: %s\n", args.get("task").c_str(), counts.c_str());
    if (train_fraction < 1.0)
      std::fprintf(stderr, "--train-fraction %s: training on %lld of the %lld examples (their records: %s)\n",
                   args.get("train-fraction").c_str(), static_cast<long long>(train.count), static_cast<long long>(usable),
                   (out / "train_records.json").string().c_str());
  }

  // Optimizer steps per epoch: each takes `accumulation` micro-batches of B examples (the
  // last one of an epoch what is left).
  const std::int64_t batches_per_epoch = std::max<std::int64_t>(1, (train.count + B - 1) / B);
  const std::int64_t per_epoch = (batches_per_epoch + accumulation - 1) / accumulation;
  std::int64_t total = per_epoch * epochs;
  if (max_steps > 0) total = max_steps;
  if (args.has("resume") && !evaluate_only) {
    const fs::path opt = out / "checkpoint" / "optimizer.safetensors";
    const std::int64_t at = detail::checkpoint_step(io::SafetensorsFile(opt).metadata(), opt, std::numeric_limits<std::int64_t>::max());
    if (at > total)
      throw Error("--resume: the checkpoint is at step " + std::to_string(at) + " but --epochs " + args.get("epochs") +
                  " and --max-steps " + args.get("max-steps") + " give the run " + std::to_string(total) +
                  " steps (give the run's values, or more)");
  }
  // Combinations that run, but likely not as meant.
  if (!evaluate_only) {
    if (accumulation > batches_per_epoch)
      std::fprintf(stderr, "warning: --gradient-accumulation-steps %lld is more than the %lld batches of an epoch: each optimizer step "
                   "takes one epoch's %lld batches\n", static_cast<long long>(accumulation), static_cast<long long>(batches_per_epoch),
                   static_cast<long long>(batches_per_epoch));
    if (warmup_steps > 0 && warmup_steps >= total)
      std::fprintf(stderr, "warning: --warmup-steps %lld is not less than the run's %lld steps: the learning rate never reaches %s\n",
                   static_cast<long long>(warmup_steps), static_cast<long long>(total), args.get("learning-rate").c_str());
    if (stop_after > total)
      std::fprintf(stderr, "warning: --stop-after %lld is beyond the run's %lld steps: the run finishes first\n",
                   static_cast<long long>(stop_after), static_cast<long long>(total));
  }
  const bool trim = bucketing != "none";
  const auto train_len = io::cache_lengths(train.mask, S, trim);
  for (auto& e : evals) e.len = io::cache_lengths(e.data.mask, S, trim);
  if (eval_each_epoch) eval_every = per_epoch;
  // Evaluations during training (at eval_every, 2 eval_every, ... before the last step); the
  // last one follows training.
  const std::int64_t evals_during = eval_every > 0 ? (total - 1) / eval_every : 0;
  if (!train_len.empty()) {
    const auto real = io::cache_lengths(train.mask, S, true);
    double sum = 0;
    for (auto l : real) sum += l;
    std::fprintf(stderr, "training sequences: mean length %.1f tokens, longest %d, max_seq_length %lld, bucketing %s\n",
                 sum / static_cast<double>(real.size()), static_cast<int>(*std::max_element(real.begin(), real.end())),
                 static_cast<long long>(S), bucketing.c_str());
  }
  // The backbone states the adapters read (plug-in points and the last): those a batch
  // computes or the feature cache keeps.
  std::vector<index_t> keep(ac.plug_in.begin(), ac.plug_in.begin() + ac.count);
  keep.push_back(ec.layers);
  std::sort(keep.begin(), keep.end());
  keep.erase(std::unique(keep.begin(), keep.end()), keep.end());
  // Where the feature caches live: decided, and caches that cannot fit refused, before --out
  // is created. The training split is cached when the flag asks for it (auto: when training
  // reads it more than once), each evaluation split when it is evaluated during training.
  std::string cache_mode = args.get("feature-cache");       // of the training split
  std::string eval_cache_mode = evals_during > 0 ? cache_mode : "off";  // of the evaluation splits
  {
    const double per_token = static_cast<double>(ec.hidden) * static_cast<double>(keep.size()) * (cache_dtype == "fp32" ? 4.0 : 2.0);
    auto tokens_of = [](const std::vector<std::int32_t>& lens) {
      double t = 0;
      for (auto l : lens) t += l;
      return t;
    };
    double eval_tokens = 0;
    for (const auto& e : evals) eval_tokens += tokens_of(e.len);
    // Measured before the model and its optimizer state exist: what they will take is
    // subtracted (values, gradients, AdamW's two moments).
    std::optional<double> avail = memory::available_bytes();
    if (avail) avail = std::max(0.0, *avail - (evaluate_only ? 2.0 : 4.0) * static_cast<double>(tc.adapters.size()) *
                                                  static_cast<double>(ac.parameter_count()) * sizeof(T));
    // The training split's cache is decided on its own, so that evaluating (or not) never
    // changes what training reads; the evaluation splits' caches only where memory is left.
    const double train_need = tokens_of(train_len) * per_token, eval_need = eval_tokens * per_token;
    const bool in_memory = cache_mode == "memory" || cache_mode == "auto";
    const double share = cache_mode == "auto" ? 0.5 : 1.0;  // auto keeps half of the memory free
    if (cache_mode == "auto") {
      cache_mode = (!evaluate_only && total > per_epoch) ? "memory" : "off";
      eval_cache_mode = evals_during > 0 ? "memory" : "off";
      if (cache_mode == "memory" && avail && train_need > share * *avail) {
        std::fprintf(stderr, "feature cache: would need %.1f GB, more than half of the %.1f GB available; "
                     "the backbone runs every step (--feature-cache DIR keeps the states in a file)\n", train_need / 1e9, *avail / 1e9);
        cache_mode = "off";
      }
    }
    if (cache_mode == "memory" && avail && train_need > *avail)
      throw Error("--feature-cache memory needs " + std::to_string(train_need / 1e9) + " GB but " + std::to_string(*avail / 1e9) +
                  " GB are available; use --feature-cache DIR (a memory-mapped file) or --feature-cache off");
    const double train_held = cache_mode == "memory" ? train_need : 0.0;
    if (in_memory && eval_cache_mode != "off" && avail && train_held + eval_need > share * *avail) {
      std::fprintf(stderr, "feature cache: the evaluation split(s) would need %.1f GB more; they are encoded at each evaluation\n",
                   eval_need / 1e9);
      eval_cache_mode = "off";
    }
  }
  // A --feature-cache DIR that cannot be a directory is an error before --out is touched.
  for (const std::string& mode : {cache_mode, eval_cache_mode}) {
    if (mode == "off" || mode == "memory") continue;
    std::error_code mk;
    fs::create_directories(mode, mk);
    if (mk || !fs::is_directory(mode))
      throw Error("--feature-cache " + mode + ": cannot create the directory (" +
                  (mk ? mk.message() : std::string("a file is in the way")) + ")");
  }
  index_t choices = train.rows_per_example;
  for (const auto& e : evals) choices = std::max(choices, e.data.rows_per_example);
  tc.num_labels = task == Task::lin ? S : task == Task::multiple_choice ? choices : static_cast<index_t>(labels.size());
  TaskModel<dynamic_adapter, T, Dev> model(tc, ac);
  init_parameters(model.parameters(), seed);
  std::int64_t model_step = 0;  // evaluate: the training step of the model scored (when it says)
  if (evaluate_only) {
    const io::SafetensorsFile weights(out / "model.safetensors");
    if (const auto it = weights.metadata().find("step"); it != weights.metadata().end()) {
      const char* b = it->second.data();
      const auto [end, err] = std::from_chars(b, b + it->second.size(), model_step);
      if (err != std::errc() || end != b + it->second.size() || model_step < 0) model_step = 0;
    }
    // The authors' quirks change the numbers: the run's setting is the one to score with.
    if (const auto it = weights.metadata().find("compat");
        it != weights.metadata().end() && it->second != (official ? "official" : "standard"))
      throw Error((out / "model.safetensors").string() + ": the run was trained with --compat " + it->second +
                  ", not " + (official ? "official" : "standard"));
    io::load_parameters(model.parameters(), weights);
    adapter_dirs.clear();
  }
  // The model, with the pre-trained adapters loaded, exists before --out is created: an
  // adapter that does not fit is an error that writes nothing.
  for (std::size_t j = 0; j < adapter_dirs.size(); ++j)
    io::load_pretrained_adapter(model.parameters(), io::SafetensorsFile(fs::path(adapter_dirs[j]) / "model.safetensors"), tc.adapters[j]);

  // The data has been read: only now is --out created.
  const fs::path best_dir = out / "best";
  if (!evaluate_only && !resume) {
    // A fresh run: an earlier run's checkpoint would pass for this run's (a --resume after this
    // run stopped before its first save would continue the earlier run), its model for a
    // result of this run, its labels for this run's, and its log lines for this run's. They
    // are kept as checkpoint.previous/, best.previous/ and FILE.previous until the next fresh
    // run (its best model too: it may be the only copy of the model the run was for); the lines
    // its resumes removed go with its log. A .previous that the earlier run has no file for is
    // an older run's and goes, so that every .previous is of the same run. Leftovers of a run
    // that ended before it wrote its log (an empty checkpoint/, labels.json) are no earlier
    // run: the .previous files of the run before it stay.
    const char* const run_files[] = {"checkpoint", "best", "model.safetensors", "adapter_config.json", "labels.json",
                                     "train_records.json", "metrics.jsonl", "metrics.jsonl.removed", "runs.jsonl"};
    auto present = [&](const fs::path& f) { return fs::symlink_status(f).type() != fs::file_type::not_found; };
    bool earlier_run = false;
    for (const char* name : {"best", "model.safetensors", "adapter_config.json", "metrics.jsonl", "metrics.jsonl.removed", "runs.jsonl"})
      earlier_run = earlier_run || present(out / name);
    std::error_code probe;
    earlier_run = earlier_run || (present(out / "checkpoint") &&
                                  (!fs::is_directory(out / "checkpoint") || !fs::is_empty(out / "checkpoint", probe)));
    // An earlier run without a model would send the model of the run before it (NAME.previous)
    // away with its other files: refused, as the only copy of a finished run's result.
    for (const char* name : {"model.safetensors.previous", "best.previous"}) {
      if (earlier_run && !present(out / "model.safetensors") && present(out / name))
        throw Error("--out " + out.string() + ": holds a run that did not finish (it has no model.safetensors) and, as " + name +
                    ", the model of the run before it, which a fresh run here would remove; --resume the unfinished run, "
                    "give another --out, or move " + (out / name).string() + " away");
    }
    std::string moved, dropped;
    for (const char* name : run_files) {
      if (!earlier_run) break;
      const fs::path file = out / name;
      fs::path previous = file;
      previous += ".previous";
      std::error_code mv;
      if (!present(file)) {
        if (present(previous)) {
          fs::remove_all(previous, mv);
          if (mv) throw Error(previous.string() + ": cannot remove an older run's file (" + mv.message() + ")");
          dropped += (dropped.empty() ? "" : ", ") + previous.filename().string();
        }
        continue;
      }
      if (fs::is_directory(previous) && !fs::is_symlink(previous)) fs::remove_all(previous, mv);
      if (!mv) fs::rename(file, previous, mv);
      if (mv) throw Error(file.string() + ": cannot move an earlier run's " + name + " to " + previous.string() + " (" + mv.message() + ")");
      moved += (moved.empty() ? "" : ", ") + std::string(name);
    }
    if (!moved.empty())
      std::fprintf(stderr, "note: moved an earlier run's %s in %s to NAME.previous\n", moved.c_str(), out.string().c_str());
    if (!dropped.empty())
      std::fprintf(stderr, "note: removed %s in %s (of a run before the earlier one, which has no such file)\n", dropped.c_str(),
                   out.string().c_str());
  }
  if (!evaluate_only) {
    std::error_code mk;
    fs::create_directories(out / "checkpoint", mk);
    if (mk || !fs::is_directory(out / "checkpoint"))
      throw Error("--out " + out.string() + ": cannot create the directory " + (out / "checkpoint").string() + " (" +
                  (mk ? mk.message() : std::string("a file is in the way")) + ")");
    detail::write_text_file(labels_path, nlohmann::json(labels.names()).dump(1) + "\n");
    // Which examples a few-shot run trains on (1-based records of the training file).
    if (train_fraction < 1.0) {
      detail::write_text_file(out / "train_records.json", nlohmann::json(train.records).dump() + "\n");
    } else {
      std::error_code rm;  // an earlier few-shot run's list would pass for this run's
      fs::remove(out / "train_records.json", rm);
      if (rm) throw Error((out / "train_records.json").string() + ": cannot remove the list of an earlier run (" + rm.message() + ")");
    }
  }
  if (!predictions_dir.empty()) {
    std::error_code mk;
    fs::create_directories(predictions_dir, mk);
    if (mk || !fs::is_directory(predictions_dir))
      throw Error("--predictions " + predictions_dir.string() + ": cannot create the directory (" +
                  (mk ? mk.message() : std::string("a file is in the way")) + ")");
  }

  TrainConfig cfg;
  cfg.adam.lr = learning_rate;
  cfg.adam.weight_decay = weight_decay;
  cfg.adam.eps = adam_epsilon;
  cfg.max_grad_norm = max_grad_norm;
  cfg.schedule = WarmupLinearSchedule{warmup_steps, total};
  cfg.seed = seed;
  // As the authors' scripts: the pre-training ones and the CosmosQA one step the scheduler
  // first (the first step runs at the schedule's value after one step), the other
  // fine-tuning ones the optimizer (the first step runs at the value before any step).
  cfg.scheduler_before_optimizer = !finetune || task == Task::multiple_choice;
  Trainer<dynamic_adapter, T, Dev> trainer(model, cfg);

  // The best model so far (evaluations during training): the first split's headline metric.
  const char* headline = task == Task::lin ? "head_accuracy" : task == Task::multiple_choice ? "accuracy" : "micro_f1";
  const bool track_best = eval_every > 0;
  const std::string best_of = evals.front().name + " " + headline;  // what "best" compares
  if (track_best && evals.front().data.count == 0)
    std::fprintf(stderr, "note: %s has no usable example: every evaluation scores 0, and %s keeps the first model evaluated\n",
                 evals.front().file.string().c_str(), best_dir.string().c_str());
  double best_metric = -std::numeric_limits<double>::infinity();
  std::int64_t best_step = -1;

  std::int64_t step = 0;
  if (evaluate_only) step = total = 0;
  if (args.has("resume") && !evaluate_only) {
    const fs::path opt = out / "checkpoint" / "optimizer.safetensors";  // exists: checked above
    io::load_parameters(model.parameters(), io::SafetensorsFile(out / "checkpoint" / "model.safetensors"));
    const auto meta = io::load_optimizer(model.parameters(), trainer.optimizer(), opt);
    step = detail::checkpoint_step(meta, opt, total);  // in range: checked before --out was written
    trainer.set_steps(step);
    const auto of = meta.find("best_of");
    if (const auto it = meta.find("best_metric"); it != meta.end() && of != meta.end() && of->second != best_of) {
      std::fprintf(stderr, "note: the checkpoint's best model was chosen by %s, this run chooses by %s: the choice starts over\n",
                   of->second.c_str(), best_of.c_str());
    } else if (it != meta.end()) {
      const char* b = it->second.data();
      const auto [end, err] = std::from_chars(b, b + it->second.size(), best_metric);
      if (err != std::errc() || end != b + it->second.size() || !std::isfinite(best_metric))
        throw Error(opt.string() + ": metadata \"best_metric\" = \"" + it->second + "\" is not a finite number");
      best_step = detail::checkpoint_step(meta, opt, step, "best_step");
    }
    std::fprintf(stderr, "resumed from %s at step %lld\n", (out / "checkpoint").string().c_str(), static_cast<long long>(step));
  }
  auto save_checkpoint = [&] {  // read-only access: nothing goes back to a device afterwards
    std::map<std::string, std::string> meta = {{"step", std::to_string(trainer.steps())}, {"backbone", backbone}};
    if (train_fraction < 1.0) meta["train_fraction"] = args.get("train-fraction");
    meta["train_examples"] = train_examples;
    meta["train_data"] = train_data;
    if (best_step >= 0) {
      char b[40];
      std::snprintf(b, sizeof b, "%.17g", best_metric);
      meta["best_metric"] = b;
      meta["best_step"] = std::to_string(best_step);
      meta["best_of"] = best_of;
    }
    // Both files carry the step: a run that stopped between the two writes leaves a pair that
    // --resume refuses.
    io::save_parameters(std::as_const(model).parameters(), out / "checkpoint" / "model.safetensors",
                        {{"step", meta["step"]}});
    io::save_optimizer(std::as_const(model).parameters(), std::as_const(trainer).optimizer(),
                       out / "checkpoint" / "optimizer.safetensors", meta);
  };
  // A finished model in @p dir: weights, label names and sizes (what evaluate reads).
  auto save_model = [&](const fs::path& dir) {
    io::save_parameters(std::as_const(model).parameters(), dir / "model.safetensors",
                        {{"task", args.get("task")}, {"compat", official ? "official" : "standard"},
                         {"step", std::to_string(step)}});
    if (dir != out) detail::write_text_file(dir / "labels.json", nlohmann::json(labels.names()).dump(1) + "\n");
    nlohmann::json cfgj = {{"task", args.get("task")}, {"hidden", ac.hidden}, {"adapter_size", ac.size},
                           {"adapter_transformer_layers", ac.layers}, {"adapter_heads", ac.heads},
                           {"adapter_list", plug}, {"adapter_skip_layers", ac.skip_layers},
                           {"max_seq_length", S}, {"adapters", tc.adapters},
                           {"compat", official ? "official" : "standard"}, {"backbone", backbone}};
    if (finetune) cfgj["fusion"] = tc.fusion == Fusion::add ? "add" : "concat";
    detail::write_text_file(dir / "adapter_config.json", cfgj.dump(1) + "\n");
    if (dir != out) {
      // How the model was trained travels with it: the runs' options and a few-shot run's records.
      for (const char* name : {"runs.jsonl", "train_records.json"}) {
        std::error_code ec;
        if (fs::exists(out / name)) fs::copy_file(out / name, dir / name, fs::copy_options::overwrite_existing, ec);
        else fs::remove(dir / name, ec);
        if (ec) throw Error((dir / name).string() + ": cannot copy " + (out / name).string() + " (" + ec.message() + ")");
      }
    }
  };

  // Batches: a fixed permutation per epoch (seeded), so a resumed run sees the same order.
  // What one micro-batch's TaskBatch points at: one per micro-batch of a step.
  struct BatchSlot {
    BatchSlot(index_t layers, const std::vector<index_t>& kept) : states(layers, kept) {}
    HiddenStates<T, Dev> states;
    std::vector<std::int64_t> ids, mask, lab;
    std::vector<T> tg, su, ob, st;
  };
  std::vector<std::unique_ptr<BatchSlot>> slots;
  for (index_t i = 0; i < (evaluate_only ? 1 : accumulation); ++i) slots.push_back(std::make_unique<BatchSlot>(ec.layers, keep));
  HiddenStates<T> staged(ec.layers, keep);  // cached states on their way to the device
  ForwardOptions eo;
  if (official) {
    eo.positions = PositionScheme::official;
    eo.mask_fill = MaskFill::minus_10000;
  }
  // The tokenizer's identity for the cache key (its files; the token ids are keyed as well).
  std::string tokenizer_id;
  for (const char* f : {"tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"}) {
    const fs::path fp = fs::path(args.get("model")) / f;
    if (!fs::exists(fp)) continue;
    std::ifstream in(fp, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    tokenizer_id += std::string(f) + ":" + io::hex64(io::fingerprint(std::as_bytes(std::span<const char>(bytes)))) + ";";
  }

  // The backbone feature cache of a split: built (or reopened from --feature-cache DIR) here.
  auto build_cache = [&](const PackedSplit& p, const std::vector<std::int32_t>& lens, const std::string& mode,
                         const std::string& what) {
    io::FeatureCacheSpec cs;
    cs.states = keep;
    cs.hidden = ec.hidden;
    cs.dtype = cache_dtype == "fp16" ? DType::F16 : cache_dtype == "bf16" ? DType::BF16 : DType::F32;
    cs.lengths = lens;
    cs.key = enc.cache_key(p.ids, p.mask, S, eo);
    cs.key["tokenizer"] = tokenizer_id;
    const auto t0 = std::chrono::steady_clock::now();
    io::FeatureCache cache = mode == "memory" ? io::FeatureCache::in_memory(std::move(cs))
                                              : io::FeatureCache::open_or_create(mode, std::move(cs));
    const bool reused = cache.complete();
    if (!reused) {
      const index_t rows_total = cache.rows();
      const bool tty = ::isatty(STDERR_FILENO) != 0;  // a live counter only on a terminal
      enc.fill_cache(cache, p.ids, p.mask, S, eo, std::max<index_t>(B, 32), [&](index_t done) {
        if (tty) std::fprintf(stderr, "\rfeature cache (%s): %lld / %lld sequences", what.c_str(), static_cast<long long>(done), static_cast<long long>(rows_total));
      });
      if (tty) std::fputc('\n', stderr);
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "feature cache (%s): %lld sequences, %.1f MB %s%s, %s in %.1f s\n", what.c_str(),
                 static_cast<long long>(cache.rows()), static_cast<double>(cache.bytes()) / 1e6, cache_dtype.c_str(),
                 mode == "memory" ? " in memory" : (" in " + cache.path().string()).c_str(), reused ? "reused" : "built", secs);
    return cache;
  };
  std::optional<io::FeatureCache> cache;  // of the training split
  if (cache_mode != "off" && !evaluate_only && step < total) cache.emplace(build_cache(train, train_len, cache_mode, "train"));
  if (eval_cache_mode != "off" && step < total)
    for (auto& e : evals)
      if (e.data.count > 0) e.cache.emplace(build_cache(e.data, e.len, eval_cache_mode, e.name));

  // Rows @p rows of split @p p, padded to their longest sequence; the backbone's states come
  // from @p cached when there is one.
  auto make_batch = [&](BatchSlot& slot, const PackedSplit& p, const std::vector<index_t>& rows,
                        const std::vector<std::int32_t>& lens, const io::FeatureCache* cached) {
    HiddenStates<T, Dev>& states = slot.states;
    std::vector<std::int64_t>& ids = slot.ids, &mask = slot.mask, &lab = slot.lab;
    std::vector<T>& tg = slot.tg, &su = slot.su, &ob = slot.ob, &st = slot.st;
    const index_t per = p.rows_per_example;  // sequences per example
    const index_t m = static_cast<index_t>(rows.size());
    const index_t n = m * per;
    index_t Tb = 1;  // this batch's padded length
    for (index_t r = 0; r < m; ++r)
      for (index_t c = 0; c < per; ++c) Tb = std::max<index_t>(Tb, lens[static_cast<std::size_t>(rows[r] * per + c)]);
    // Copy the first Tb positions of each row of width S.
    auto gather_pos = [&](const auto& src, auto& dst, index_t seqs_per_row) {
      const index_t count = m * seqs_per_row;
      dst.resize(static_cast<std::size_t>(count * Tb));
      for (index_t r = 0; r < m; ++r)
        for (index_t c = 0; c < seqs_per_row; ++c)
          std::copy_n(src.begin() + (rows[r] * seqs_per_row + c) * S, Tb, dst.begin() + (r * seqs_per_row + c) * Tb);
    };
    gather_pos(p.ids, ids, per);
    gather_pos(p.mask, mask, per);
    auto gather = [&](const auto& src, auto& dst, index_t width) {
      dst.resize(static_cast<std::size_t>(m * width));
      for (index_t r = 0; r < m; ++r) std::copy_n(src.begin() + rows[r] * width, width, dst.begin() + r * width);
    };
    if (task == Task::lin) {
      gather_pos(p.labels, lab, 1);
      // Positions outside the authors' loss mask are ignored (label -100).
      for (index_t i = 0; i < m * Tb; ++i)
        if (p.targets[static_cast<std::size_t>(rows[i / Tb] * S + i % Tb)] == 0) lab[static_cast<std::size_t>(i)] = -100;
    } else if (task == Task::entity_typing) {
      gather(p.targets, tg, p.labels_per_row);
      gather_pos(p.start, st, 1);
    } else if (task == Task::multiple_choice) {
      gather(p.labels, lab, 1);
    } else {
      gather(p.labels, lab, 1);
      gather_pos(p.subj, su, 1);
      gather_pos(p.obj, ob, 1);
    }
    if (cached) {
      HiddenStates<T>* host = &staged;
      if constexpr (std::is_same_v<Dev, Cpu>) host = &states;
      host->prepare(n, Tb, ec.hidden);
      for (index_t k : keep)
        for (index_t r = 0; r < m; ++r)
          for (index_t c = 0; c < per; ++c)
            cached->load(rows[r] * per + c, k, host->slot(k) + (r * per + c) * Tb * ec.hidden, Tb);
      if constexpr (!std::is_same_v<Dev, Cpu>) states.assign(staged);
    } else {
      enc.forward(states, TokenBatch{n, Tb, ids, mask, {}}, eo);
    }
    return TaskBatch<T, Dev>{.batch = n, .seq = Tb, .hidden = &states, .last = ec.layers, .attention_mask = mask,
                        .labels = lab, .targets = tg, .subj = su, .obj = ob, .start = st};
  };
  auto order_of_epoch = [&](std::int64_t epoch) {
    std::vector<index_t> order(static_cast<std::size_t>(train.count));
    std::iota(order.begin(), order.end(), index_t{0});
    std::mt19937_64 rng(seed * 1000003ull + static_cast<std::uint64_t>(epoch));
    std::shuffle(order.begin(), order.end(), rng);
    if (bucketing == "sort") {
      // Group by length: sort chunks of 50 batches by length, cut them into batches and
      // shuffle the batches (a short last batch stays last).
      auto len = [&](index_t e) {
        std::int32_t l = 0;
        for (index_t c = 0; c < train.rows_per_example; ++c) l = std::max(l, train_len[static_cast<std::size_t>(e * train.rows_per_example + c)]);
        return l;
      };
      const std::size_t chunk = static_cast<std::size_t>(50 * B);
      for (std::size_t a = 0; a < order.size(); a += chunk) {
        const auto end = order.begin() + static_cast<std::ptrdiff_t>(std::min(order.size(), a + chunk));
        std::stable_sort(order.begin() + static_cast<std::ptrdiff_t>(a), end, [&](index_t x, index_t y) { return len(x) < len(y); });
      }
      const std::size_t full = order.size() / static_cast<std::size_t>(B);
      std::vector<std::size_t> batches(full);
      std::iota(batches.begin(), batches.end(), std::size_t{0});
      std::shuffle(batches.begin(), batches.end(), rng);
      std::vector<index_t> sorted;
      sorted.reserve(order.size());
      for (std::size_t b : batches)
        sorted.insert(sorted.end(), order.begin() + static_cast<std::ptrdiff_t>(b * B), order.begin() + static_cast<std::ptrdiff_t>((b + 1) * B));
      sorted.insert(sorted.end(), order.begin() + static_cast<std::ptrdiff_t>(full * B), order.end());
      order = std::move(sorted);
    }
    return order;
  };

  // A resumed run logs again the steps (and evaluations) that the interrupted run logged after
  // its checkpoint; their lines go first, so that the log reads as that of a straight run.
  if (resume) detail::drop_lines_after(out / "metrics.jsonl", step, total);
  MetricsLog log((out / "metrics.jsonl").string());
  Progress progress(args.get("task"), total, step);
  TrainResult result;

  // Scores split @p e with the model as it is now (no dropout).
  std::vector<index_t> eval_rows;
  std::vector<T> logits_host;
  // With @p lines, one JSON line per example of the split's file (dropped ones included, in
  // file order): what the model predicted, and the gold answer.
  auto evaluate_split = [&](const EvalSplit& e, std::vector<nlohmann::json>* lines) {
    const PackedSplit& ev = e.data;
    std::vector<std::int64_t> predicted, gold, gold_mask;
    std::vector<std::vector<std::int64_t>> pred_sets, gold_sets;
    const auto& names = labels.names();
    auto name_list = [&](const std::vector<std::int64_t>& ids) {
      nlohmann::json l = nlohmann::json::array();
      for (auto id : ids) l.push_back(names[static_cast<std::size_t>(id)]);
      return l;
    };
    std::vector<nlohmann::json> kept;  // one per kept example, in order
    for (index_t first = 0; first < ev.count; first += B) {
      eval_rows.resize(static_cast<std::size_t>(std::min<index_t>(B, ev.count - first)));
      std::iota(eval_rows.begin(), eval_rows.end(), first);
      const TaskBatch<T, Dev> tb = make_batch(*slots.front(), ev, eval_rows, e.len, e.cache ? &*e.cache : nullptr);
      model.forward(tb, StepInfo{});
      const auto lg = model.logits();
      const index_t C = lg.extent(1);
      logits_host.resize(static_cast<std::size_t>(lg.size()));
      copy_to_host(Dev{}, std::span<T>(logits_host), lg.data());
      for (index_t r = 0; r < lg.extent(0); ++r) {
        const T* row = logits_host.data() + r * C;
        if (task == Task::entity_typing) {
          std::vector<std::int64_t> ps, gs;
          for (index_t c = 0; c < C; ++c) {
            if (row[c] > 0) ps.push_back(c);
            if (tb.targets[static_cast<std::size_t>(r * C + c)] > 0.5f) gs.push_back(c);
          }
          if (lines) kept.push_back({{"gold", name_list(gs)}, {"predicted", name_list(ps)}});
          pred_sets.push_back(std::move(ps));
          gold_sets.push_back(std::move(gs));
        } else {
          index_t best = 0;
          for (index_t c = 1; c < C; ++c)
            if (row[c] > row[best]) best = c;
          const std::int64_t y = tb.labels[static_cast<std::size_t>(r)];
          if (task == Task::lin) {
            // One row per position; a sentence's line lists the positions that count.
            const index_t pos = r % tb.seq;
            if (lines && pos == 0) kept.push_back({{"positions", nlohmann::json::array()}, {"gold", nlohmann::json::array()},
                                                   {"predicted", nlohmann::json::array()}});
            if (lines && y != -100) {
              kept.back()["positions"].push_back(pos);
              kept.back()["gold"].push_back(y);
              kept.back()["predicted"].push_back(best);
            }
            gold_mask.push_back(y == -100 ? 0 : 1);
          } else if (task == Task::multiple_choice) {
            if (y == -100) {  // unlabelled: predicted, not scored
              if (lines) kept.push_back({{"gold", nullptr}, {"predicted", best}, {"scores", std::vector<double>(row, row + C)}});
              continue;
            }
            if (lines) kept.push_back({{"gold", y}, {"predicted", best}, {"scores", std::vector<double>(row, row + C)}});
          } else if (lines) {
            // The softmax probability of the predicted relation.
            double z = 0;
            for (index_t c = 0; c < C; ++c) z += std::exp(static_cast<double>(row[c]) - static_cast<double>(row[best]));
            kept.push_back({{"gold", names[static_cast<std::size_t>(y)]}, {"predicted", names[static_cast<std::size_t>(best)]},
                            {"probability", 1.0 / z}});
          }
          predicted.push_back(best);
          gold.push_back(y);
        }
      }
    }
    if (lines) {
      lines->clear();
      std::size_t d = 0;
      for (std::size_t i = 0; i <= kept.size(); ++i) {
        // Dropped examples go where their record falls.
        const std::size_t next = i < kept.size() ? ev.records[i] : std::numeric_limits<std::size_t>::max();
        for (; d < ev.left_out.size() && ev.left_out[d].record < next; ++d)
          lines->push_back({{"record", ev.left_out[d].record}, {"dropped", ev.left_out[d].reason}});
        if (i == kept.size()) break;
        nlohmann::json l = {{"record", ev.records[i]}};
        if (!ev.ids_of_examples.empty() && !ev.ids_of_examples[i].empty()) l["id"] = ev.ids_of_examples[i];
        l.update(kept[i]);
        lines->push_back(std::move(l));
      }
    }
    nlohmann::json m = {{"split", e.name}, {"examples", ev.count}};
    if (task == Task::entity_typing) {
      const auto s = entity_typing_scores_from_sets(pred_sets, gold_sets);
      m["strict_accuracy"] = s.strict_accuracy;
      m["micro_f1"] = s.loose_micro.f1;
      m["micro_precision"] = s.loose_micro.precision;
      m["micro_recall"] = s.loose_micro.recall;
      m["macro_f1"] = s.loose_macro.f1;
    } else if (task == Task::lin) {
      m["head_accuracy"] = head_accuracy(predicted, gold, gold_mask);
    } else if (task == Task::multiple_choice) {
      std::size_t ok = 0;
      for (std::size_t i = 0; i < gold.size(); ++i) ok += predicted[i] == gold[i];
      // Over the labelled questions (evaluate reads unlabelled ones too): none, no accuracy.
      if (!gold.empty() || ev.count == 0) m["accuracy"] = gold.empty() ? 0.0 : double(ok) / double(gold.size());
      if (gold.size() != static_cast<std::size_t>(ev.count)) m["labelled"] = gold.size();
    } else {
      const std::int64_t none = labels.contains("no_relation") ? labels.id("no_relation") : -1;
      const auto prf = tacred_micro_prf(predicted, gold, none);
      m["micro_f1"] = prf.f1;
      m["precision"] = prf.precision;
      m["recall"] = prf.recall;
      std::size_t ok = 0;
      for (std::size_t i = 0; i < gold.size(); ++i) ok += predicted[i] == gold[i];
      m["accuracy"] = gold.empty() ? 0.0 : double(ok) / double(gold.size());
    }
    return m;
  };
  // Every evaluation split, logged; with evaluations during training, a better first split
  // replaces OUT/best. Returns the first split's metrics.
  auto evaluate_all = [&](bool write_predictions = false) {
    nlohmann::json first;
    std::vector<nlohmann::json> pred;
    for (std::size_t j = 0; j < evals.size(); ++j) {
      nlohmann::json m = evaluate_split(evals[j], write_predictions ? &pred : nullptr);
      if (write_predictions) {
        std::string text;
        for (const auto& l : pred) text += l.dump() + "\n";
        const fs::path file = predictions_dir / ("predictions_" + evals[j].name + ".jsonl");
        detail::write_text_file(file, text);
        std::fprintf(stderr, "predictions (%s): %s\n", evals[j].name.c_str(), file.string().c_str());
      }
      // `evaluate` logs the step of the model it scored, and says that it was not training.
      nlohmann::json line = {{"eval", m}, {"step", evaluate_only ? model_step : step}};
      if (evaluate_only) line["evaluate"] = true;
      const double score = m.value(headline, 0.0);
      // (The checkpoint's own best step evaluated again, by a resume of a finished run, stays
      // the best: the same model, the same score.)
      if (j == 0 && track_best && (score > best_metric || (step == best_step && score == best_metric))) {
        best_metric = score;
        best_step = step;
        std::error_code mk;
        fs::create_directories(best_dir, mk);
        if (mk || !fs::is_directory(best_dir))
          throw Error(best_dir.string() + ": cannot create the directory for the best model (" +
                      (mk ? mk.message() : std::string("a file is in the way")) + ")");
        // eval.json goes first and comes back last: a best/ without it is incomplete.
        std::error_code rm;
        fs::remove(best_dir / "eval.json", rm);
        if (rm) throw Error((best_dir / "eval.json").string() + ": cannot replace it (" + rm.message() + ")");
        save_model(best_dir);
        detail::write_text_file(best_dir / "eval.json", nlohmann::json{{"step", step}, {"metric", headline}, {"eval", m}}.dump(1) + "\n");
        line["best"] = true;
      }
      log.write(line);
      progress.note("step " + std::to_string(evaluate_only ? model_step : step) + ": " + m.dump() + (line.contains("best") ? " (best so far)" : ""));
      if (j == 0) first = std::move(m);
    }
    return first;
  };

  // OUT/runs.jsonl: one line per invocation that trained into --out (a fresh run starts it over).
  if (!evaluate_only) {
    std::string text;
    if (resume && fs::exists(out / "runs.jsonl")) {
      std::ifstream f(out / "runs.jsonl", std::ios::binary);
      if (!f.is_open()) throw Error((out / "runs.jsonl").string() + ": cannot open (" + std::strerror(errno) + ")");
      text.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
      if (!text.empty() && text.back() != '\n') text += '\n';
    }
    detail::write_text_file(out / "runs.jsonl", text + detail::run_record(args, step).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  }

  std::vector<index_t> rows;
  std::vector<TaskBatch<T, Dev>> micro;
  while (step < total) {
    const std::int64_t epoch = step / per_epoch, in_epoch = step % per_epoch;
    const auto order = order_of_epoch(epoch);
    micro.clear();
    for (index_t i = 0; i < accumulation; ++i) {
      const index_t first = static_cast<index_t>((in_epoch * accumulation + i) * B);
      if (first >= train.count) break;
      rows.assign(order.begin() + first, order.begin() + std::min<index_t>(first + B, train.count));
      micro.push_back(make_batch(*slots[static_cast<std::size_t>(i)], train, rows, train_len, cache ? &*cache : nullptr));
    }
    StepReport r;
    try {
      r = trainer.step(std::span<const TaskBatch<T, Dev>>(micro));
    } catch (const NonFiniteStep& e) {
      r = e.report();  // nothing was updated (lr: the rate the step would have used); logged and reported below
    }
    ++step;
    result.final_loss = r.loss;
    progress.step(r.loss);
    log.write({{"step", step}, {"epoch", epoch}, {"loss", r.loss}, {"lr", r.lr}, {"grad_norm", r.grad_norm}});
    // A non-finite loss or gradient: the Trainer updated nothing, but the run cannot go on
    // as the uninterrupted run it stands for. Stop before anything is saved.
    if (!std::isfinite(r.loss) || !std::isfinite(r.grad_norm))
      throw Error("step " + std::to_string(step) + ": the loss (" + std::to_string(r.loss) + ") or gradient norm (" +
                  std::to_string(r.grad_norm) + ") is not finite; stopped without saving" +
                  (save_steps > 0 ? " (the last checkpoint in " + (out / "checkpoint").string() + " is kept)" : std::string()) +
                  ". Check the learning rate and the input data (a damaged --feature-cache file gives this too)");
    // Evaluated before a checkpoint at the same step, so that the checkpoint knows the best.
    if (eval_every > 0 && step % eval_every == 0 && step < total) evaluate_all();
    if (save_steps > 0 && step % save_steps == 0) save_checkpoint();
    if (stop_after > 0 && step >= stop_after) {
      std::fprintf(stderr, "stopping after step %lld as asked (--stop-after)\n", static_cast<long long>(step));
      result.steps = step;
      return result;
    }
  }
  if (!evaluate_only) {
    save_checkpoint();
    save_model(out);
  }

  // The final evaluation (with evaluations during training, it may replace OUT/best too; the
  // checkpoint then records it, so that a run extended with --resume compares with it).
  result.metrics = evaluate_all(!predictions_dir.empty());
  if (track_best && best_step == step && !evaluate_only) save_checkpoint();
  if (track_best)
    std::fprintf(stderr, "best %s %s: %.4f at step %lld (%s)\n", evals.front().name.c_str(), headline, best_metric,
                 static_cast<long long>(best_step), best_dir.string().c_str());
  result.steps = step;
  return result;
}

/// Load the encoder on backend @p Dev and its tokenizer, then train.
template <class Dev>
TrainResult run_training_on(const Args& args, bool finetune, bool evaluate_only) {
  const fs::path dir = args.get("model");
  return io::with_encoder_dir<float, Dev>(dir, [&](auto& enc, const io::EncoderLoadReport&) {
    auto checked = [&](auto tok) {
      if (static_cast<index_t>(tok.vocab_size()) > enc.config().vocab_size)
        throw Error("the tokenizer in " + dir.string() + " has " + std::to_string(tok.vocab_size()) + " tokens but " +
                    (dir / "config.json").string() + " has vocab_size " + std::to_string(enc.config().vocab_size) +
                    " (tokenizer files from another model?)");
      return tok;
    };
    if (enc.config().family == Family::bert)
      return train_with(detail::backbone_of(enc), detail::packer_of(checked(io::BertTokenizer::from_directory(dir))), args,
                        finetune, evaluate_only);
    return train_with(detail::backbone_of(enc), detail::packer_of(checked(io::RobertaTokenizer::from_directory(dir))), args,
                      finetune, evaluate_only);
  });
}

#if defined(KA_CLI_WITH_CUDA)
/// run_training_on<Cuda>, compiled by nvcc in cli/train_cuda.cu.
TrainResult run_training_cuda(const Args& args, bool finetune, bool evaluate_only);
#endif

/// Load the encoder and its tokenizer, then train on the device --device names.
inline TrainResult run_training(const Args& args, bool finetune, bool evaluate_only = false) {
  const int threads = static_cast<int>(args.integer("threads", 0, 1024));
  if (threads > 0) Eigen::setNbThreads(threads);
  const std::string dtype = args.choice("dtype", {"fp32", "tf32", "bf16"});
  if (args.choice("device", {"cpu", "cuda"}) == "cuda") {
#if defined(KA_CLI_WITH_CUDA)
    return run_training_cuda(args, finetune, evaluate_only);
#else
    throw Error("--device cuda: this kadapter was built without the CUDA backend (configure with the CUDA toolkit "
                "installed, or pass -DKADAPTER_CUDA=ON)");
#endif
  }
  if (dtype != "fp32") throw Error("--dtype " + dtype + " needs --device cuda (the CPU computes in fp32)");
  return run_training_on<Cpu>(args, finetune, evaluate_only);
}

inline int run_train_command(const std::string& name, const std::vector<std::string>& argv) {
  const bool evaluate = name == "evaluate";
  const bool finetune = name == "finetune" || evaluate;
  std::vector<OptionSpec> options = training_options(finetune);
  if (evaluate) {
    // What only training reads is not offered; the model flags default to the run's.
    static const std::set<std::string> training_only = {
        "gradient-accumulation-steps", "epochs", "max-steps", "learning-rate", "warmup-steps", "weight-decay",
        "adam-epsilon", "max-grad-norm", "dropout", "seed", "save-steps", "resume", "stop-after", "eval-steps", "feature-cache", "cache-dtype",
        "adapter-dirs", "freeze-adapters", "train-fraction", "negative-sample"};
    for (auto& o : options) {
      if (training_only.count(o.name))
        o.refused = "is read only by training: evaluate scores the run as it was trained, with the settings in OUT/adapter_config.json";
      if (o.name == "batch-size") o.help = "examples per batch (multiple choice: questions)";
      if (o.name == "task") {
        o.value_name = "fac|lin|relation|entity-typing|multiple-choice";
        o.required = false;
        o.help = "what the run trained (default: from OUT/adapter_config.json)";
      }
      if (o.name == "out")
        o.help = "the run to evaluate (a pretrain or finetune --out, or its best/). The model flags (--task, --max-seq-length, "
                 "the adapter sizes and --adapter-list, --adapters, --fusion, --compat) are the run's, from OUT/adapter_config.json, "
                 "not the defaults shown below (those apply to runs without the file); one given must agree with the run";
      if (o.name == "eval-split") o.help = "split(s) to score";
      if (o.name == "model") o.help = "the frozen encoder the run was trained on (default: the run's --model, from OUT/runs.jsonl)";
      if (o.name == "data") o.help = "the split(s) to score, NAME.json (dev.json, test.json, ...) in the authors' formats; lin: or NAME.conllu; entity typing and multiple choice: or NAME.jsonl";
    }
    options.push_back({"predictions", "DIR", "also write DIR/predictions_SPLIT.jsonl: per example of the split's file, its "
                       "record number, the gold and the predicted answer (dropped examples: the reason)", false, ""});
  }
  Args args(name, options, argv);
  if (args.help()) {
    std::fputs(args.usage().c_str(), stdout);
    return 0;
  }
  if (evaluate) detail::adopt_run_config(args);
  else if (args.has("resume")) {
    if (!args.has("out")) throw Error(args.command() + ": --resume needs --out (the run's directory, whose runs.jsonl has its settings)");
    detail::adopt_resume_flags(args);
  }
  args.require();  // under --resume, after the run's record has given what it holds
  const std::string task = args.choice(
      "task", evaluate ? std::set<std::string>{"fac", "lin", "relation", "entity-typing", "multiple-choice"}
              : finetune ? std::set<std::string>{"relation", "entity-typing", "multiple-choice"}
                         : std::set<std::string>{"fac", "lin"});
  run_training(args, evaluate ? !(task == "fac" || task == "lin") : finetune, evaluate);
  return 0;
}

}  // namespace kadapter::cli
