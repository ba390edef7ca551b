// `kadapter encode` end to end: the binary encodes the fixture batch; its output equals the
// HuggingFace reference; bad flags and files give clear errors and a non-zero exit.
#define BOOST_TEST_MODULE cli
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

#include "kadapter/kadapter.hpp"
#include "support/compare.hpp"
#include "support/run_program.hpp"

namespace fs = std::filesystem;
using namespace kadapter;

namespace {

const fs::path kEnc = fs::path(KA_FIXTURE_DIR) / "encoder";

using test::Run;

struct TempDir : test::TempDir {
  TempDir() : test::TempDir("kadapter_cli_") {}
};

Run run(const std::string& args, const fs::path& tmp) { return test::run_program(KA_CLI, args, tmp); }

void compare_outputs(const fs::path& out, const fs::path& expected, const std::string& prefix,
                     index_t layers) {
  io::SafetensorsFile got(out), ref(expected);
  for (index_t k = 0; k <= layers; ++k) {
    const std::string name = "hidden_states." + std::to_string(k);
    BOOST_REQUIRE(got.contains(name));
    BOOST_TEST((got.info(name).dtype == DType::F32));
    const auto a = got.read<double>(name);
    const auto b = ref.read<double>(prefix + name);
    BOOST_TEST(test::relative_error(std::span<const double>(a), std::span<const double>(b)) < 1e-5);
    BOOST_TEST(test::max_error_over_max(std::span<const double>(a), std::span<const double>(b)) < 1e-5);
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(encode_writes_every_hidden_state) {
  TempDir tmp;
  const fs::path out = tmp.path / "out.safetensors";
  const std::string base = "encode --model '" + (kEnc / "tiny_roberta").string() + "' --batch '" +
                           (kEnc / "tiny_roberta" / "batch.safetensors").string() + "' --out '" +
                           out.string() + "'";
  Run r = run(base, tmp.path);
  BOOST_TEST_INFO(r.output);
  BOOST_REQUIRE_EQUAL(r.code, 0);
  compare_outputs(out, kEnc / "tiny_roberta" / "expected.safetensors", "", 2);

  r = run(base + " --positions official", tmp.path);
  BOOST_REQUIRE_EQUAL(r.code, 0);
  compare_outputs(out, kEnc / "tiny_roberta" / "expected.safetensors", "official.", 2);

  r = run(base + " --dtype f64 --states 0,2", tmp.path);
  BOOST_REQUIRE_EQUAL(r.code, 0);
  io::SafetensorsFile some(out);
  BOOST_TEST(some.names() == (std::vector<std::string>{"hidden_states.0", "hidden_states.2"}));
}

BOOST_AUTO_TEST_CASE(encode_bert_with_token_types) {
  TempDir tmp;
  const fs::path out = tmp.path / "bert.safetensors";
  Run r = run("encode --model '" + (kEnc / "tiny_bert").string() + "' --batch '" +
                  (kEnc / "tiny_bert" / "batch.safetensors").string() + "' --out '" +
                  out.string() + "'",
              tmp.path);
  BOOST_TEST_INFO(r.output);
  BOOST_REQUIRE_EQUAL(r.code, 0);
  compare_outputs(out, kEnc / "tiny_bert" / "expected.safetensors", "", 3);
}

BOOST_AUTO_TEST_CASE(bad_flags_and_files_fail_clearly) {
  TempDir tmp;
  const std::string model = "--model '" + (kEnc / "tiny_roberta").string() + "'";
  const std::string batch = "--batch '" + (kEnc / "tiny_roberta" / "batch.safetensors").string() + "'";
  const std::string out = "--out '" + (tmp.path / "o.safetensors").string() + "'";
  auto fails = [&](const std::string& args, const std::string& words) {
    const Run r = run(args, tmp.path);
    BOOST_TEST_INFO(args << " ->\n" << r.output);
    BOOST_TEST(r.code == 2);
    BOOST_TEST(r.output.find(words) != std::string::npos);
  };
  fails("frobnicate", "unknown command 'frobnicate'");
  fails("encode " + model + " " + batch, "missing required option --out");
  fails("encode " + model + " " + batch + " " + out + " --positions weird",
        "--positions 'weird' is not one of: huggingface, official");
  fails("encode " + model + " " + batch + " " + out + " --bogus 1", "unknown option --bogus");
  fails("encode " + model + " " + batch + " " + out + " --states 0,x", "--states '0,x'");
  fails("encode " + model + " " + batch + " " + out + " --states 0,9",
        "hidden state 9 does not exist");
  // The weights file given as the batch: no input_ids in it.
  fails("encode " + model + " --batch '" + (kEnc / "tiny_roberta" / "model.safetensors").string() +
            "' " + out,
        "model.safetensors: missing tensor 'input_ids'");
  // A batch whose ids do not fit the vocabulary of the model.
  fails("encode --model '" + (kEnc / "tiny_bert").string() + "' " + batch + " " + out,
        "batch.safetensors: input_ids[1][1] = 60 is outside the vocabulary [0, 50)");
  {
    io::SafetensorsWriter w;
    const std::int64_t ids[4] = {0, 5, 6, 2};
    const std::int64_t mask[3] = {1, 1, 1};
    w.add<std::int64_t>("input_ids", {1, 4}, std::span<const std::int64_t>(ids));
    w.add<std::int64_t>("attention_mask", {1, 3}, std::span<const std::int64_t>(mask));
    w.write(tmp.path / "mismatch.safetensors");
  }
  fails("encode " + model + " --batch '" + (tmp.path / "mismatch.safetensors").string() + "' " + out,
        "tensor 'attention_mask' has shape [1, 3], expected [1, 4] like input_ids");
  BOOST_TEST(!fs::exists(tmp.path / "o.safetensors"));  // nothing half-written on failure
}

BOOST_AUTO_TEST_CASE(grads_writes_loss_logits_and_every_gradient) {
  TempDir tmp;
  const fs::path c = fs::path(KA_FIXTURE_DIR) / "adapter" / "relation_concat_official";
  const fs::path out = tmp.path / "grads.safetensors";
  const std::string args = "grads --model '" + (kEnc / "tiny_roberta").string() + "' --adapter '" +
                           (c / "adapter.safetensors").string() + "' --batch '" +
                           (c / "batch.safetensors").string() +
                           "' --task relation --adapter-list 0,2 --adapter-heads 2 --fusion concat"
                           " --compat official --out '" + out.string() + "'";
  Run r = run(args, tmp.path);
  BOOST_TEST_INFO(r.output);
  BOOST_REQUIRE_EQUAL(r.code, 0);
  io::SafetensorsFile got(out), ref(c / "expected.safetensors"), adapter(c / "adapter.safetensors");
  const double loss = got.read<double>("loss").at(0), want = ref.read<double>("loss").at(0);
  BOOST_TEST(std::fabs(loss - want) <= 1e-5 * std::fabs(want));
  BOOST_TEST(got.info("logits").shape == ref.info("logits").shape);
  for (const auto& n : adapter.names()) BOOST_TEST(got.contains(n + ".grad"), n);

  // Wrong flags and files name the problem.
  auto fails = [&](const std::string& a, const std::string& words) {
    const Run f = run(a, tmp.path);
    BOOST_TEST_INFO(a << " ->\n" << f.output);
    BOOST_TEST(f.code == 2);
    BOOST_TEST(f.output.find(words) != std::string::npos);
  };
  fails(args + " --fusion add", "--fusion given twice");
  std::string wrong_list = args;
  wrong_list.replace(wrong_list.find("--adapter-list 0,2"), 18, "--adapter-list 0,1,2");
  fails(wrong_list, "holds 2 adapter layers under fac_adapter.adapter. but --adapter-list names 3");
  std::string down_list = args;
  down_list.replace(down_list.find("--adapter-list 0,2"), 18, "--adapter-list 2,0");
  fails(down_list, "--adapter-list: the plug-in points must increase (2 is followed by 0)");
  std::string wrong_heads = args;
  wrong_heads.replace(wrong_heads.find("--adapter-heads 2"), 17, "--adapter-heads 5");
  fails(wrong_heads, "--adapter-heads 5 does not divide the adapter width 16");
  std::string wrong_fusion = args;
  wrong_fusion.replace(wrong_fusion.find("--fusion concat"), 15, "--fusion add");
  fails(wrong_fusion, "--fusion add but the file holds task_dense.* (concat fusion)");
  // A multiple-choice model given a 2-D batch of 3 rows: not a whole number of questions.
  const fs::path qa = fs::path(KA_FIXTURE_DIR) / "adapter" / "qa_add_official";
  fails("grads --model '" + (kEnc / "tiny_roberta").string() + "' --adapter '" + (qa / "adapter.safetensors").string() +
            "' --batch '" + (fs::path(KA_FIXTURE_DIR) / "adapter" / "fac_official" / "batch.safetensors").string() +
            "' --task multiple-choice --adapter-list 0,2 --adapter-heads 2 --fusion add --compat official --out '" +
            out.string() + "'",
        "input_ids has 3 rows, not a multiple of --choices 4");
}

BOOST_AUTO_TEST_CASE(convert_writes_a_torch_checkpoint_as_safetensors) {
  TempDir tmp;
  const fs::path torch_dir = fs::path(KA_FIXTURE_DIR) / "torch";
  for (const char* name : {"state_legacy.pt", "state_zip.pt"}) {
    const fs::path in = torch_dir / name, out = tmp.path / (std::string(name) + ".safetensors");
    const Run r = run("convert --in '" + in.string() + "' --out '" + out.string() + "'", tmp.path);
    BOOST_TEST_REQUIRE(r.code == 0, r.output);
    const io::TorchCheckpoint c(in);
    BOOST_TEST(r.output.find("converted " + in.string() + " (" + c.format() + " format): " + std::to_string(c.names().size()) +
                             " tensors") != std::string::npos, r.output);
    BOOST_TEST(r.output.find("'epoch' is not a tensor; left out") != std::string::npos, r.output);
    const io::SafetensorsFile f(out);
    BOOST_TEST(f.names().size() == c.names().size());
    for (const auto& n : c.names()) {
      BOOST_TEST_REQUIRE(f.contains(n));
      const auto b = f.bytes(n);
      BOOST_TEST(std::vector<std::byte>(b.begin(), b.end()) == c.tensor(n).data, n);
    }
  }
  auto fails = [&](const std::string& args, const std::string& words) {
    const Run r = run(args, tmp.path);
    BOOST_TEST_INFO(args << " ->\n" << r.output);
    BOOST_TEST(r.code == 2);
    BOOST_TEST(r.output.find(words) != std::string::npos);
  };
  const std::string in = "--in '" + (torch_dir / "state_zip.pt").string() + "'";
  fails("convert " + in, "missing required option --out");
  fails("convert " + in + " --out '" + tmp.path.string() + "'", "expected a file in an existing directory");
  fails("convert " + in + " --out '" + (tmp.path / "no" / "x.safetensors").string() + "'", "expected a file in an existing directory");
  fails("convert " + in + " --out '" + (torch_dir / "state_zip.pt").string() + "'", "is the --in file");
  fails("convert --in '" + (kEnc / "tiny_roberta" / "config.json").string() + "' --out '" + (tmp.path / "x.safetensors").string() + "'",
        "config.json: not a PyTorch checkpoint");
  BOOST_TEST(!fs::exists(tmp.path / "x.safetensors"));
}

// The authors' adapter directories hold training_args.bin (their pre-training script's
// arguments) beside pytorch_model.bin: convert makes adapter_config.json of it, checked against
// the tensors (here the fac parity fixture's weights and Namespaces describing them).
BOOST_AUTO_TEST_CASE(convert_writes_adapter_config_from_the_authors_training_args) {
  TempDir tmp;
  const fs::path torch_dir = fs::path(KA_FIXTURE_DIR) / "torch";
  auto authors_dir = [&](const std::string& name, const std::string& args_bytes) {
    const fs::path d = tmp.path / name;
    fs::create_directories(d);
    fs::copy_file(torch_dir / "fac_official_legacy.bin", d / "pytorch_model.bin");
    if (!args_bytes.empty()) std::ofstream(d / "training_args.bin", std::ios::binary) << args_bytes;
    return d;
  };
  auto read_all = [](const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  const std::string fac_args = read_all(torch_dir / "training_args_fac.bin");
  auto convert = [&](const fs::path& d, const std::string& more = "") {
    return run("convert --in '" + (d / "pytorch_model.bin").string() + "' --out '" + (d / "model.safetensors").string() + "'" + more,
               tmp.path);
  };
  const fs::path fac = authors_dir("fac", fac_args);
  Run r = convert(fac, " --adapter-heads 2");
  BOOST_TEST_REQUIRE(r.code == 0, r.output);
  BOOST_TEST(r.output.find("wrote " + (fac / "adapter_config.json").string() + " from " + (fac / "training_args.bin").string() +
                           " (the fac adapter: plug-in points [0,1,2], width 16, 2 layers, 2 heads)") != std::string::npos,
             r.output);
  const auto config = nlohmann::json::parse(read_all(fac / "adapter_config.json"));
  BOOST_TEST(config.at("task") == "fac");
  BOOST_TEST(config.at("hidden") == 32);
  BOOST_TEST(config.at("adapter_size") == 16);
  BOOST_TEST(config.at("adapter_transformer_layers") == 2);
  BOOST_TEST(config.at("adapter_heads") == 2);
  BOOST_TEST(config.at("adapter_list") == nlohmann::json({0, 1, 2}));
  BOOST_TEST(config.at("adapter_skip_layers") == 0);
  BOOST_TEST(config.at("max_seq_length") == 8);
  BOOST_TEST(config.at("adapters") == nlohmann::json({"fac"}));
  BOOST_TEST(config.at("compat") == "official");
  BOOST_TEST(config.at("converted_from").at("model_name_or_path") == "tests/fixtures/encoder/tiny_roberta");
  BOOST_TEST(io::SafetensorsFile(fac / "model.safetensors").names().size() == io::TorchCheckpoint(fac / "pytorch_model.bin").names().size());
  // Converting again gives the same files; the lin adapter's arguments (zip format), named
  // with --training-args, give the lin task.
  const std::string weights = read_all(fac / "model.safetensors"), config_text = read_all(fac / "adapter_config.json");
  r = convert(fac, " --adapter-heads 2");
  BOOST_TEST(r.code == 0, r.output);
  BOOST_TEST((read_all(fac / "model.safetensors") == weights));
  BOOST_TEST((read_all(fac / "adapter_config.json") == config_text));
  // The same adapter under another file name: the same adapter_config.json but for where it
  // was converted from.
  fs::copy_file(fac / "pytorch_model.bin", fac / "fac.bin");
  r = run("convert --adapter-heads 2 --in '" + (fac / "fac.bin").string() + "' --out '" + (fac / "model.safetensors").string() + "'",
          tmp.path);
  BOOST_TEST(r.code == 0, r.output);
  BOOST_TEST(nlohmann::json::parse(read_all(fac / "adapter_config.json")).at("converted_from").at("weights") == "fac.bin");
  const fs::path lin = authors_dir("lin", "");
  r = convert(lin, " --adapter-heads 2 --training-args '" + (torch_dir / "training_args_lin_zip.bin").string() + "'");
  BOOST_TEST_REQUIRE(r.code == 0, r.output);
  BOOST_TEST(nlohmann::json::parse(read_all(lin / "adapter_config.json")).at("task") == "lin");
  // Without training_args.bin there is no adapter_config.json, and convert says so.
  const fs::path bare = authors_dir("bare", "");
  r = convert(bare);
  BOOST_TEST(r.code == 0, r.output);
  BOOST_TEST(r.output.find("no adapter_config.json written") != std::string::npos, r.output);
  BOOST_TEST(!fs::exists(bare / "adapter_config.json"));
  // Nor with --training-args none.
  const fs::path skip = authors_dir("skip", fac_args);
  r = convert(skip, " --training-args none");
  BOOST_TEST(r.code == 0, r.output);
  BOOST_TEST(!fs::exists(skip / "adapter_config.json"));
  // An adapter_config.json already there is kept, and convert says that it is what
  // --adapter-dirs will check.
  fs::copy_file(fac / "adapter_config.json", bare / "adapter_config.json");
  r = convert(bare);
  BOOST_TEST(r.code == 0, r.output);
  BOOST_TEST(r.output.find((bare / "adapter_config.json").string() + " was already there and is kept") != std::string::npos, r.output);
  // A file name that is not UTF-8 is left out of the JSON.
  const fs::path odd = authors_dir("odd", fac_args);
  fs::rename(odd / "pytorch_model.bin", odd / "model\xff.bin");
  r = run("convert --adapter-heads 2 --in '" + (odd / "model\xff.bin").string() + "' --out '" + (odd / "model.safetensors").string() + "'",
          tmp.path);
  BOOST_TEST_REQUIRE(r.code == 0, r.output);
  const auto odd_config = nlohmann::json::parse(read_all(odd / "adapter_config.json"));
  BOOST_TEST(!odd_config.at("converted_from").contains("weights"));
  BOOST_TEST(odd_config.at("converted_from").at("training_args") == "training_args.bin");

  // Arguments that do not fit the tensors, or are not the authors', are refused before
  // anything is written.
  auto fails = [&](const std::string& name, const std::string& args_bytes, const std::string& more, const std::string& words) {
    const fs::path d = authors_dir(name, args_bytes);
    const Run bad = convert(d, more);
    BOOST_TEST_INFO(name << " ->\n" << bad.output);
    BOOST_TEST(bad.code == 2);
    BOOST_TEST(bad.output.find(words) != std::string::npos);
    BOOST_TEST(!fs::exists(d / "model.safetensors"));
    BOOST_TEST(!fs::exists(d / "adapter_config.json"));
  };
  fails("heads", fac_args, "", "--adapter-heads 12 does not divide \"adapter_size\": 16 in ");
  auto changed = [&](const std::string& from, const std::string& to) {
    std::string b = fac_args;
    std::size_t n = 0;
    for (std::size_t at = b.find(from); at != std::string::npos; at = b.find(from, at + to.size()), ++n) b.replace(at, from.size(), to);
    BOOST_TEST_REQUIRE(n > 0u, from);
    return b;
  };
  // The authors' fine-tuning scripts save a training_args.bin beside their weights too: found
  // beside --in, it is not used (and said so); named, it is refused.
  const std::string finetuning = changed("trex", "tre_");
  const fs::path ft = authors_dir("finetuning", finetuning);
  r = convert(ft, " --adapter-heads 2");
  BOOST_TEST(r.code == 0, r.output);
  BOOST_TEST(r.output.find("training_args.bin is not the arguments of the authors' adapter pre-training (\"task_name\": \"tre_\")") !=
                 std::string::npos, r.output);
  BOOST_TEST(!fs::exists(ft / "adapter_config.json"));
  fails("task", "", " --adapter-heads 2 --training-args '" + (ft / "training_args.bin").string() + "'",
        "\"task_name\" is \"tre_\", expected one of the authors' pre-training tasks: \"trex\" (the fac adapter) or \"find_head\" (the lin adapter)");
  // adapter_size 16 -> 32: the BININT1 after the key and its memo slot.
  std::string wide = fac_args;
  const std::size_t key = wide.find("adapter_size");
  BOOST_TEST_REQUIRE(key != std::string::npos);
  BOOST_TEST_REQUIRE(wide.substr(key + 12, 1) == "q");
  BOOST_TEST_REQUIRE(wide.substr(key + 14, 2) == std::string("K\x10", 2));
  wide[key + 15] = '\x20';
  fails("size", wide, " --adapter-heads 2",
        "tensor 'adapter.0.down_project.weight' has shape [16,32], expected [32, hidden size] (\"adapter_size\": 32 in ");
  fails("size_found", wide, " --adapter-heads 2", "training_args.bin was found beside --in; --training-args none converts without adapter_config.json)");
  fails("layers", changed("adapter_transformer_layers", "adapter_transformer_layerz"), " --adapter-heads 2",
        "no argument \"adapter_transformer_layers\" (expected the training_args.bin of the authors' fac-adapter.py or lin-adapter.py)");
  fails("missing", "", " --training-args '" + (tmp.path / "none.bin").string() + "'", "none.bin: not found (expected the authors' training_args.bin)");
  fails("state_dict", "", " --training-args '" + (torch_dir / "state_legacy.pt").string() + "'",
        "state_legacy.pt: no argument \"task_name\" (expected the training_args.bin of the authors' fac-adapter.py or lin-adapter.py)");
  fails("args_dir", "", " --training-args '" + tmp.path.string() + "'", ": not a file (expected the authors' training_args.bin)");
  // --out naming a file the conversion reads or writes besides.
  auto out_refused = [&](const std::string& name, const char* out_name, const std::string& words) {
    const fs::path d = authors_dir(name, fac_args);
    const Run bad = run("convert --adapter-heads 2 --in '" + (d / "pytorch_model.bin").string() + "' --out '" + (d / out_name).string() + "'",
                        tmp.path);
    BOOST_TEST(bad.code == 2, bad.output);
    BOOST_TEST(bad.output.find(words) != std::string::npos, bad.output);
    BOOST_TEST((read_all(d / "training_args.bin") == fac_args));  // not overwritten with the weights
    BOOST_TEST(!fs::exists(d / "adapter_config.json"));
  };
  out_refused("out_args", "training_args.bin", "training_args.bin is the training arguments file ");
  out_refused("out_config", "adapter_config.json", "adapter_config.json: the adapter_config.json made from ");
  // An adapter_config.json of another run is not overwritten.
  const fs::path other = authors_dir("other", fac_args);
  std::ofstream(other / "adapter_config.json") << R"({"task": "fac", "adapter_size": 64})";
  r = convert(other, " --adapter-heads 2");
  BOOST_TEST(r.code == 2, r.output);
  BOOST_TEST(r.output.find("adapter_config.json exists and differs from the adapter_config.json made from") != std::string::npos, r.output);
  BOOST_TEST(!fs::exists(other / "model.safetensors"));
}
