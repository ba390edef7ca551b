// The models on the Cuda backend against the Cpu backend and the PyTorch fixtures (fp32):
//   - every task model (model_cases.hpp): loss, logits and every gradient of one training
//     forward/backward with dropout, then three Trainer steps of two micro-batches (losses,
//     gradient norms, parameters, AdamW moments; frozen tensors unchanged);
//   - the authors' models of tests/fixtures/adapter through `kadapter grads`' code path, against
//     the CPU and against the fixtures with the CPU test's tolerances;
//   - the frozen encoder against HuggingFace's hidden states (tests/fixtures/encoder);
//   - the task models with bf16 products (cuda::Math::bf16) against the CPU's fp32.
// Tolerance: 1e-5 relative per tensor (gpu_compare.hpp), 2e-2 for bf16. Skipped without a GPU.
#define BOOST_TEST_MODULE cuda_models
#include "support/skippable_main.hpp"

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "cuda/device_check.hpp"
#include "cuda/gpu_compare.hpp"
#include "support/model_cases.hpp"
#include "cuda/model_reference.hpp"
#include "kadapter/kadapter_cuda.hpp"
#include "kadapter/io/model_dir.hpp"
#include "support/compare.hpp"
#include "support/official_cases.hpp"

namespace fs = std::filesystem;
using namespace kadapter;
using gpu_test::check_per_tensor;
using gpu_test::kTol;
using gpu_test::rel_error;

bool ka_test_can_run(std::string& why_not) { return cuda_device_present(why_not); }

namespace {

bool close(double gpu, double cpu) { return std::isfinite(gpu) && std::abs(gpu - cpu) <= kTol * std::abs(cpu); }

/// sqrt of every element: the second moment is (1 - b2) g², whose relative error is twice
/// the gradient's; its square root is compared at the gradient's tolerance.
std::vector<float> roots(const std::vector<float>& v) {
  std::vector<float> r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) r[i] = std::sqrt(v[i]);
  return r;
}

}  // namespace

BOOST_AUTO_TEST_CASE(task_models_match_the_cpu) {
  for (const cases::ModelCase& c : cases::model_cases()) {
    BOOST_TEST_CONTEXT("case " << c.name) {
      const cases::CaseResult cpu = ref::run_case_cpu(c);
      const cases::CaseResult gpu = cases::run_case<Cuda>(c);
      BOOST_TEST(close(gpu.loss, cpu.loss), "loss " << gpu.loss << " vs " << cpu.loss);
      BOOST_TEST(rel_error(gpu.logits, cpu.logits) <= kTol);
      check_per_tensor(gpu.grads, cpu.grads, cpu.table, "gradient ", kTol, 1e-3, c.zero_gradient);
      BOOST_REQUIRE_EQUAL(gpu.step_losses.size(), cpu.step_losses.size());
      for (std::size_t s = 0; s < cpu.step_losses.size(); ++s) {
        BOOST_TEST(close(gpu.step_losses[s], cpu.step_losses[s]),
                   "step " << s << " loss " << gpu.step_losses[s] << " vs " << cpu.step_losses[s]);
        BOOST_TEST(close(gpu.grad_norms[s], cpu.grad_norms[s]),
                   "step " << s << " gradient norm " << gpu.grad_norms[s] << " vs " << cpu.grad_norms[s]);
      }
      check_per_tensor(gpu.values, cpu.values, cpu.table, "parameter ");
      check_per_tensor(gpu.first_moment, cpu.first_moment, cpu.table, "first moment ", kTol, 1e-3, c.zero_gradient);
      check_per_tensor(roots(gpu.second_moment), roots(cpu.second_moment), cpu.table, "sqrt second moment ", kTol, 1e-3,
                       c.zero_gradient);
      // Resumed from a checkpoint into a fresh model and Trainer, then an evaluation forward
      // on a batch twice as large.
      for (std::size_t s = 0; s < cpu.resumed_losses.size(); ++s)
        BOOST_TEST(close(gpu.resumed_losses[s], cpu.resumed_losses[s]),
                   "resumed step " << s << " loss " << gpu.resumed_losses[s] << " vs " << cpu.resumed_losses[s]);
      check_per_tensor(gpu.resumed_values, cpu.resumed_values, cpu.table, "resumed parameter ");
      BOOST_TEST(rel_error(gpu.eval_logits, cpu.eval_logits) <= kTol);
      // Frozen tensors (no gradient) are not touched on the device.
      for (const auto& slot : cpu.table) {
        if (slot.grad) continue;
        bool same = true;
        for (index_t i = slot.offset; i < slot.offset + slot.size(); ++i)
          same = same && gpu.values[static_cast<std::size_t>(i)] == gpu.initial[static_cast<std::size_t>(i)];
        BOOST_TEST(same, slot.name << " is frozen but changed");
      }
    }
  }
}

