// A complete K-Adapter program on the library alone: fine-tune an entity-typing model (one
// knowledge adapter and a head over a frozen encoder), then score it on the dev split.
//
//   train_entity_typing [--model DIR] [--data DIR] [--adapter FILE] [--epochs N] [--out FILE]
//
// --model   a HuggingFace directory (config.json, model.safetensors, tokenizer files);
//           default models/all-MiniLM-L6-v2 (installed by scripts/setup.sh)
// --data    train.json, dev.json and types.txt in the OpenEntity format; default
//           data/demo/entity_typing
// --adapter a pre-trained factual adapter (`kadapter pretrain --task fac`'s model.safetensors);
//           without it the adapter starts from the paper's initialisation
// --out     where the trained task model's parameters go (default: not saved)
//
// The backbone is run once per batch and its states are thrown away; `kadapter finetune`
// caches them across epochs instead (docs/speed.md).
#include <kadapter/kadapter.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using namespace kadapter;

namespace {

struct Options {
  fs::path model = "models/all-MiniLM-L6-v2";
  fs::path data = "data/demo/entity_typing";
  fs::path adapter, out;
  int epochs = 3;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::printf("usage: %s [--model DIR] [--data DIR] [--adapter FILE] [--epochs N] [--out FILE]\n", argv[0]);
      std::exit(0);
    }
    if (i + 1 >= argc) throw Error(flag + " needs a value (see --help)");
    const std::string value = argv[++i];
    if (flag == "--model") o.model = value;
    else if (flag == "--data") o.data = value;
    else if (flag == "--adapter") o.adapter = value;
    else if (flag == "--out") o.out = value;
    else if (flag == "--epochs") {
      std::size_t used = 0;
      try {
        o.epochs = std::stoi(value, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != value.size() || o.epochs < 1 || o.epochs > 1000)
        throw Error("--epochs " + value + ": expected a whole number from 1 to 1000");
    } else {
      throw Error("unknown flag " + flag + " (see --help)");
    }
  }
  return o;
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

  const io::LabelMap types(io::read_label_list(o.data / "types.txt"));

  // One adapter of three layers tapping the embeddings, the middle and the last layer: the
  // sizes `kadapter pretrain` uses by default, so that its fac adapter loads here.
  AdapterConfig ac;
  ac.hidden = encoder.config().hidden;
  ac.size = 192;
  ac.layers = 1;
  ac.heads = 4;
  ac.ffn = 4 * ac.size;
  ac.count = 3;
  ac.plug_in = {0, L / 2, L};
  TaskConfig tc;
  tc.task = Task::entity_typing;
  tc.num_labels = static_cast<index_t>(types.size());
  tc.adapters = {"fac"};
  TaskModel<dynamic_adapter, float> model(tc, ac);
  init_parameters(model.parameters(), /*seed=*/42);
  if (!o.adapter.empty()) io::load_pretrained_adapter(model.parameters(), o.adapter, "fac");

  // Data: the authors' format and feature conventions (docs/data.md).
  io::EntityTypingFeatureOptions fo;
  fo.max_seq_length = 64;
  fo.convention = io::Convention::standard;
  auto features = [&](const char* split) {
    const auto read = io::read_entity_typing(o.data / split);
    auto set = io::build_entity_typing_features(read.examples, tok, types, fo);
    std::printf("%s: %zu examples, %zu dropped (longer than %lld tokens)\n", (o.data / split).string().c_str(),
                set.features.size(), set.dropped.size(), static_cast<long long>(fo.max_seq_length));
    return std::move(set.features);
  };
  const auto train = features("train.json");
  const auto dev = features("dev.json");
  if (train.empty()) throw Error((o.data / "train.json").string() + ": no usable example");

  const std::size_t batch_size = 32;
  const auto steps_per_epoch = static_cast<std::int64_t>((train.size() + batch_size - 1) / batch_size);
  TrainConfig cfg;
  cfg.adam.lr = 1e-3;
  cfg.schedule = WarmupLinearSchedule{20, steps_per_epoch * o.epochs};
  cfg.seed = 42;
  Trainer<dynamic_adapter, float> trainer(model, cfg);

  // The states the adapter reads, and the last one (the head concatenates it).
  HiddenStates<float> states(L, {0, L / 2, L});
  auto encode = [&](const Batch& b) {
    encoder.forward(states, TokenBatch{b.rows, b.len, b.ids, b.mask, {}});
    return TaskBatch<float>{b.rows, b.len, &states, L, b.mask, {}, b.targets, {}, {}, b.start};
  };

  std::vector<std::size_t> order(train.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::mt19937_64 shuffle(42);
  for (int epoch = 1; epoch <= o.epochs; ++epoch) {
    std::shuffle(order.begin(), order.end(), shuffle);
    double loss = 0;
    for (std::size_t first = 0; first < order.size(); first += batch_size) {
      const Batch b = gather(train, std::span(order).subspan(first, std::min(batch_size, order.size() - first)));
      const TaskBatch<float> tb = encode(b);
      loss += trainer.step(std::span(&tb, 1)).loss;
    }
    std::printf("epoch %d: mean training loss %.4f\n", epoch, loss / static_cast<double>(steps_per_epoch));
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
    io::save_parameters(model.parameters(), o.out);
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
