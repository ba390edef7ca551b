// Task-model checkpoints under the authors' names: round trip, the authors' tensor names,
// pre-trained adapters loaded into downstream models, and clear errors.
#define BOOST_TEST_MODULE task_checkpoint
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <filesystem>
#include <vector>
#include <unistd.h>

#include "kadapter/kadapter.hpp"

namespace fs = std::filesystem;
using namespace kadapter;

namespace {

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("kadapter_taskckpt_" + std::to_string(::getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
};

AdapterConfig adapter() { return AdapterConfig{8, 4, 2, 2, 8, 0, 3, {0, 1, 2}, 1e-5}; }

TaskConfig task(Task t, index_t labels, std::vector<std::string> adapters) {
  TaskConfig c;
  c.task = t;
  c.num_labels = labels;
  c.adapters = std::move(adapters);
  return c;
}

bool has(const ParameterStore<float>& s, const std::string& name) { return s.find(name) != nullptr; }

}  // namespace

BOOST_AUTO_TEST_CASE(tensor_names_are_the_authors) {
  TaskModel<dynamic_adapter, float> fac(task(Task::fac, 5, {"fac"}), adapter());
  BOOST_TEST(has(fac.parameters(), "adapter.0.down_project.weight"));
  BOOST_TEST(has(fac.parameters(), "adapter.0.encoder.layer.1.attention.self.query.weight"));
  BOOST_TEST(has(fac.parameters(), "adapter.2.encoder.layer.0.attention.output.LayerNorm.bias"));
  BOOST_TEST(has(fac.parameters(), "adapter.1.encoder.layer.0.intermediate.dense.weight"));
  BOOST_TEST(has(fac.parameters(), "adapter.1.encoder.layer.1.output.dense.bias"));
  BOOST_TEST(has(fac.parameters(), "adapter.2.up_project.bias"));
  BOOST_TEST(has(fac.parameters(), "com_dense.weight"));
  BOOST_TEST(has(fac.parameters(), "dense.weight"));
  BOOST_TEST(has(fac.parameters(), "out_proj.bias"));
  TaskModel<dynamic_adapter, float> lin(task(Task::lin, 6, {"lin"}), adapter());
  BOOST_TEST(has(lin.parameters(), "self_attention.self.key.weight"));
  BOOST_TEST(has(lin.parameters(), "self_attention.output.LayerNorm.weight"));
  TaskModel<dynamic_adapter, float> et(task(Task::entity_typing, 9, {"fac", "lin"}), adapter());
  BOOST_TEST(has(et.parameters(), "fac_adapter.adapter.2.up_project.bias"));
  BOOST_TEST(has(et.parameters(), "lin_adapter.adapter.0.encoder.layer.0.attention.self.value.bias"));
  BOOST_TEST(has(et.parameters(), "task_dense_fac.weight"));
  BOOST_TEST(has(et.parameters(), "task_dense_lin.bias"));
  BOOST_TEST(has(et.parameters(), "task_dense.weight"));
  BOOST_TEST(et.parameters().find("task_dense.weight")->shape == (std::vector<index_t>{8, 16}));
  TaskModel<dynamic_adapter, float> qa(task(Task::multiple_choice, 4, {"fac"}), adapter());
  BOOST_TEST(has(qa.parameters(), "classifier.weight"));
  // Every parameter is counted once: adapters plus heads.
  index_t declared = 0;
  for (const auto& slot : fac.parameters().table()) declared += slot.size();
  BOOST_TEST(declared == adapter().parameter_count() + (8 * 16 + 8) + (8 * 16 + 8) + (5 * 8 + 5));
  // Every tensor starts aligned (after an odd-sized bias too); initialisation leaves the
  // padding between tensors zero (AdamW never updates it: adamw_element_mask marks it frozen).
  init_parameters(et.parameters(), 3);
  std::vector<char> covered(et.parameters().values().size(), 0);
  for (const auto& slot : et.parameters().table()) {
    BOOST_TEST(slot.offset % ParameterStore<float>::kAlign == 0, slot.name);
    std::fill_n(covered.begin() + slot.offset, slot.size(), 1);
  }
  BOOST_TEST(std::count(covered.begin(), covered.end(), 0) > 0);  // this model has padding
  for (std::size_t i = 0; i < covered.size(); ++i)
    if (!covered[i]) BOOST_REQUIRE(et.parameters().values()[i] == 0.0f);
}

BOOST_AUTO_TEST_CASE(round_trip_and_pretrained_adapter) {
  TempDir tmp;
  TaskModel<dynamic_adapter, float> fac(task(Task::fac, 5, {"fac"}), adapter());
  init_parameters(fac.parameters(), 3, 0.1);
  io::save_parameters(fac.parameters(), tmp.path / "fac.safetensors");
  TaskModel<dynamic_adapter, float> again(task(Task::fac, 5, {"fac"}), adapter());
  io::load_parameters(again.parameters(), io::SafetensorsFile(tmp.path / "fac.safetensors"));
  BOOST_TEST(std::equal(fac.parameters().values().begin(), fac.parameters().values().end(),
                        again.parameters().values().begin()));

  // A downstream model takes the adapter (not the pre-training head) from the checkpoint.
  TaskModel<dynamic_adapter, float> et(task(Task::entity_typing, 9, {"fac", "lin"}), adapter());
  init_parameters(et.parameters(), 4);
  const std::vector<float> before(et.parameters().values().begin(), et.parameters().values().end());
  io::load_pretrained_adapter(et.parameters(), io::SafetensorsFile(tmp.path / "fac.safetensors"), "fac");
  for (const auto& s : et.parameters().table()) {
    if (s.name.rfind("fac_adapter.adapter.", 0) == 0) {
      const auto* src = fac.parameters().find(s.name.substr(std::string("fac_adapter.").size()));
      BOOST_REQUIRE(src);
      BOOST_TEST(std::equal(s.data, s.data + s.size(), src->data), s.name);
    } else {
      BOOST_TEST(std::equal(s.data, s.data + s.size(), before.begin() + s.offset), s.name);
    }
  }
  // Any pre-training checkpoint fills any adapter slot (here the fac one into lin, read by
  // path); an adapter name the model does not have is refused, naming the model's adapters,
  // and so is a file without adapter tensors.
  io::load_pretrained_adapter(et.parameters(), tmp.path / "fac.safetensors", "lin");
  for (const auto& s : et.parameters().table())
    if (s.name.rfind("lin_adapter.adapter.", 0) == 0) {
      const auto* src = fac.parameters().find(s.name.substr(std::string("lin_adapter.").size()));
      BOOST_REQUIRE(src);
      BOOST_TEST(std::equal(s.data, s.data + s.size(), src->data), s.name);
    }
  TaskModel<dynamic_adapter, float> head_only(task(Task::relation, 5, {}), adapter());
  io::save_parameters(head_only.parameters(), tmp.path / "head.safetensors");
  try {
    io::load_pretrained_adapter(et.parameters(), tmp.path / "head.safetensors", "fac");
    BOOST_ERROR("a file without adapters was loaded");
  } catch (const Error& e) {
    BOOST_TEST(std::string(e.what()).find("no adapter.* tensors") != std::string::npos, e.what());
  }
  try {
    io::load_pretrained_adapter(et.parameters(), io::SafetensorsFile(tmp.path / "fac.safetensors"), "et");
    BOOST_ERROR("an adapter the model does not have was loaded");
  } catch (const Error& e) {
    BOOST_TEST(std::string(e.what()).find("the model has no adapter \"et\" to load it into (its adapters: fac, lin)") !=
                   std::string::npos,
               e.what());
  }
  // load_parameters reads a path as well as an open file.
  TaskModel<dynamic_adapter, float> reloaded(task(Task::entity_typing, 9, {"fac", "lin"}), adapter());
  io::save_parameters(et.parameters(), tmp.path / "et.safetensors");
  io::load_parameters(reloaded.parameters(), tmp.path / "et.safetensors");
  BOOST_TEST(std::equal(reloaded.parameters().values().begin(), reloaded.parameters().values().end(),
                        et.parameters().values().begin()));
}

BOOST_AUTO_TEST_CASE(mismatches_are_reported_together) {
  TempDir tmp;
  TaskModel<dynamic_adapter, float> fac(task(Task::fac, 5, {"fac"}), adapter());
  io::save_parameters(fac.parameters(), tmp.path / "fac.safetensors");
  // Three relations instead of five, and one adapter layer fewer.
  TaskModel<dynamic_adapter, float> other(task(Task::fac, 3, {"fac"}),
                                          AdapterConfig{8, 4, 2, 2, 8, 0, 2, {0, 1}, 1e-5});
  BOOST_CHECK_EXCEPTION(
      io::load_parameters(other.parameters(), io::SafetensorsFile(tmp.path / "fac.safetensors")),
      Error, [&](const Error& e) {
        const std::string m = e.what();
        BOOST_TEST_INFO(m);
        return m.find("fac.safetensors") != std::string::npos &&
               m.find("out_proj.weight has shape [5, 8], expected [3, 8]") != std::string::npos &&
               m.find("unexpected") != std::string::npos &&
               m.find("adapter.2.up_project.weight") != std::string::npos;
      });
}

BOOST_AUTO_TEST_CASE(optimizer_state_errors) {
  TempDir tmp;
  TaskModel<dynamic_adapter, float> fac(task(Task::fac, 5, {"fac"}), adapter());
  AdamW<float> adam;
  io::save_parameters(fac.parameters(), tmp.path / "not_optimizer.safetensors");
  BOOST_CHECK_EXCEPTION(io::load_optimizer(fac.parameters(), adam, tmp.path / "not_optimizer.safetensors"),
                        Error, [](const Error& e) {
                          return std::string(e.what()).find("adamw.steps") != std::string::npos;
                        });
}
