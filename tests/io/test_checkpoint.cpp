// Model config.json parsing, preset dispatch and encoder checkpoint loading.
#define BOOST_TEST_MODULE checkpoint
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <fstream>
#include <iterator>
#include <string>
#include <unistd.h>
#include <vector>

#include "kadapter/kadapter.hpp"
#include "support/compare.hpp"

namespace fs = std::filesystem;
using namespace kadapter;

namespace {

const fs::path kRoberta = fs::path(KA_FIXTURE_DIR) / "encoder" / "tiny_roberta";

bool message_has(const Error& e, const std::vector<std::string>& words) {
  const std::string m = e.what();
  BOOST_TEST_INFO("message: " << m);
  for (const auto& w : words)
    if (m.find(w) == std::string::npos) return false;
  return true;
}

struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("kadapter_ckpt_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

// Rewrite a checkpoint: rename, drop, reshape or retype tensors.
struct Edit {
  std::string prefix;                       // added to every kept name
  std::vector<std::string> drop;            // names to leave out
  std::vector<std::string> extra;           // extra F32 (2) tensors to add
  std::string reshape;                      // written with its first dim one smaller
  std::string poison;                       // its element 3 written as NaN
  DType as = DType::F32;                    // dtype of every float tensor written
};

void rewrite(const fs::path& from, const fs::path& to, const Edit& e) {
  io::SafetensorsFile in(from);
  io::SafetensorsWriter out;
  for (const auto& name : in.names()) {
    if (std::find(e.drop.begin(), e.drop.end(), name) != e.drop.end()) continue;
    auto info = in.info(name);
    auto values = in.read<float>(name);
    std::vector<std::int64_t> shape = info.shape;
    if (name == e.poison) values.at(3) = std::numeric_limits<float>::quiet_NaN();
    if (name == e.reshape) {
      values.resize(values.size() / static_cast<std::size_t>(shape[0]) *
                    static_cast<std::size_t>(shape[0] - 1));
      shape[0] -= 1;
    }
    if (e.as == DType::BF16) {
      std::vector<bfloat16> b(values.begin(), values.end());
      out.add<bfloat16>(e.prefix + name, shape, std::span<const bfloat16>(b));
    } else if (e.as == DType::I64) {
      std::vector<std::int64_t> b(values.begin(), values.end());
      out.add<std::int64_t>(e.prefix + name, shape, std::span<const std::int64_t>(b));
    } else {
      out.add<float>(e.prefix + name, shape, std::span<const float>(values));
    }
  }
  for (const auto& x : e.extra) {
    const float two[2] = {1, 2};
    out.add<float>(x, {2}, std::span<const float>(two));
  }
  out.write(to);
}

}  // namespace

BOOST_AUTO_TEST_CASE(reads_config_json_and_picks_presets) {
  const std::string roberta_base_json = R"({
    "architectures": ["RobertaForMaskedLM"], "model_type": "roberta", "vocab_size": 50265,
    "max_position_embeddings": 514, "type_vocab_size": 1, "hidden_size": 768,
    "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "layer_norm_eps": 1e-05, "pad_token_id": 1, "hidden_act": "gelu",
    "position_embedding_type": "absolute"})";
  const EncoderConfig c = io::parse_hf_config(roberta_base_json, "config.json");
  BOOST_TEST(preset_name(c) == "roberta_base");
  const EncoderConfig tiny = io::read_hf_config(kRoberta / "config.json");
  BOOST_TEST(preset_name(tiny) == "dynamic");
  BOOST_TEST(tiny.hidden == 32);
  BOOST_TEST(tiny.layers == 2);
  BOOST_TEST(tiny.pad_id == 1);
}