namespace {
// Every task model with the products in tensor-core mode @p math (fp32 accumulation,
// weights, activations and optimizer) against the CPU's fp32: within @p tol of each tensor's
// scale, the scale floored at @p floor of the largest gradient of the model (a gradient that
// is 0 in exact arithmetic, as the key biases', holds the rounding noise of the products it
// sums). Logits within fp32 rounding of the CPU's draw a warning: the products may have run
// in fp32 (cuBLASLt's fast modes allow tensor cores, they do not promise them).
void tensor_core_mode_matches(cuda::Math math, double tol, double floor) {
  struct MathGuard {
    ~MathGuard() { cuda::context().math = cuda::Math::fp32; }
  } guard;
  const auto near = [tol](double gpu, double cpu) { return std::isfinite(gpu) && std::abs(gpu - cpu) <= tol * std::abs(cpu); };
  const std::size_t fallbacks = cuda::context().gemm_fallbacks;
  for (const cases::ModelCase& c : cases::model_cases()) {
    BOOST_TEST_CONTEXT("case " << c.name) {
      const cases::CaseResult cpu = ref::run_case_cpu(c);
      cuda::context().math = math;
      const cases::CaseResult gpu = cases::run_case<Cuda>(c);
      cuda::context().math = cuda::Math::fp32;
      BOOST_TEST(near(gpu.loss, cpu.loss), "loss " << gpu.loss << " vs " << cpu.loss);
      const double logits_error = rel_error(gpu.logits, cpu.logits);
      BOOST_TEST(logits_error <= tol);
      BOOST_WARN_MESSAGE(logits_error > 1e-5, "the logits are within fp32 rounding of the CPU's: did the products run in "
                                                  << cuda::math_name(math) << "?");
      BOOST_TEST_MESSAGE(cuda::math_name(math) << " case " << c.name << ": logits within " << logits_error);
      check_per_tensor(gpu.grads, cpu.grads, cpu.table, std::string(cuda::math_name(math)) + " gradient ", tol, floor,
                       c.zero_gradient);
      for (std::size_t s = 0; s < cpu.step_losses.size(); ++s)
        BOOST_TEST(near(gpu.step_losses[s], cpu.step_losses[s]),
                   "step " << s << " loss " << gpu.step_losses[s] << " vs " << cpu.step_losses[s]);
      check_per_tensor(gpu.values, cpu.values, cpu.table, std::string(cuda::math_name(math)) + " parameter ", tol, floor);
    }
  }
  BOOST_TEST_MESSAGE(cuda::math_name(math) << ": " << cuda::context().gemm_fallbacks - fallbacks
                                           << " product plan(s) built in strict fp32 instead");
}
}  // namespace

BOOST_AUTO_TEST_CASE(task_models_with_bf16_products_within_2e_2) {
  // bf16 keeps 8 significant bits: 2e-2 of each tensor's scale, floored at 1e-2.
  tensor_core_mode_matches(cuda::Math::bf16, 2e-2, 1e-2);
}

BOOST_AUTO_TEST_CASE(task_models_with_tf32_products_within_5e_3) {
  // tf32 keeps 11 significant bits, 8 times bf16's precision: the bf16 bounds scaled down
  // (2e-2 / 8 and 1e-2 / 8, rounded up to 5e-3 and 2e-3; not yet measured on a card).
  tensor_core_mode_matches(cuda::Math::tf32, 5e-3, 2e-3);
}

