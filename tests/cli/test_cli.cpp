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