BOOST_AUTO_TEST_CASE(config_errors_name_file_and_field) {
  auto bad = [](const std::string& text, const std::vector<std::string>& words) {
    BOOST_CHECK_EXCEPTION(io::parse_hf_config(text, "m/config.json"), Error,
                          [&](const Error& e) { return message_has(e, words); });
  };
  const std::string base = R"("vocab_size": 10, "max_position_embeddings": 8,
    "type_vocab_size": 1, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 16, "layer_norm_eps": 1e-5, "pad_token_id": 1)";
  BOOST_CHECK_NO_THROW(io::parse_hf_config("{\"model_type\": \"roberta\", " + base + "}", "x"));
  bad("{\"model_type\": \"roberta\", " + base, {"m/config.json", "not valid JSON"});
  bad("[1, 2]", {"m/config.json", "JSON object"});
  bad("{\"model_type\": \"roberta\", \"hidden_size\": 1e999, " + base + "}", {"m/config.json", "not valid JSON", "overflow"});
  bad("{" + base + "}", {"m/config.json", "model_type"});
  bad("{\"model_type\": \"gpt2\", " + base + "}", {"m/config.json", "gpt2", "not supported"});
  bad(R"({"model_type": "bert", "vocab_size": 10})", {"m/config.json", "max_position_embeddings"});
  bad("{\"model_type\": \"bert\", \"hidden_act\": \"relu\", " + base + "}",
      {"m/config.json", "hidden_act", "relu"});
  bad("{\"model_type\": \"bert\", \"position_embedding_type\": \"relative_key\", " + base + "}",
      {"m/config.json", "position_embedding_type"});
  std::string odd = base;
  odd.replace(odd.find("\"num_attention_heads\": 2"), 24, "\"num_attention_heads\": 3");
  bad("{\"model_type\": \"bert\", " + odd + "}", {"m/config.json", "multiple of num_attention_heads"});
  std::string typed = base;
  typed.replace(typed.find("\"hidden_size\": 8"), 16, "\"hidden_size\": \"8\"");
  bad("{\"model_type\": \"bert\", " + typed + "}", {"m/config.json", "hidden_size", "integer"});
  BOOST_CHECK_EXCEPTION(io::read_hf_config("/nonexistent/config.json"), Error,
                        [](const Error& e) { return message_has(e, {"/nonexistent/config.json"}); });
}

BOOST_AUTO_TEST_CASE(all_checkpoint_problems_are_reported_at_once) {
  TempDir tmp;
  const fs::path broken = tmp.path / "broken.safetensors";
  Edit e;
  e.drop = {"encoder.layer.1.output.dense.bias", "embeddings.LayerNorm.weight"};
  e.extra = {"encoder.layer.7.surprise.weight"};
  e.reshape = "encoder.layer.0.intermediate.dense.weight";
  rewrite(kRoberta / "model.safetensors", broken, e);
  FrozenEncoder<dynamic_encoder, float> enc(io::read_hf_config(kRoberta / "config.json"));
  BOOST_CHECK_EXCEPTION(
      io::load_encoder_weights(enc, io::SafetensorsFile(broken)), Error, [&](const Error& err) {
        return message_has(err, {broken.string(), "2 missing", "encoder.layer.1.output.dense.bias",
                                 "embeddings.LayerNorm.weight", "1 unexpected",
                                 "encoder.layer.7.surprise.weight",
                                 "encoder.layer.0.intermediate.dense.weight has shape [47, 32], "
                                 "expected [48, 32]"});
      });
}

BOOST_AUTO_TEST_CASE(integer_weights_are_rejected) {
  TempDir tmp;
  const fs::path ints = tmp.path / "ints.safetensors";
  Edit e;
  e.as = DType::I64;
  rewrite(kRoberta / "model.safetensors", ints, e);
  FrozenEncoder<dynamic_encoder, float> enc(io::read_hf_config(kRoberta / "config.json"));
  BOOST_CHECK_EXCEPTION(io::load_encoder_weights(enc, io::SafetensorsFile(ints)), Error,
                        [&](const Error& err) {
                          return message_has(err, {"has dtype I64", "expected a floating type"});
                        });
}

BOOST_AUTO_TEST_CASE(non_finite_weights_are_rejected) {
  TempDir tmp;
  const fs::path nan = tmp.path / "nan.safetensors";
  io::SafetensorsFile good(kRoberta / "model.safetensors");
  Edit e;
  for (const auto& name : good.names())
    if (name.find("word_embeddings.weight") != std::string::npos) e.poison = name;
  BOOST_REQUIRE(!e.poison.empty());
  rewrite(kRoberta / "model.safetensors", nan, e);
  FrozenEncoder<dynamic_encoder, float> enc(io::read_hf_config(kRoberta / "config.json"));
  BOOST_CHECK_EXCEPTION(io::load_encoder_weights(enc, io::SafetensorsFile(nan)), Error, [&](const Error& err) {
    return message_has(err, {"nan.safetensors", e.poison, "non-finite value", "element 3"});
  });
}

