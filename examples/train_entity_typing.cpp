// A complete K-Adapter program on the library alone: fine-tune an entity-typing model (one
// knowledge adapter and a head over a frozen encoder), then score it on the dev split.
//
//   train_entity_typing [--model DIR] [--data DIR] [--adapter DIR] [--epochs N]
//                       [--max-seq-length T] [--out FILE]
//
// --model   a HuggingFace directory (config.json, model.safetensors, tokenizer files);
//           default models/all-MiniLM-L6-v2 (installed by scripts/setup.sh)
// --data    train.json, dev.json and types.txt in the OpenEntity format; default
//           data/demo/entity_typing
// --adapter a pre-trained adapter: the --out directory of `kadapter pretrain` (its
//           adapter_config.json gives the adapter's sizes, its model.safetensors the
//           weights); without it a fac adapter starts from the paper's initialisation
// --epochs  training epochs (default 3)
// --max-seq-length  longest sequence in tokens (default 64); longer examples are left out
//           of training and of the dev scores, and their number is printed
// --out     a file to save the trained task model's parameters in (safetensors, the
//           authors' tensor names; default: not saved). Its metadata holds the task, the
//           label names in logit order ("labels", a JSON list), the adapter's name
//           ("adapter") and sizes ("adapter_config": hidden, adapter_size,
//           adapter_transformer_layers, adapter_heads, adapter_list, adapter_skip_layers, as
//           in adapter_config.json), max_seq_length and the encoder's io::backbone_id
//           ("backbone").
//
// The features follow the authors' OpenEntity conversion with this library's standard
// tokenization (Convention::standard, docs/data.md). The backbone runs once per batch and
// its states are thrown away; `kadapter finetune` caches them across epochs (docs/speed.md).
#include <kadapter/kadapter.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace fs = std::filesystem;
using namespace kadapter;

namespace {

struct Options {
  fs::path model = "models/all-MiniLM-L6-v2";
  fs::path data = "data/demo/entity_typing";
  fs::path adapter, out;
  int epochs = 3;
  int max_seq_length = 64;
};

int whole_number(const std::string& flag, const std::string& value, int lo, int hi) {
  std::size_t used = 0;
  int v = 0;
  try {
    v = std::stoi(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size() || v < lo || v > hi)
    throw Error(flag + " " + value + ": expected a whole number from " + std::to_string(lo) + " to " + std::to_string(hi));
  return v;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::printf("usage: %s [--model DIR] [--data DIR] [--adapter DIR] [--epochs N] [--max-seq-length T] [--out FILE]\n"
                  "(the comment at the top of examples/train_entity_typing.cpp says what each does)\n", argv[0]);
      std::exit(0);
    }
    static const char* known[] = {"--model", "--data", "--adapter", "--epochs", "--max-seq-length", "--out"};
    if (std::find(std::begin(known), std::end(known), flag) == std::end(known))
      throw Error("unknown flag " + flag + " (see --help)");
    if (i + 1 >= argc) throw Error(flag + " needs a value (see --help)");
    const std::string value = argv[++i];
    if (flag == "--model") o.model = value;
    else if (flag == "--data") o.data = value;
    else if (flag == "--adapter") o.adapter = value;
    else if (flag == "--out") o.out = value;
    else if (flag == "--epochs") o.epochs = whole_number(flag, value, 1, 1000);
    else o.max_seq_length = whole_number(flag, value, 8, 4096);
  }
  // Found now, not after training.
  if (!o.out.empty()) {
    const fs::path parent = o.out.has_parent_path() ? o.out.parent_path() : fs::path(".");
    if (fs::is_directory(o.out) || !fs::is_directory(parent))
      throw Error("--out " + o.out.string() + ": expected a file in an existing directory");
  }
  return o;
}

