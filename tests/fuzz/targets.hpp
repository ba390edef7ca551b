/// @file targets.hpp
/// @brief Fuzz targets for the readers of outside files: the data sets (with their feature
/// builders), the tokenizers, safetensors files, HuggingFace config.json, PyTorch
/// checkpoints, and the encoder, task-model and optimizer checkpoints.
///
/// Each target takes arbitrary bytes. A kadapter::Error is the expected answer to bad input;
/// any other exception (an unclear message) escapes, and so does any memory error, which
/// the sanitizers of the fuzzing build report. `fuzz_main.cpp` hands them to libFuzzer;
/// `test_fuzz_regressions.cpp` replays the inputs under `regressions/` in the normal build.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <unistd.h>

#include "kadapter/io/bpe.hpp"
#include "kadapter/io/wordpiece.hpp"
#include "kadapter/kadapter.hpp"

namespace ka_fuzz {

using namespace kadapter;
using namespace kadapter::io;

/// A small WordPiece vocabulary: the special tokens, every printable ASCII character alone and
/// as a continuation, and a few words.
inline const BertTokenizer& bert() {
  static const BertTokenizer t = [] {
    std::string v = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n";
    for (char c = '!'; c <= '~'; ++c) v += std::string(1, c) + "\n##" + std::string(1, c) + "\n";
    for (const char* w : {"the", "went", "to", "rome", "##ing", "##s", "ann", "ran", "who", "cafe", "naive"}) v += std::string(w) + "\n";
    return BertTokenizer::from_vocab_text(v, "vocab.txt");
  }();
  return t;
}
inline const RobertaTokenizer& roberta() {
  static const RobertaTokenizer t = RobertaTokenizer::from_tokenizer_json(KA_FIXTURE_DIR "/tokenizer/bpe/tokenizer.json");
  return t;
}

/// Runs @p f; a kadapter::Error is a clean refusal (printed when KA_FUZZ_VERBOSE is set, to
/// see how far a seed gets).
template <class F>
void refused_cleanly(F&& f) {
  try {
    f();
  } catch (const kadapter::Error& e) {
    static const bool verbose = std::getenv("KA_FUZZ_VERBOSE") != nullptr;
    if (verbose) std::fprintf(stderr, "refused: %s\n", e.what());
  }
}

/// Reader options @p O with the skip policy.
template <class O>
O skipping() {
  O o;
  o.policy = MalformedPolicy::skip;
  return o;
}

/// Feature options @p O for length @p T and convention @p c.
template <class O>
O features(std::int64_t T, Convention c) {
  O o;
  o.max_seq_length = T;
  o.convention = c;
  return o;
}

template <class Tok>
void read_and_build(const Tok& tok, int kind, const std::string& body, std::int64_t T, bool standard) {
  const Convention c = standard ? Convention::standard : Convention::official;
  std::istringstream in(body);
  if (kind == 0) {
    const auto r = parse_relations(body, "f.json", skipping<RelationReadOptions>());
    auto fo = features<RelationFeatureOptions>(T, c);
    fo.overflow = (T & 1) ? MarkerOverflow::clamp : MarkerOverflow::drop;
    (void)build_relation_features(r.examples, tok, LabelMap(relation_labels(r.examples)), fo);
  } else if (kind == 1 || kind == 2) {
    const auto o = skipping<HeadReadOptions>();
    const auto r = kind == 1 ? parse_find_head(body, "f.json", o) : parse_conllu(in, "f.conllu", o);
    (void)build_head_features(r.examples, tok, features<HeadFeatureOptions>(T, c));
  } else if (kind == 3) {
    const auto r = parse_entity_typing(body, "f.json", skipping<EntityTypingReadOptions>());
    auto fo = features<EntityTypingFeatureOptions>(T, c);
    fo.drop_at_max_length = T & 1;
    (void)build_entity_typing_features(r.examples, tok, LabelMap(entity_type_labels(r.examples)), fo);
  } else {
    const auto r = parse_multiple_choice(in, "f.jsonl", skipping<MultipleChoiceReadOptions>());
    (void)build_multiple_choice_features(r.examples, tok, features<MultipleChoiceFeatureOptions>(T, c));
  }
}

/// Byte 0: the format (its low six bits modulo 5: relations, find_head, CoNLL-U, entity
/// typing, CosmosQA), the tokenizer (0x80: BPE) and the convention (0x40: standard); byte 1:
/// the maximum length; the rest: the file, which is also read as a label list.
inline void data(const std::uint8_t* bytes, std::size_t size) {
  if (size < 2) return;
  const std::uint8_t sel = bytes[0];
  const int kind = (sel & 0x3F) % 5;
  const std::int64_t T = 3 + bytes[1] % 40;
  const std::string body(reinterpret_cast<const char*>(bytes + 2), size - 2);
  refused_cleanly([&] {
    if (sel & 0x80) read_and_build(roberta(), kind, body, T, sel & 0x40);
    else read_and_build(bert(), kind, body, T, sel & 0x40);
  });
  refused_cleanly([&] {  // the default policy: the first malformed record fails
    std::istringstream in(body);
    if (kind == 0) (void)parse_relations(body, "f.json");
    else if (kind == 1) (void)parse_find_head(body, "f.json");
    else if (kind == 2) (void)parse_conllu(in, "f.conllu");
    else if (kind == 3) (void)parse_entity_typing(body, "f.json");
    else (void)parse_multiple_choice(in, "f.jsonl");
  });
  refused_cleanly([&] {  // every input is also a label list (relations.txt, types.txt)
    const auto names = parse_label_list(body, "relations.txt");
    (void)LabelMap(names);
  });
}

/// Byte 0: what the rest is (tokenizer.json for WordPiece or BPE, vocab.txt, vocab.json and
/// merges.txt split at byte 0x01, or text to encode); byte 1: encode options.
inline void tokenizer(const std::uint8_t* bytes, std::size_t size) {
  if (size < 2) return;
  const std::uint8_t sel = bytes[0], knob = bytes[1];
  const std::string body(reinterpret_cast<const char*>(bytes + 2), size - 2);
  const std::string probe = "Hello, world! naïve café 東京";
  refused_cleanly([&] {
    switch (sel % 5) {
      case 0: (void)BertTokenizer::from_tokenizer_json_text(body, "t.json").encode(probe); break;
      case 1: (void)RobertaTokenizer::from_tokenizer_json_text(body, "t.json").encode(probe); break;
      case 2: (void)BertTokenizer::from_vocab_text(body, "vocab.txt").encode(probe); break;
      case 3: {
        const auto cut = body.find('\x01');
        if (cut == std::string::npos) return;
        (void)RobertaTokenizer::from_strings(body.substr(0, cut), "vocab.json", body.substr(cut + 1), "merges.txt").encode(probe);
        break;
      }
      default: {
        io::EncodeOptions o;
        o.max_length = knob % 20;
        o.truncation = static_cast<TruncationStrategy>(knob % 3);
        o.truncation_side = (knob & 8) ? TruncationSide::left : TruncationSide::right;
        o.pad_to_length = (knob >> 4) % 3 == 0 ? 0 : knob % 25;
        const std::string a = body.substr(0, body.size() / 2), b = body.substr(body.size() / 2);
        refused_cleanly([&] { (void)bert().encode(body, o); });
        refused_cleanly([&] { (void)roberta().encode(body, o); });
        refused_cleanly([&] { (void)bert().encode_pair(a, b, o); });
        refused_cleanly([&] { (void)roberta().encode_pair(a, b, o); });
      }
    }
  });
}

/// The bytes as a safetensors file (every tensor read as F32 and F64), and from byte 2 on
/// as a config.json.
inline void safetensors(const std::uint8_t* bytes, std::size_t size) {
  static const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("ka_fuzz_" + std::to_string(::getpid()) + ".safetensors");
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(bytes), static_cast<std::streamsize>(size));
  }
  refused_cleanly([&] {
    const SafetensorsFile f(path);
    for (const auto& name : f.names()) {
      refused_cleanly([&] { (void)f.read<float>(name); });
      refused_cleanly([&] { (void)f.read<double>(name); });
    }
    (void)f.metadata();
  });
  std::error_code ignored;
  std::filesystem::remove(path, ignored);
  if (size >= 2)
    refused_cleanly([&] { (void)parse_hf_config(std::string(reinterpret_cast<const char*>(bytes + 2), size - 2), "config.json"); });
}