BOOST_AUTO_TEST_CASE(prefixed_and_bare_names_load_the_same_weights) {
  TempDir tmp;
  const fs::path prefixed = tmp.path / "prefixed.safetensors";
  Edit e;
  e.prefix = "roberta.";
  e.extra = {"lm_head.bias"};  // a masked-LM head: known, ignored
  rewrite(kRoberta / "model.safetensors", prefixed, e);
  const EncoderConfig cfg = io::read_hf_config(kRoberta / "config.json");
  FrozenEncoder<dynamic_encoder, float> a(cfg), b(cfg);
  const auto ra = io::load_encoder_weights(a, io::SafetensorsFile(kRoberta / "model.safetensors"));
  const auto rb = io::load_encoder_weights(b, io::SafetensorsFile(prefixed));
  BOOST_TEST(ra.prefix == "");
  BOOST_TEST(rb.prefix == "roberta.");
  BOOST_TEST(std::equal(a.parameters().begin(), a.parameters().end(), b.parameters().begin()));
  // The bare checkpoint carries the pooler, which the frozen encoder ignores.
  BOOST_TEST(ra.ignored.size() == 2u);
  BOOST_TEST(rb.ignored.size() == 3u);  // roberta.pooler.dense.{weight,bias}, lm_head.bias
}

BOOST_AUTO_TEST_CASE(bf16_checkpoints_convert_on_load) {
  TempDir tmp;
  const fs::path bf = tmp.path / "bf16.safetensors";
  Edit e;
  e.as = DType::BF16;
  rewrite(kRoberta / "model.safetensors", bf, e);
  const EncoderConfig cfg = io::read_hf_config(kRoberta / "config.json");
  FrozenEncoder<dynamic_encoder, float> f32(cfg), b16(cfg);
  io::load_encoder_weights(f32, io::SafetensorsFile(kRoberta / "model.safetensors"));
  io::load_encoder_weights(b16, io::SafetensorsFile(bf));
  for (std::size_t i = 0; i < f32.parameters().size(); ++i) {
    const float rounded = static_cast<float>(bfloat16(f32.parameters()[i]));
    if (b16.parameters()[i] != rounded) {
      BOOST_TEST(b16.parameters()[i] == rounded, "parameter " << i);
      break;
    }
  }
}

BOOST_AUTO_TEST_CASE(model_dir_errors) {
  BOOST_CHECK_EXCEPTION(
      io::with_encoder_dir<float>("/nonexistent/model", [](auto&, const auto&) { return 0; }),
      Error, [](const Error& e) { return message_has(e, {"/nonexistent/model", "not a directory"}); });
  TempDir tmp;
  fs::copy_file(kRoberta / "config.json", tmp.path / "config.json");
  BOOST_CHECK_EXCEPTION(
      io::with_encoder_dir<float>(tmp.path, [](auto&, const auto&) { return 0; }), Error,
      [&](const Error& e) { return message_has(e, {"model.safetensors", "not found"}); });
  // A config asking for far more weights than the file holds fails before allocating them.
  {
    std::ifstream in(kRoberta / "config.json");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto at = text.find("\"num_hidden_layers\"");
    BOOST_REQUIRE(at != std::string::npos);
    const auto colon = text.find(':', at), end = text.find_first_of(",}", colon);
    text.replace(colon + 1, end - colon - 1, " 100000");
    std::ofstream(tmp.path / "config.json") << text;
  }
  fs::copy_file(kRoberta / "model.safetensors", tmp.path / "model.safetensors");
  BOOST_CHECK_EXCEPTION(
      io::with_encoder_dir<float>(tmp.path, [](auto&, const auto&) { return 0; }), Error, [&](const Error& e) {
        return message_has(e, {"config.json: describes an encoder of about", "num_hidden_layers 100000", "holds"});
      });
}