/// The adapter of a `kadapter pretrain` run: its name (the task, fac or lin) and sizes, read
/// from DIR/adapter_config.json and checked against the encoder (@p backbone: its
/// io::backbone_id).
std::pair<std::string, AdapterConfig> pretrained_adapter(const fs::path& dir, const EncoderConfig& ec,
                                                         const std::string& backbone) {
  const fs::path file = dir / "adapter_config.json";
  std::ifstream in(file);
  if (!in) throw Error(file.string() + ": cannot open (--adapter expects the --out directory of kadapter pretrain)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(file.string() + ": not valid JSON (" + e.what() + ")");
  }
  auto field = [&](const char* name) -> const nlohmann::json& {
    if (!j.is_object() || !j.contains(name)) throw Error(file.string() + ": field \"" + std::string(name) + "\" is missing");
    return j[name];
  };
  auto integer = [&](const char* name) {
    const auto& v = field(name);
    if (!v.is_number_integer()) throw Error(file.string() + ": field \"" + std::string(name) + "\" is " + v.dump() + ", expected an integer");
    return v.get<index_t>();
  };
  const auto& task = field("task");
  if (task != "fac" && task != "lin")
    throw Error(file.string() + ": field \"task\" is " + task.dump() + ", expected \"fac\" or \"lin\" (a pre-trained adapter)");
  // Runs record the encoder they were trained on; the same shapes on other weights would
  // load and compute something else.
  if (j.contains("backbone") && j["backbone"] != backbone)
    throw Error(file.string() + ": field \"backbone\" is " + j["backbone"].dump() + ", but the encoder's weights are \"" +
                backbone + "\" (an adapter pre-trained on another model)");
  if (j.contains("compat") && j["compat"] != "standard")
    std::printf("note: %s was pre-trained with compat %s; this program runs the standard settings\n", file.string().c_str(),
                j["compat"].dump().c_str());
  AdapterConfig ac;
  ac.hidden = integer("hidden");
  if (ac.hidden != ec.hidden)
    throw Error(file.string() + ": field \"hidden\" is " + std::to_string(ac.hidden) + ", but the encoder's hidden size is " +
                std::to_string(ec.hidden) + " (an adapter of another model)");
  ac.size = integer("adapter_size");
  ac.layers = integer("adapter_transformer_layers");
  ac.heads = integer("adapter_heads");
  ac.ffn = 4 * ac.size;
  ac.skip_layers = integer("adapter_skip_layers");
  const auto& list = field("adapter_list");
  if (!list.is_array() || list.empty() || list.size() > kMaxPlugPoints)
    throw Error(file.string() + ": field \"adapter_list\" is " + list.dump() + ", expected 1 to " + std::to_string(kMaxPlugPoints) + " plug-in points");
  ac.count = static_cast<index_t>(list.size());
  for (std::size_t k = 0; k < list.size(); ++k) {
    if (!list[k].is_number_integer() || list[k].get<index_t>() > ec.layers)
      throw Error(file.string() + ": field \"adapter_list\" is " + list.dump() + ", expected hidden-state indices 0.." + std::to_string(ec.layers));
    ac.plug_in[k] = list[k].get<index_t>();
  }
  if (!ac.valid()) throw Error(file.string() + ": the adapter's sizes do not make an adapter (see AdapterConfig::valid)");
  return {task.get<std::string>(), ac};
}

/// The rows of @p feats listed in @p rows as one batch, padded only to its longest sequence.
struct Batch {
  index_t rows = 0, len = 0;
  std::vector<std::int64_t> ids, mask;
  std::vector<float> start, targets;
};

Batch gather(const std::vector<io::EntityTypingFeatures>& feats, std::span<const std::size_t> rows) {
  Batch b;
  b.rows = static_cast<index_t>(rows.size());
  for (std::size_t r : rows)
    b.len = std::max<index_t>(b.len, std::accumulate(feats[r].attention_mask.begin(), feats[r].attention_mask.end(), index_t{0}));
  for (std::size_t r : rows) {
    const auto& f = feats[r];
    b.ids.insert(b.ids.end(), f.input_ids.begin(), f.input_ids.begin() + b.len);
    b.mask.insert(b.mask.end(), f.attention_mask.begin(), f.attention_mask.begin() + b.len);
    b.start.insert(b.start.end(), f.start_id.begin(), f.start_id.begin() + b.len);
    b.targets.insert(b.targets.end(), f.labels.begin(), f.labels.end());
  }
  return b;
}