/// The bytes as a PyTorch checkpoint (pytorch_model.bin, zip or legacy format): every tensor
/// read, then the whole converted to safetensors and read back; and as any saved object
/// (training_args.bin) read as JSON, which must then dump.
inline void torch(const std::uint8_t* bytes, std::size_t size) {
  static const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("ka_fuzz_" + std::to_string(::getpid()) + ".pt");
  static const std::filesystem::path out =
      std::filesystem::temp_directory_path() / ("ka_fuzz_" + std::to_string(::getpid()) + "_converted.safetensors");
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(bytes), static_cast<std::streamsize>(size));
  }
  refused_cleanly([&] { (void)read_torch_object(path).dump(); });
  refused_cleanly([&] {
    const TorchCheckpoint c = convert_torch_checkpoint(path, out);
    const SafetensorsFile f(out);
    for (const auto& name : c.names())
      if (f.bytes(name).size() != c.tensor(name).data.size()) std::abort();  // converted wrongly
  });
  std::error_code ignored;
  std::filesystem::remove(path, ignored);
  std::filesystem::remove(out, ignored);
}

/// The bytes as a model.safetensors for the tiny RoBERTa fixture's encoder (byte 0 bit 0:
/// double weights), then as a fac task model's weights (a downstream model's adapter, with bit
/// 1) and as its optimizer state.
inline void checkpoint(const std::uint8_t* bytes, std::size_t size) {
  if (size < 1) return;
  static const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("ka_fuzz_ckpt_" + std::to_string(::getpid()) + ".safetensors");
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(bytes), static_cast<std::streamsize>(size));
  }
  static const EncoderConfig config = read_hf_config(KA_FIXTURE_DIR "/encoder/tiny_roberta/config.json");
  refused_cleanly([&] {
    const SafetensorsFile file(path);
    if (bytes[0] & 1) {
      FrozenEncoder<dynamic_encoder, double> enc(config);
      (void)load_encoder_weights(enc, file);
    } else {
      FrozenEncoder<dynamic_encoder, float> enc(config);
      (void)load_encoder_weights(enc, file);
    }
  });
  const AdapterConfig adapter{32, 16, 2, 2, 64, 0, 3, {0, 1, 2}, 1e-5};  // as the fac_official fixture
  TaskConfig fac;
  fac.task = Task::fac;
  fac.num_labels = 5;
  fac.adapters = {"fac"};
  refused_cleanly([&] {
    if (bytes[0] & 2) {
      TaskConfig et;
      et.task = Task::entity_typing;
      et.num_labels = 9;
      et.adapters = {"fac", "lin"};
      TaskModel<dynamic_adapter, float> model(et, adapter);
      load_pretrained_adapter(model.parameters(), SafetensorsFile(path), "fac");
    } else {
      TaskModel<dynamic_adapter, float> model(fac, adapter);
      (void)load_parameters(model.parameters(), SafetensorsFile(path));
    }
  });
  refused_cleanly([&] {
    TaskModel<dynamic_adapter, float> model(fac, adapter);
    AdamW<float> adam;
    (void)load_optimizer(model.parameters(), adam, path);
  });
  std::error_code ignored;
  std::filesystem::remove(path, ignored);
}

}  // namespace ka_fuzz