BOOST_AUTO_TEST_CASE(official_fixtures_match_on_the_gpu) {
  const auto all = test::cases();
  BOOST_REQUIRE(!all.empty());
  for (const auto& dir : all) {
    BOOST_TEST_CONTEXT("fixture " << dir.filename().string()) {
      const cli::GradsRequest req = test::request_for(dir);
      const cli::GradsResult<float> gpu = cli::compute_grads<float, Cuda>(req);
      const cli::GradsResult<float> cpu = ref::grads_cpu(req);
      BOOST_TEST(close(gpu.loss, cpu.loss), "loss " << gpu.loss << " vs " << cpu.loss);
      BOOST_TEST(rel_error(gpu.logits, cpu.logits) <= kTol);
      BOOST_REQUIRE_EQUAL(gpu.grads.size(), cpu.grads.size());
      // Against the PyTorch reference, with the CPU parity test's fp32 tolerances.
      io::SafetensorsFile expected(dir / "expected.safetensors");
      const double loss_ref = expected.read<double>("loss").at(0);
      BOOST_TEST(std::abs(static_cast<double>(gpu.loss) - loss_ref) <= 1e-5 * std::abs(loss_ref));
      const auto logits_ref = expected.read<double>("logits");
      BOOST_TEST(test::max_error_over_max(std::span<const float>(gpu.logits), std::span<const double>(logits_ref)) <= 1e-5);
      // Each gradient at the scale of its own largest magnitude, or of the largest gradient
      // of the model when its own is below 1e-6 of that (the key biases, whose gradient is 0
      // in exact arithmetic: both sides hold rounding noise), as the CPU parity test does.
      double global = 0, cpu_global = 0;
      for (const auto& g : gpu.grads)
        for (double v : expected.read<double>(g.name + ".grad")) global = std::max(global, std::abs(v));
      for (const auto& g : cpu.grads)
        for (float v : g.values) cpu_global = std::max(cpu_global, std::abs(static_cast<double>(v)));
      for (std::size_t i = 0; i < gpu.grads.size(); ++i) {
        const auto& g = gpu.grads[i];
        BOOST_TEST(g.name == cpu.grads[i].name);
        double cpu_max = 0, cpu_diff = 0;
        for (std::size_t k = 0; k < g.values.size(); ++k) {
          cpu_max = std::max(cpu_max, std::abs(static_cast<double>(cpu.grads[i].values[k])));
          cpu_diff = std::max(cpu_diff, std::abs(static_cast<double>(g.values[k]) - cpu.grads[i].values[k]));
        }
        const double cpu_scale = cpu_max > 1e-6 * cpu_global ? cpu_max : cpu_global;
        BOOST_TEST(cpu_diff <= kTol * cpu_scale, g.name << " against the CPU: error " << cpu_diff << ", scale " << cpu_scale);
        const auto want = expected.read<double>(g.name + ".grad");
        BOOST_REQUIRE_EQUAL(want.size(), g.values.size());
        double mx = 0, diff = 0;
        for (std::size_t k = 0; k < want.size(); ++k) {
          mx = std::max(mx, std::abs(want[k]));
          diff = std::max(diff, std::abs(static_cast<double>(g.values[k]) - want[k]));
        }
        const double scale = mx > 1e-6 * global ? mx : global;
        BOOST_TEST(diff <= 1e-4 * scale, g.name << ": error " << diff << ", scale " << scale);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(encoder_matches_huggingface_on_the_gpu) {
  struct Family {
    const char* dir;
    const char* prefix;
    PositionScheme positions;
  };
  for (const Family f : {Family{"tiny_roberta", "", PositionScheme::huggingface},
                         Family{"tiny_roberta", "official.", PositionScheme::official},
                         Family{"tiny_bert", "", PositionScheme::huggingface}}) {
    BOOST_TEST_CONTEXT("encoder " << f.dir << " " << f.prefix) {
      const fs::path dir = test::fixture_dir() / "encoder" / f.dir;
      io::SafetensorsFile batch(dir / "batch.safetensors");
      const index_t B = batch.info("input_ids").shape.at(0), S = batch.info("input_ids").shape.at(1);
      const auto ids = batch.read<std::int64_t>("input_ids");
      const auto mask = batch.read<std::int64_t>("attention_mask");
      const std::vector<std::int64_t> types =
          batch.contains("token_type_ids") ? batch.read<std::int64_t>("token_type_ids") : std::vector<std::int64_t>{};
      const auto cpu = ref::encode_cpu(dir.string(), B, S, ids, mask, types, f.positions);
      io::SafetensorsFile expected(dir / "expected.safetensors");
      io::with_encoder_dir<float, Cuda>(dir, [&](auto& enc, const io::EncoderLoadReport&) {
        HiddenStates<float, Cuda> states(enc.config().layers);
        enc.forward(states, TokenBatch{B, S, ids, mask, types}, ForwardOptions{f.positions, MaskFill::lowest});
        HiddenStates<float> host(enc.config().layers);
        host.assign(states);
        BOOST_REQUIRE_EQUAL(host.kept().size(), cpu.size());
        for (std::size_t i = 0; i < cpu.size(); ++i) {
          const index_t k = host.kept()[i];
          const auto got = host[k].span();
          const std::vector<float> gpu(got.begin(), got.end());
          BOOST_TEST(rel_error(gpu, cpu[i]) <= kTol, "state " << k << " against the CPU");
          const auto want = expected.read<double>(std::string(f.prefix) + "hidden_states." + std::to_string(k));
          BOOST_TEST(test::max_error_over_max(std::span<const float>(gpu), std::span<const double>(want)) < 1e-5,
                     "state " << k << " against HuggingFace");
        }
        return 0;
      });
    }
  }
}