template <class Tok>
int run(const Options& o, const Tok& tok) {
  // The frozen encoder, sized by its config.json at run time.
  FrozenEncoder<dynamic_encoder, float> encoder(io::read_hf_config(o.model / "config.json"));
  io::load_encoder_weights(encoder, io::SafetensorsFile(o.model / "model.safetensors"));
  const index_t L = encoder.config().layers;
  const std::string backbone = io::backbone_id(encoder);  // a fingerprint of the weights

  // Position ids run from position_offset() (RoBERTa: pad_id + 1); the model needs rows for all.
  if (o.max_seq_length + encoder.config().position_offset() > encoder.config().max_positions)
    throw Error("--max-seq-length " + std::to_string(o.max_seq_length) + " needs " +
                std::to_string(o.max_seq_length + encoder.config().position_offset()) + " position embeddings but " +
                (o.model / "config.json").string() + " has max_position_embeddings " +
                std::to_string(encoder.config().max_positions));
  if (tok.vocab_size() > static_cast<std::size_t>(encoder.config().vocab_size))
    throw Error("the tokenizer in " + o.model.string() + " has " + std::to_string(tok.vocab_size()) + " tokens, more than " +
                (o.model / "config.json").string() + "'s vocab_size " + std::to_string(encoder.config().vocab_size));
  const io::LabelMap types(io::read_label_list(o.data / "types.txt"));

  // The adapter: a pre-trained one's sizes, or (fresh) three layers tapping the embeddings,
  // the middle and the last layer, of the widths `kadapter pretrain` uses by default.
  std::string name = "fac";
  AdapterConfig ac;
  if (!o.adapter.empty()) {
    std::tie(name, ac) = pretrained_adapter(o.adapter, encoder.config(), backbone);
  } else {
    ac.hidden = encoder.config().hidden;
    ac.size = 192;
    ac.layers = 1;
    ac.heads = 4;
    ac.ffn = 4 * ac.size;
    ac.count = 3;
    ac.plug_in = {0, L / 2, L};
  }
  TaskConfig tc;
  tc.task = Task::entity_typing;
  tc.num_labels = static_cast<index_t>(types.size());
  tc.adapters = {name};
  TaskModel<dynamic_adapter, float> model(tc, ac);
  init_parameters(model.parameters(), /*seed=*/42);
  if (!o.adapter.empty()) {
    io::load_pretrained_adapter(model.parameters(), o.adapter / "model.safetensors", name);
    std::printf("loaded the %s adapter of %s\n", name.c_str(), o.adapter.string().c_str());
  }

  // Data: the authors' OpenEntity format and conversion (docs/data.md).
  io::EntityTypingFeatureOptions fo;
  fo.max_seq_length = o.max_seq_length;
  fo.convention = io::Convention::standard;
  auto features = [&](const char* split) {
    const fs::path file = o.data / split;
    io::FeatureSet<io::EntityTypingFeatures> set;
    try {
      set = io::build_entity_typing_features(io::read_entity_typing(file).examples, tok, types, fo);
    } catch (const Error& e) {
      const std::string what = e.what();
      throw Error(what.starts_with(file.string()) ? what : file.string() + ": " + what);
    }
    std::printf("%s: %zu examples, %zu left out (longer than %lld tokens)\n", file.string().c_str(), set.features.size(),
                set.dropped.size(), static_cast<long long>(fo.max_seq_length));
    return std::move(set.features);
  };
  const auto train = features("train.json");
  const auto dev = features("dev.json");
  if (train.empty()) throw Error((o.data / "train.json").string() + ": no usable example");

  // A learning rate for a fresh adapter; a pre-trained one may want less, to keep more of
  // what it learnt.
  const std::size_t batch_size = 32;
  const auto steps_per_epoch = static_cast<std::int64_t>((train.size() + batch_size - 1) / batch_size);
  TrainConfig cfg;
  cfg.adam.lr = 1e-3;
  cfg.schedule = WarmupLinearSchedule{20, steps_per_epoch * o.epochs};
  cfg.seed = 42;
  Trainer<dynamic_adapter, float> trainer(model, cfg);

  // The states the adapter reads, and the last one (the head concatenates it).
  std::vector<index_t> keep(ac.plug_in.begin(), ac.plug_in.begin() + ac.count);
  keep.push_back(L);
  std::sort(keep.begin(), keep.end());
  keep.erase(std::unique(keep.begin(), keep.end()), keep.end());
  HiddenStates<float> states(L, keep);
  auto encode = [&](const Batch& b) {
    encoder.forward(states, TokenBatch{b.rows, b.len, b.ids, b.mask, {}});
    return TaskBatch<float>{b.rows, b.len, &states, L, b.mask, {}, b.targets, {}, {}, b.start};
  };

  std::vector<std::size_t> order(train.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::mt19937_64 shuffle(42);
  for (int epoch = 1; epoch <= o.epochs; ++epoch) {
    std::shuffle(order.begin(), order.end(), shuffle);
    double loss = 0;  // summed over examples: a step's loss is the mean over its batch
    for (std::size_t first = 0; first < order.size(); first += batch_size) {
      const Batch b = gather(train, std::span(order).subspan(first, std::min(batch_size, order.size() - first)));
      const TaskBatch<float> tb = encode(b);
      loss += trainer.step(std::span(&tb, 1)).loss * static_cast<double>(b.rows);
    }
    std::printf("epoch %d: mean training loss %.4f\n", epoch, loss / static_cast<double>(train.size()));
  }

  // Dev scores: a type is predicted where its logit is positive (the authors' OpenEntity rule).
  std::vector<float> logits, gold;
  std::vector<std::size_t> rows;
  for (std::size_t first = 0; first < dev.size(); first += batch_size) {
    rows.resize(std::min(batch_size, dev.size() - first));
    std::iota(rows.begin(), rows.end(), first);
    const Batch b = gather(dev, rows);
    model.forward(encode(b), StepInfo{});  // StepInfo{}: no dropout
    const auto lg = model.logits();
    logits.insert(logits.end(), lg.data(), lg.data() + lg.size());
    gold.insert(gold.end(), b.targets.begin(), b.targets.end());
  }
  const auto s = entity_typing_scores(std::span<const float>(logits), std::span<const float>(gold), types.size());
  std::printf("dev: %zu entities, strict accuracy %.4f, loose micro F1 %.4f, loose macro F1 %.4f\n", s.examples,
              s.strict_accuracy, s.loose_micro.f1, s.loose_macro.f1);
  if (!o.out.empty()) {
    // What the weights need to be used again travels in the file's metadata: the task, the
    // label names in logit order, the adapter's sizes and the encoder it was trained on.
    const nlohmann::json adapter_config = {{"hidden", ac.hidden}, {"adapter_size", ac.size},
                                           {"adapter_transformer_layers", ac.layers}, {"adapter_heads", ac.heads},
                                           {"adapter_list", std::vector<index_t>(ac.plug_in.begin(), ac.plug_in.begin() + ac.count)},
                                           {"adapter_skip_layers", ac.skip_layers}};
    io::save_parameters(model.parameters(), o.out,
                        {{"task", "entity_typing"},
                         {"labels", nlohmann::json(types.names()).dump()},
                         {"adapter", name},
                         {"adapter_config", adapter_config.dump()},
                         {"max_seq_length", std::to_string(o.max_seq_length)},
                         {"backbone", backbone}});
    std::printf("saved %s\n", o.out.string().c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  const Options o = parse(argc, argv);
  if (io::read_hf_config(o.model / "config.json").family == Family::bert)
    return run(o, io::BertTokenizer::from_directory(o.model));
  return run(o, io::RobertaTokenizer::from_directory(o.model));
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 2;
}
