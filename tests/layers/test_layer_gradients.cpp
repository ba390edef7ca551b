// Every hand-derived backward kernel against central finite differences in double precision.
//
// Each check uses a random projection loss L = Σ dy ∘ y with a fixed random dy, so every
// output element matters; the analytic gradients come from the backward kernel called with
// that dy. Dropout masks are fixed by (seed, stream), so a layer with dropout is still a
// differentiable function of its inputs and parameters.
#define BOOST_TEST_MODULE layer_gradients
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <iostream>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "kadapter/backend/eigen/backward.hpp"
#include "kadapter/backend/eigen/kernels.hpp"
#include "kadapter/core/aligned.hpp"
#include "kadapter/core/error.hpp"
#include "kadapter/core/gradient_mode.hpp"
#include "kadapter/core/random.hpp"
#include "kadapter/core/workspace.hpp"
#include "kadapter/layers/encoder_layer.hpp"
#include "kadapter/models/parameters.hpp"
#include "support/gradcheck.hpp"

using namespace kadapter;
using Vec = std::vector<double>;

namespace {

constexpr double kTol = 1e-6;

// ---------------------------------------------------------------------------------------
// Small helpers

MatrixView<double> mat(Vec& v, index_t rows, index_t cols) {
  BOOST_REQUIRE(static_cast<index_t>(v.size()) == rows * cols);
  return MatrixView<double>(v.data(), rows, cols);
}
MatrixView<const double> cmat(const Vec& v, index_t rows, index_t cols) {
  BOOST_REQUIRE(static_cast<index_t>(v.size()) == rows * cols);
  return MatrixView<const double>(v.data(), rows, cols);
}
std::span<double> sp(Vec& v) { return std::span<double>(v); }
std::span<const double> csp(const Vec& v) { return std::span<const double>(v); }

double proj(const Vec& dy, const Vec& y) {
  return test::dot(std::span<const double>(dy), std::span<const double>(y));
}

double max_abs_diff(std::span<const double> a, std::span<const double> b) {
  BOOST_REQUIRE(a.size() == b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}
double max_abs(std::span<const double> a) {
  double m = 0;
  for (double v : a) m = std::max(m, std::fabs(v));
  return m;
}
bool identical(std::span<const double> a, std::span<const double> b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}
// a ≈ b to within @p rel of the largest |b| (for results that differ only in rounding).
bool close(std::span<const double> a, std::span<const double> b, double rel = 1e-13) {
  return max_abs_diff(a, b) <= rel * std::max(1.0, max_abs(b));
}
Vec plus(const Vec& a, const Vec& b, double scale_b = 1.0) {
  Vec r(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) r[i] = a[i] + scale_b * b[i];
  return r;
}

// Runs gradient checks for one test case and prints the worst relative error at its end.
class Checker {
 public:
  explicit Checker(std::string test) : test_(std::move(test)) {}
  Checker(const Checker&) = delete;
  Checker& operator=(const Checker&) = delete;
  ~Checker() {
    std::cout << "[gradcheck] " << test_ << ": " << count_ << " tensors, worst relative error "
              << worst_ << " (" << worst_name_ << ")";
    if (zero_count_)
      std::cout << "; " << zero_count_ << " zero gradients, worst absolute error " << worst_zero_;
    std::cout << "\n";
  }

  /// Check @p analytic against FD of @p loss w.r.t. @p x; the gradient must not be all zero
  /// unless @p may_be_zero.
  void operator()(const std::string& name, std::span<double> x, std::span<const double> analytic,
                  const std::function<double()>& loss, bool may_be_zero = false) {
    const test::GradCheckResult r = test::check_gradient(name, x, analytic, loss);
    BOOST_TEST_INFO(test_ << " / " << test::to_string(r));
    BOOST_TEST(r.relative_error < kTol);
    if (!may_be_zero) {
      BOOST_TEST_INFO(test_ << " / " << name << ": the analytic gradient is all zero");
      BOOST_TEST(r.analytic_norm > 1e-8);
    }
    ++count_;
    if (r.both_zero) {
      ++zero_count_;
      worst_zero_ = std::max(worst_zero_, r.relative_error);
    } else if (r.relative_error >= worst_) {
      worst_ = r.relative_error;
      worst_name_ = name;
    }
  }

 private:
  std::string test_;
  std::string worst_name_ = "-";
  double worst_ = 0, worst_zero_ = 0;
  int count_ = 0, zero_count_ = 0;
};

// ---------------------------------------------------------------------------------------
// linear_backward

void linear_case(bool with_bias, Checker& check) {
  const index_t n = 5, in = 4, out = 3;
  std::mt19937_64 rng(with_bias ? 101 : 102);
  Vec x = test::random_normal(n * in, rng), w = test::random_normal(out * in, rng, 0.5);
  Vec b = with_bias ? test::random_normal(out, rng) : Vec{};
  const Vec dy = test::random_normal(n * out, rng);
  LinearParams<double> p{cmat(w, out, in), with_bias ? VectorView<const double>(b.data(), out)
                                                     : VectorView<const double>{}};
  Vec y(n * out);
  auto loss = [&] {
    linear_forward(Cpu{}, mat(y, n, out), cmat(x, n, in), p);
    return proj(dy, y);
  };

  Vec dw(out * in, 0.0), db(with_bias ? out : 0, 0.0);
  LinearGrads<double> g{mat(dw, out, in),
                        with_bias ? VectorView<double>(db.data(), out) : VectorView<double>{}};
  Vec dx = test::random_normal(n * in, rng);  // garbage: Overwrite must replace it
  linear_backward(Cpu{}, mat(dx, n, in), GradientMode::Overwrite, &g, cmat(dy, n, out),
                  cmat(x, n, in), p);
  const Vec dw1 = dw, db1 = db;

  check("x", sp(x), csp(dx), loss);
  check("weight", sp(w), csp(dw1), loss);
  if (with_bias) check("bias", sp(b), csp(db1), loss);

  // Accumulate adds to what is there.
  const Vec base = test::random_normal(n * in, rng);
  Vec acc = base;
  linear_backward(Cpu{}, mat(acc, n, in), GradientMode::Accumulate, &g, cmat(dy, n, out),
                  cmat(x, n, in), p);
  BOOST_TEST(close(csp(acc), csp(plus(base, dx))));
  // Ignore leaves d_in untouched (and still accumulates the parameter gradients).
  Vec untouched = base;
  linear_backward(Cpu{}, mat(untouched, n, in), GradientMode::Ignore, &g, cmat(dy, n, out),
                  cmat(x, n, in), p);
  BOOST_TEST(identical(csp(untouched), csp(base)));
  // Three calls: the parameter gradients are three times those of one call.
  Vec three_w(dw1.size()), three_b(db1.size());
  for (std::size_t i = 0; i < dw1.size(); ++i) three_w[i] = 3 * dw1[i];
  for (std::size_t i = 0; i < db1.size(); ++i) three_b[i] = 3 * db1[i];
  BOOST_TEST(close(csp(dw), csp(three_w)));
  BOOST_TEST(close(csp(db), csp(three_b)));
  // A frozen layer (no grads) still gives d_in, and touches nothing else.
  Vec dx_frozen(n * in, 0.0);
  const Vec dw_before = dw;
  linear_backward(Cpu{}, mat(dx_frozen, n, in), GradientMode::Overwrite, nullptr,
                  cmat(dy, n, out), cmat(x, n, in), p);
  // Equal up to the last bit only: in double these tiny products go to Eigen's
  // coefficient-based product, which vectorises (with FMA) or not depending on where each
  // buffer starts, so two buffers at different alignments can differ in rounding. (The fp32
  // product of the backend does not depend on alignment: tests/core/test_gemm.cpp.)
  BOOST_TEST(close(csp(dx_frozen), csp(dx), 1e-15));
  BOOST_TEST(identical(csp(dw), csp(dw_before)));
}

// ---------------------------------------------------------------------------------------
// attention_forward / attention_backward

constexpr index_t kAB = 2, kAT = 5, kAH = 6, kAA = 2;

// Key mask (B*T) with keys 3, 4 of sequence 0 and key 1 of sequence 1 masked by @p fill.
Vec attention_mask(double fill) {
  Vec m(kAB * kAT, 0.0);
  m[3] = m[4] = fill;
  m[kAT + 1] = fill;
  return m;
}

struct AttentionRun {
  Vec ctx, probs;
};

void attention_case(const std::string& label, const Vec& mask, const Dropout* drop,
                    Checker& check, AttentionRun* run_out = nullptr) {
  const index_t n = kAB * kAT;
  std::mt19937_64 rng(2024);
  Vec q = test::random_normal(n * kAH, rng), k = test::random_normal(n * kAH, rng),
      v = test::random_normal(n * kAH, rng);
  const Vec dy = test::random_normal(n * kAH, rng);
  const std::span<const double> key_mask(mask);
  Vec scratch(attention_scratch(kAT)), probs(kAB * kAA * kAT * kAT), ctx(n * kAH), ctx_plain(n * kAH);

  attention_forward(Cpu{}, mat(ctx, n, kAH), probs.data(), cmat(q, n, kAH), cmat(k, n, kAH),
                    cmat(v, n, kAH), key_mask, kAB, kAT, kAA, scratch.data(), drop);
  attention_forward(Cpu{}, mat(ctx_plain, n, kAH), nullptr, cmat(q, n, kAH), cmat(k, n, kAH),
                    cmat(v, n, kAH), key_mask, kAB, kAT, kAA, scratch.data(), drop);
  BOOST_TEST_INFO(label);
  BOOST_TEST(identical(csp(ctx), csp(ctx_plain)));

  // Probabilities: rows sum to 1, masked keys get exactly 0.
  for (index_t b = 0; b < kAB; ++b)
    for (index_t h = 0; h < kAA; ++h)
      for (index_t i = 0; i < kAT; ++i) {
        const double* row = probs.data() + ((b * kAA + h) * kAT + i) * kAT;
        double sum = 0;
        for (index_t j = 0; j < kAT; ++j) {
          sum += row[j];
          if (!mask.empty() && mask[b * kAT + j] != 0.0) {
            BOOST_TEST_INFO(label << ": masked key " << j << " of sequence " << b);
            BOOST_TEST(row[j] == 0.0);
          }
        }
        BOOST_TEST(std::fabs(sum - 1.0) < 1e-13);
      }

  Vec dq = test::random_normal(n * kAH, rng), dk = dq, dv = dq;  // garbage: overwritten
  attention_backward(Cpu{}, mat(dq, n, kAH), mat(dk, n, kAH), mat(dv, n, kAH), cmat(dy, n, kAH),
                     cmat(q, n, kAH), cmat(k, n, kAH), cmat(v, n, kAH), probs.data(), kAB, kAT,
                     kAA, scratch.data(), drop);

  Vec y(n * kAH);
  auto loss = [&] {
    attention_forward(Cpu{}, mat(y, n, kAH), nullptr, cmat(q, n, kAH), cmat(k, n, kAH),
                      cmat(v, n, kAH), key_mask, kAB, kAT, kAA, scratch.data(), drop);
    return proj(dy, y);
  };
  check(label + " q", sp(q), csp(dq), loss);
  check(label + " k", sp(k), csp(dk), loss);
  check(label + " v", sp(v), csp(dv), loss);
  if (run_out) *run_out = AttentionRun{ctx, probs};
}

// ---------------------------------------------------------------------------------------
// Attention block and encoder layer, parameters in a ParameterStore

LayerDims layer_dims() {
  LayerDims d;
  d.batch = 2;
  d.seq = 4;
  d.hidden = 8;
  d.heads = 2;
  d.ffn = 12;
  d.eps = 1e-5;
  return d;
}

// Sequence 0 has its last key masked, sequence 1 its last two.
Vec layer_mask(const LayerDims& d, double fill) {
  Vec m(static_cast<std::size_t>(d.tokens()), 0.0);
  m[d.seq - 1] = fill;
  m[2 * d.seq - 2] = m[2 * d.seq - 1] = fill;
  return m;
}

LayerDropouts active_dropouts() {
  LayerDropouts dr;
  dr.probs = Dropout{0.3f, 1234, dropout_stream(7, 0, 0)};
  dr.attn_output = Dropout{0.3f, 1234, dropout_stream(7, 0, 1)};
  dr.output = Dropout{0.3f, 1234, dropout_stream(7, 0, 2)};
  return dr;
}

void init_parameters(ParameterStore<double>& store, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  test::fill_normal(store.values(), rng, 0.4);
  for (const auto& s : store.table())
    if (s.name.find("LayerNorm.weight") != std::string::npos)
      for (index_t i = 0; i < s.size(); ++i) s.data[i] += 1.0;
}

// What differs between the attention block and the encoder layer.
struct LayerOps {
  // y = layer(x), with the cache (cached) or without.
  std::function<void(MatrixView<double> y, bool cached)> forward;
  // backward from the cache; with_grads: accumulate into the store's gradients.
  std::function<void(MatrixView<double> dx, GradientMode mode, bool with_grads)> backward;
};

// The shared checks: cached == uncached output, FD for x and every parameter tensor, the
// gradient modes of dx, accumulation of the parameter gradients, no workspace growth.
void check_layer(const std::string& label, const LayerDims& d, ParameterStore<double>& store,
                 Vec& x, const Vec& dy, Workspace<double>& ws, std::size_t mark,
                 const LayerOps& ops, Checker& check, Vec* y_out = nullptr) {
  const index_t n = d.tokens(), h = d.hidden;
  const std::size_t capacity = ws.capacity(), allocations = ws.allocations();
  Vec y_cached(n * h), y_plain(n * h);
  ws.rewind(mark);
  ops.forward(mat(y_cached, n, h), true);
  ws.rewind(mark);
  ops.forward(mat(y_plain, n, h), false);
  BOOST_TEST_INFO(label << ": cached and uncached forward outputs differ by "
                        << max_abs_diff(csp(y_cached), csp(y_plain)));
  BOOST_TEST(identical(csp(y_cached), csp(y_plain)));
  if (y_out) *y_out = y_cached;

  std::mt19937_64 rng(77);
  store.zero_grad();
  Vec dx = test::random_normal(n * h, rng);  // garbage: Overwrite must replace it
  ws.rewind(mark);
  ops.backward(mat(dx, n, h), GradientMode::Overwrite, true);
  const Vec analytic(store.gradients().begin(), store.gradients().end());

  Vec y(n * h);
  auto loss = [&] {
    ws.rewind(mark);
    ops.forward(mat(y, n, h), false);
    return proj(dy, y);
  };
  check(label + " x", sp(x), csp(dx), loss);
  for (const auto& s : store.table()) {
    BOOST_REQUIRE(s.grad != nullptr);
    const auto size = static_cast<std::size_t>(s.size());
    const std::span<const double> grad(analytic.data() + s.offset, size);
    // Adding a bias to every key shifts each score row by a constant, which softmax ignores:
    // that gradient is exactly zero, and the kernels must give zero up to rounding.
    const bool zero = s.name.find("key.bias") != std::string::npos;
    if (zero) {
      BOOST_TEST_INFO(label << " " << s.name << ": " << max_abs(grad));
      BOOST_TEST(max_abs(grad) < 1e-13);
    }
    check(label + " " + s.name, std::span<double>(s.data, size), grad, loss, zero);
  }

  // dx modes: Accumulate adds to the content, Ignore leaves it; parameter gradients
  // accumulate over the three calls; without grads nothing in the store moves.
  const Vec base = test::random_normal(n * h, rng);
  Vec acc = base, untouched = base, frozen(n * h, 0.0);
  ws.rewind(mark);
  ops.backward(mat(acc, n, h), GradientMode::Accumulate, true);
  ws.rewind(mark);
  ops.backward(mat(untouched, n, h), GradientMode::Ignore, true);
  BOOST_TEST_INFO(label);
  BOOST_TEST(close(csp(acc), csp(plus(base, dx)), 1e-12));
  BOOST_TEST_INFO(label);
  BOOST_TEST(identical(csp(untouched), csp(base)));
  Vec three(analytic.size());
  for (std::size_t i = 0; i < analytic.size(); ++i) three[i] = 3 * analytic[i];
  const Vec after(store.gradients().begin(), store.gradients().end());
  BOOST_TEST_INFO(label);
  BOOST_TEST(close(csp(after), csp(three), 1e-12));
  ws.rewind(mark);
  ops.backward(mat(frozen, n, h), GradientMode::Overwrite, false);
  BOOST_TEST_INFO(label);
  BOOST_TEST(identical(csp(frozen), csp(dx)));
  BOOST_TEST(identical(store.gradients(), csp(after)));

  BOOST_TEST(ws.capacity() == capacity);
  BOOST_TEST(ws.allocations() == allocations);
}

struct LayerVariant {
  std::string label;
  double mask_fill;      // 0: no mask
  int dropouts;          // 0: nullptr, 1: LayerDropouts all inactive, 2: all active
};

const std::vector<LayerVariant>& layer_variants() {
  static const std::vector<LayerVariant> v{
      {"plain", 0.0, 0},
      {"mask-1e4/dropouts-inactive", -10000.0, 1},
      {"mask-lowest", std::numeric_limits<double>::lowest(), 0},
      {"dropout", 0.0, 2},
      {"mask-1e4/dropout", -10000.0, 2},
      {"mask-lowest/dropout", std::numeric_limits<double>::lowest(), 2},
  };
  return v;
}

// A block that takes a padding mask and dropouts (attention, encoder layer), in every
// LayerVariant: gradients by finite differences (check_layer), and active dropout changes
// the output. forward(y, cache or nullptr, x, mask, dropouts, ws) and backward(dx, mode,
// with_grads, dy, cache, dropouts, ws) call the block; @p scratch is its largest scratch.
template <class Cache, class Forward, class Backward>
void check_layer_variants(Checker& check, const LayerDims& d, ParameterStore<double>& store, std::size_t scratch,
                          std::uint64_t seed, Forward forward, Backward backward) {
  const index_t n = d.tokens(), h = d.hidden;
  Workspace<double> ws;
  ws.reserve(Cache::elements(d) + scratch);
  Cache cache;
  cache.bind(ws, d);
  const std::size_t mark = ws.used();
  BOOST_TEST(mark == Cache::elements(d));

  std::mt19937_64 rng(seed);
  Vec x = test::random_normal(n * h, rng);
  const Vec dy = test::random_normal(n * h, rng);
  const LayerDropouts inactive{}, active = active_dropouts();
  Vec y_plain;
  for (const LayerVariant& var : layer_variants()) {
    const Vec mask = var.mask_fill != 0.0 ? layer_mask(d, var.mask_fill) : Vec{};
    const LayerDropouts* drop = var.dropouts == 0 ? nullptr : var.dropouts == 1 ? &inactive : &active;
    LayerOps ops;
    ops.forward = [&](MatrixView<double> y, bool cached) {
      forward(y, cached ? &cache : nullptr, cmat(x, n, h), std::span<const double>(mask), drop, ws);
    };
    ops.backward = [&](MatrixView<double> dx, GradientMode mode, bool with_grads) {
      backward(dx, mode, with_grads, cmat(dy, n, h), cache, drop, ws);
    };
    Vec y;
    check_layer(var.label, d, store, x, dy, ws, mark, ops, check, &y);
    if (var.label == "plain") y_plain = y;
    if (var.dropouts == 2 && var.mask_fill == 0.0) {
      BOOST_TEST_INFO(var.label << ": dropout should change the output");
      BOOST_TEST(max_abs_diff(csp(y), csp(y_plain)) > 1e-3);
    }
  }
}

}  // namespace

// =======================================================================================

BOOST_AUTO_TEST_CASE(linear_backward_with_bias) {
  Checker check("linear_backward_with_bias");
  linear_case(true, check);
}

BOOST_AUTO_TEST_CASE(linear_backward_without_bias) {
  Checker check("linear_backward_without_bias");
  linear_case(false, check);
}

BOOST_AUTO_TEST_CASE(linear_concat) {
  Checker check("linear_concat");
  const index_t n = 4, out = 5;
  const index_t widths[3] = {2, 3, 4};
  const index_t in = 9;
  std::mt19937_64 rng(303);
  std::vector<Vec> xs;
  for (index_t w : widths) xs.push_back(test::random_normal(n * w, rng));
  Vec w = test::random_normal(out * in, rng, 0.5), b = test::random_normal(out, rng);
  const Vec dy = test::random_normal(n * out, rng);
  LinearParams<double> p{cmat(w, out, in), VectorView<const double>(b.data(), out)};
  auto inputs = [&] {
    std::vector<MatrixView<const double>> v;
    for (int k = 0; k < 3; ++k) v.push_back(cmat(xs[k], n, widths[k]));
    return v;
  };
  Vec y(n * out);
  auto loss = [&] {
    const auto ins = inputs();
    linear_concat_forward(Cpu{}, mat(y, n, out), std::span<const MatrixView<const double>>(ins),
                          p);
    return proj(dy, y);
  };

  // The forward pass equals linear_forward on the explicit concatenation.
  loss();
  Vec cat(n * in);
  for (index_t r = 0; r < n; ++r) {
    index_t col = 0;
    for (int k = 0; k < 3; ++k)
      for (index_t j = 0; j < widths[k]; ++j) cat[r * in + col++] = xs[k][r * widths[k] + j];
  }
  Vec y_ref(n * out);
  linear_forward(Cpu{}, mat(y_ref, n, out), cmat(cat, n, in), p);
  BOOST_TEST(close(csp(y), csp(y_ref)));

  Vec dw(out * in, 0.0), db(out, 0.0);
  LinearGrads<double> g{mat(dw, out, in), VectorView<double>(db.data(), out)};
  std::vector<Vec> dxs;
  for (index_t wk : widths) dxs.push_back(test::random_normal(n * wk, rng));  // overwritten
  {
    std::vector<MatrixView<double>> d_in;
    for (int k = 0; k < 3; ++k) d_in.push_back(mat(dxs[k], n, widths[k]));
    const auto ins = inputs();
    linear_concat_backward(Cpu{}, std::span<const MatrixView<double>>(d_in),
                           GradientMode::Overwrite, &g, cmat(dy, n, out),
                           std::span<const MatrixView<const double>>(ins), p);
  }
  const Vec dw1 = dw, db1 = db;
  for (int k = 0; k < 3; ++k)
    check("input " + std::to_string(k), sp(xs[k]), csp(dxs[k]), loss);
  check("weight", sp(w), csp(dw1), loss);
  check("bias", sp(b), csp(db1), loss);

  // Accumulate into inputs 0 and 2; an empty view skips input 1; grads accumulate.
  std::vector<Vec> base, acc;
  for (index_t wk : widths) base.push_back(test::random_normal(n * wk, rng));
  acc = base;
  {
    std::vector<MatrixView<double>> d_in{mat(acc[0], n, widths[0]), MatrixView<double>{},
                                         mat(acc[2], n, widths[2])};
    const auto ins = inputs();
    linear_concat_backward(Cpu{}, std::span<const MatrixView<double>>(d_in),
                           GradientMode::Accumulate, &g, cmat(dy, n, out),
                           std::span<const MatrixView<const double>>(ins), p);
  }
  BOOST_TEST(close(csp(acc[0]), csp(plus(base[0], dxs[0]))));
  BOOST_TEST(identical(csp(acc[1]), csp(base[1])));
  BOOST_TEST(close(csp(acc[2]), csp(plus(base[2], dxs[2]))));
  BOOST_TEST(close(csp(dw), csp(plus(dw1, dw1))));
  BOOST_TEST(close(csp(db), csp(plus(db1, db1))));
}

BOOST_AUTO_TEST_CASE(add_layernorm) {
  Checker check("add_layernorm");
  const index_t n = 4, h = 6;
  const double eps = 1e-5;
  std::mt19937_64 rng(404);
  Vec a = test::random_normal(n * h, rng), b = test::random_normal(n * h, rng, 0.7);
  for (index_t j = 0; j < h; ++j) a[3 * h + j] += 20.0;  // one row far from zero mean
  Vec gamma = test::random_normal(h, rng, 0.2, 1.0), beta = test::random_normal(h, rng, 0.2);
  const Vec dy = test::random_normal(n * h, rng);
  LayerNormParams<double> p{VectorView<const double>(gamma.data(), h),
                            VectorView<const double>(beta.data(), h)};
  Vec xhat(n * h), rstd(n);
  LayerNormCache<double> cache{mat(xhat, n, h), VectorView<double>(rstd.data(), n)};

  Vec y(n * h);
  add_layernorm_forward(Cpu{}, mat(y, n, h), &cache, cmat(a, n, h), cmat(b, n, h), p, eps);

  // Same output: without the cache, from the explicit sum through layernorm_forward (with and
  // without cache), in place over a, and with b given as an empty view.
  Vec s = plus(a, b);
  Vec y1(n * h), y2(n * h), xhat2(n * h), rstd2(n);
  add_layernorm_forward(Cpu{}, mat(y1, n, h), nullptr, cmat(a, n, h), cmat(b, n, h), p, eps);
  BOOST_TEST(identical(csp(y1), csp(y)));
  layernorm_forward(Cpu{}, mat(y1, n, h), nullptr, cmat(s, n, h), p, eps);
  BOOST_TEST(identical(csp(y1), csp(y)));
  LayerNormCache<double> cache2{mat(xhat2, n, h), VectorView<double>(rstd2.data(), n)};
  layernorm_forward(Cpu{}, mat(y2, n, h), &cache2, cmat(s, n, h), p, eps);
  BOOST_TEST(identical(csp(y2), csp(y)));
  BOOST_TEST(identical(csp(xhat2), csp(xhat)));
  BOOST_TEST(identical(csp(rstd2), csp(rstd)));
  Vec inplace = a;
  add_layernorm_forward(Cpu{}, mat(inplace, n, h), nullptr, cmat(inplace, n, h), cmat(b, n, h),
                        p, eps);
  BOOST_TEST(identical(csp(inplace), csp(y)));
  add_layernorm_forward(Cpu{}, mat(y1, n, h), nullptr, cmat(s, n, h), MatrixView<const double>{},
                        p, eps);
  BOOST_TEST(identical(csp(y1), csp(y)));

  Vec dgamma(h, 0.0), dbeta(h, 0.0);
  LayerNormGrads<double> g{VectorView<double>(dgamma.data(), h),
                           VectorView<double>(dbeta.data(), h)};
  Vec ds = test::random_normal(n * h, rng);  // overwritten
  layernorm_backward(Cpu{}, mat(ds, n, h), GradientMode::Overwrite, &g, cmat(dy, n, h), cache, p);
  const Vec dgamma1 = dgamma, dbeta1 = dbeta;

  Vec yf(n * h);
  auto loss = [&] {
    add_layernorm_forward(Cpu{}, mat(yf, n, h), nullptr, cmat(a, n, h), cmat(b, n, h), p, eps);
    return proj(dy, yf);
  };
  check("a", sp(a), csp(ds), loss);
  check("b", sp(b), csp(ds), loss);
  check("gamma", sp(gamma), csp(dgamma1), loss);
  check("beta", sp(beta), csp(dbeta1), loss);

  // Modes: Accumulate adds, Ignore leaves d_in, Overwrite may alias d_out; grads accumulate.
  const Vec base = test::random_normal(n * h, rng);
  Vec acc = base, untouched = base, alias = dy;
  layernorm_backward(Cpu{}, mat(acc, n, h), GradientMode::Accumulate, &g, cmat(dy, n, h), cache,
                     p);
  layernorm_backward(Cpu{}, mat(untouched, n, h), GradientMode::Ignore, &g, cmat(dy, n, h), cache,
                     p);
  layernorm_backward(Cpu{}, mat(alias, n, h), GradientMode::Overwrite, nullptr,
                     cmat(alias, n, h), cache, p);
  BOOST_TEST(close(csp(acc), csp(plus(base, ds))));
  BOOST_TEST(identical(csp(untouched), csp(base)));
  BOOST_TEST(identical(csp(alias), csp(ds)));
  BOOST_TEST(close(csp(dgamma), csp(plus(plus(dgamma1, dgamma1), dgamma1))));
  BOOST_TEST(close(csp(dbeta), csp(plus(plus(dbeta1, dbeta1), dbeta1))));
}

BOOST_AUTO_TEST_CASE(gelu) {
  Checker check("gelu");
  std::mt19937_64 rng(505);
  auto run = [&](const std::string& label, Vec x) {
    const Vec dy = test::random_normal(x.size(), rng);
    Vec d = dy;
    gelu_backward_inplace(Cpu{}, sp(d), csp(x));
    Vec y(x.size());
    auto loss = [&] {
      std::copy(x.begin(), x.end(), y.begin());
      gelu_inplace(Cpu{}, sp(y));
      return proj(dy, y);
    };
    check(label, sp(x), csp(d), loss);
  };
  run("x ~ N(0, 2)", test::random_normal(64, rng, 2.0));
  run("x small", {-1e-3, -1e-8, 0.0, 1e-8, 1e-3});
  run("x large |x|", {-40.0, -10.0, -6.0, -3.0, 3.0, 6.0, 10.0, 40.0});

  // The tails: GELU(x) = x and GELU'(x) = 1 far right, 0 and 0 far left.
  Vec x{-40.0, 40.0};
  Vec d{1.0, 1.0};
  gelu_backward_inplace(Cpu{}, sp(d), csp(x));
  gelu_inplace(Cpu{}, sp(x));
  BOOST_TEST(x[0] == 0.0);
  BOOST_TEST(x[1] == 40.0);
  BOOST_TEST(d[0] == 0.0);
  BOOST_TEST(d[1] == 1.0);
}

BOOST_AUTO_TEST_CASE(softmax_rows_against_std_exp) {
  // Eigen's vectorised exp against std::exp in double, in float and double, with rows of a
  // width that is not a multiple of the vector length, large values and a masked key.
  std::mt19937_64 rng(506);
  const index_t rows = 5, cols = 19;
  const Vec x = test::random_normal(static_cast<std::size_t>(rows * cols), rng, 30.0);
  auto reference = [&](index_t i, index_t j, double masked_value) {
    double mx = -std::numeric_limits<double>::infinity(), sum = 0;
    auto val = [&](index_t jj) { return jj == 3 ? masked_value : x[static_cast<std::size_t>(i * cols + jj)]; };
    for (index_t jj = 0; jj < cols; ++jj) mx = std::max(mx, val(jj));
    for (index_t jj = 0; jj < cols; ++jj) sum += std::exp(val(jj) - mx);
    return std::exp(val(j) - mx) / sum;
  };
  Vec xd = x;
  std::vector<float> xf(x.begin(), x.end());
  for (index_t i = 0; i < rows; ++i) {
    xd[static_cast<std::size_t>(i * cols + 3)] = std::numeric_limits<double>::lowest();
    xf[static_cast<std::size_t>(i * cols + 3)] = std::numeric_limits<float>::lowest();
  }
  softmax_rows(MatrixView<double>(xd.data(), rows, cols));
  softmax_rows(MatrixView<float>(xf.data(), rows, cols));
  double worst_d = 0, worst_f = 0;
  for (index_t i = 0; i < rows; ++i)
    for (index_t j = 0; j < cols; ++j) {
      const double want = reference(i, j, -std::numeric_limits<double>::infinity());
      const auto k = static_cast<std::size_t>(i * cols + j);
      worst_d = std::max(worst_d, std::abs(xd[k] - want));
      worst_f = std::max(worst_f, std::abs(static_cast<double>(xf[k]) - want));
      if (j == 3) {
        BOOST_TEST(xd[k] == 0.0);
        BOOST_TEST(xf[k] == 0.0f);
      }
    }
  BOOST_TEST_MESSAGE("softmax_rows: max |error| " << worst_d << " (double), " << worst_f << " (float)");
  BOOST_TEST(worst_d < 1e-15);
  BOOST_TEST(worst_f < 1e-6);
}

BOOST_AUTO_TEST_CASE(attention_unmasked) {
  Checker check("attention_unmasked");
  attention_case("no mask", Vec{}, nullptr, check);
  const Dropout inactive{0.0f, 99, 1};
  attention_case("no mask, inactive dropout", Vec{}, &inactive, check);
}

BOOST_AUTO_TEST_CASE(attention_masked) {
  Checker check("attention_masked");
  AttentionRun r1, r2;
  attention_case("mask -10000", attention_mask(-10000.0), nullptr, check, &r1);
  attention_case("mask lowest", attention_mask(std::numeric_limits<double>::lowest()), nullptr,
                 check, &r2);
  // exp underflows to exactly 0 for both fills: the results are the same.
  BOOST_TEST(identical(csp(r1.ctx), csp(r2.ctx)));
  BOOST_TEST(identical(csp(r1.probs), csp(r2.probs)));
}

BOOST_AUTO_TEST_CASE(attention_dropout) {
  Checker check("attention_dropout");
  const Dropout drop{0.3f, 4242, dropout_stream(3, 1, 5)};
  AttentionRun plain, dropped;
  attention_case("no mask", Vec{}, nullptr, check, &plain);
  attention_case("dropout", Vec{}, &drop, check, &dropped);
  attention_case("dropout, mask -10000", attention_mask(-10000.0), &drop, check);
  attention_case("dropout, mask lowest", attention_mask(std::numeric_limits<double>::lowest()),
                 &drop, check);
  // probs are kept before dropout; the output does change.
  BOOST_TEST(identical(csp(plain.probs), csp(dropped.probs)));
  BOOST_TEST(max_abs_diff(csp(plain.ctx), csp(dropped.ctx)) > 1e-3);
}

// Without kept probabilities the scores live in per-thread scratch. A length whose rows are
// not a whole number of vectors (23) in float, where Eigen's exp and sums use vector and
// scalar steps: the output must not depend on the thread count, nor on whether the
// probabilities are kept.
BOOST_AUTO_TEST_CASE(attention_thread_count_independent) {
  constexpr index_t B = 4, T = 23, A = 3, H = 24, n = B * T;
  std::mt19937_64 rng(77);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> q(n * H), k(n * H), v(n * H), mask(n, 0.0f);
  for (auto* x : {&q, &k, &v})
    for (float& e : *x) e = normal(rng);
  for (index_t b = 0; b < B; ++b)
    for (index_t t = T - 2 * b; t < T; ++t) mask[static_cast<std::size_t>(b * T + t)] = std::numeric_limits<float>::lowest();
  const int threads = Eigen::nbThreads();
  auto run = [&](int nt, bool keep_probs) {
    Eigen::setNbThreads(nt);
    AlignedVector<float> scratch(attention_scratch(T)), probs(static_cast<std::size_t>(B * A * T * T));
    std::vector<float> ctx(n * H);
    attention_forward(Cpu{}, MatrixView<float>(ctx.data(), n, H), keep_probs ? probs.data() : nullptr,
                      MatrixView<const float>(q.data(), n, H), MatrixView<const float>(k.data(), n, H),
                      MatrixView<const float>(v.data(), n, H), std::span<const float>(mask), B, T, A,
                      scratch.data());
    return ctx;
  };
  const std::vector<float> one = run(1, false), two = run(std::max(2, threads), false),
                           kept = run(std::max(2, threads), true);
  Eigen::setNbThreads(threads);
  BOOST_TEST((one == two));
  BOOST_TEST((one == kept));
}

// The float GELU kernels use Eigen's vector erf and exp. Every element must go through the
// vector path whatever its address and whichever thread computes it: the same values at
// another offset, and on one or two threads, give bit-identical results.
BOOST_AUTO_TEST_CASE(gelu_thread_count_and_address_independent) {
  constexpr index_t rows = 9, width = 4133;  // width: not a whole number of vectors
  std::mt19937_64 rng(78);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> pre(rows * width), grad(rows * width), bias(width);
  for (auto* x : {&pre, &grad, &bias})
    for (float& e : *x) e = normal(rng);
  const int threads = Eigen::nbThreads();
  struct Out {
    std::vector<float> act, act_flat, d, d_flat, bias_grad;
  };
  auto run = [&](int nt, index_t offset) {
    Eigen::setNbThreads(nt);
    const std::size_t n = static_cast<std::size_t>(rows * width), o = static_cast<std::size_t>(offset);
    std::vector<float> p_buf(n + o), a_buf(n + o), d_buf(n + o), bg(width, 0.0f);
    std::copy(pre.begin(), pre.end(), p_buf.begin() + offset);
    bias_gelu_forward(Cpu{}, MatrixView<float>(p_buf.data() + o, rows, width), MatrixView<float>(a_buf.data() + o, rows, width),
                      bias.data());
    Out out;
    out.act.assign(a_buf.begin() + offset, a_buf.end());
    std::copy(p_buf.begin() + offset, p_buf.end(), a_buf.begin() + offset);  // pre + bias
    gelu_inplace(Cpu{}, std::span<float>(a_buf.data() + o, n));
    out.act_flat.assign(a_buf.begin() + offset, a_buf.end());
    std::copy(grad.begin(), grad.end(), d_buf.begin() + offset);
    bias_gelu_backward(Cpu{}, MatrixView<float>(d_buf.data() + o, rows, width),
                       MatrixView<const float>(p_buf.data() + o, rows, width), bg.data());
    out.d.assign(d_buf.begin() + offset, d_buf.end());
    out.bias_grad = bg;
    std::copy(grad.begin(), grad.end(), d_buf.begin() + offset);
    gelu_backward_inplace(Cpu{}, std::span<float>(d_buf.data() + o, n), std::span<const float>(p_buf.data() + o, n));
    out.d_flat.assign(d_buf.begin() + offset, d_buf.end());
    return out;
  };
  const Out base = run(1, 0);
  for (const auto& [nt, offset] : {std::pair{std::max(2, threads), index_t{0}}, std::pair{1, index_t{3}},
                                    std::pair{std::max(2, threads), index_t{5}}}) {
    const Out r = run(nt, offset);
    BOOST_TEST_CONTEXT("threads " << nt << ", offset " << offset) {
      BOOST_TEST((r.act == base.act));
      BOOST_TEST((r.act_flat == base.act_flat));
      BOOST_TEST((r.d == base.d));
      BOOST_TEST((r.d_flat == base.d_flat));
      BOOST_TEST((r.bias_grad == base.bias_grad));
    }
  }
  Eigen::setNbThreads(threads);
  // The flat and the fused kernels compute the same GELU (the bias is already in pre).
  BOOST_TEST((base.act == base.act_flat));
}

BOOST_AUTO_TEST_CASE(attention_block) {
  Checker check("attention_block");
  const LayerDims d = layer_dims();
  const index_t h = d.hidden;
  ParameterStore<double> store;
  const auto pg = store.build([&](ParamLayout<double>& layout) {
    AttentionGrads<double> g;
    AttentionParams<double> p = layout.attention("attention", h, &g);
    return std::pair{p, g};
  });
  const AttentionParams<double>& p = pg.first;
  const AttentionGrads<double>& g = pg.second;
  index_t declared = 0;
  for (const auto& slot : store.table()) {
    declared += slot.size();
    BOOST_TEST(slot.offset % ParameterStore<double>::kAlign == 0, slot.name);  // each tensor aligned
  }
  BOOST_TEST(declared == 4 * (h * h + h) + 2 * h);
  init_parameters(store, 606);
  check_layer_variants<AttentionCache<double>>(
      check, d, store,
      std::max({attention_block_forward_scratch<double>(d, true), attention_block_forward_scratch<double>(d, false),
                attention_block_backward_scratch<double>(d)}),
      607,
      [&](MatrixView<double> y, AttentionCache<double>* c, auto x, auto mask, const LayerDropouts* drop, auto& ws) {
        attention_block_forward(Cpu{}, y, c, x, mask, p, d, drop, ws);
      },
      [&](MatrixView<double> dx, GradientMode mode, bool with_grads, auto dy, const AttentionCache<double>& c,
          const LayerDropouts* drop, auto& ws) {
        attention_block_backward(Cpu{}, dx, mode, with_grads ? &g : nullptr, dy, c, p, d, drop, ws);
      });
}

BOOST_AUTO_TEST_CASE(encoder_layer) {
  Checker check("encoder_layer");
  const LayerDims d = layer_dims();
  const index_t h = d.hidden, f = d.ffn;
  ParameterStore<double> store;
  const auto pg = store.build([&](ParamLayout<double>& layout) {
    EncoderLayerGrads<double> g;
    EncoderLayerParams<double> p = layout.encoder_layer("encoder.layer.0.", h, f, &g);
    return std::pair{p, g};
  });
  const EncoderLayerParams<double>& p = pg.first;
  const EncoderLayerGrads<double>& g = pg.second;
  BOOST_TEST(store.table().size() == 16u);
  BOOST_TEST(store.find("encoder.layer.0.intermediate.dense.weight") != nullptr);
  init_parameters(store, 808);
  check_layer_variants<EncoderLayerCache<double>>(
      check, d, store,
      std::max({encoder_layer_forward_scratch<double>(d, true), encoder_layer_forward_scratch<double>(d, false),
                encoder_layer_backward_scratch<double>(d)}),
      809,
      [&](MatrixView<double> y, EncoderLayerCache<double>* c, auto x, auto mask, const LayerDropouts* drop, auto& ws) {
        encoder_layer_forward(Cpu{}, y, c, x, mask, p, d, drop, ws);
      },
      [&](MatrixView<double> dx, GradientMode mode, bool with_grads, auto dy, const EncoderLayerCache<double>& c,
          const LayerDropouts* drop, auto& ws) {
        encoder_layer_backward(Cpu{}, dx, mode, with_grads ? &g : nullptr, dy, c, p, d, drop, ws);
      });
}

BOOST_AUTO_TEST_CASE(weighted_rows) {
  Checker check("weighted_rows");
  const index_t batch = 3, seq = 4, h = 5;
  std::mt19937_64 rng(909);
  Vec weights = test::random_normal(batch * seq, rng);  // not one-hot
  Vec features = test::random_normal(batch * seq * h, rng);
  const Vec dy = test::random_normal(batch * h, rng);
  Vec y(batch * h);
  auto loss = [&] {
    weighted_rows_forward(Cpu{}, mat(y, batch, h), cmat(weights, batch, seq),
                          cmat(features, batch * seq, h));
    return proj(dy, y);
  };
  Vec dfeat(batch * seq * h, 0.0);
  weighted_rows_backward(Cpu{}, mat(dfeat, batch * seq, h), cmat(dy, batch, h),
                         cmat(weights, batch, seq));
  check("features", sp(features), csp(dfeat), loss);
  // The kernel has no weight gradient; d weights[b, t] = features[b, t] · dy[b] checks the
  // forward definition.
  Vec dweights(batch * seq, 0.0);
  for (index_t b = 0; b < batch; ++b)
    for (index_t t = 0; t < seq; ++t)
      for (index_t j = 0; j < h; ++j)
        dweights[b * seq + t] += features[(b * seq + t) * h + j] * dy[b * h + j];
  check("weights", sp(weights), csp(dweights), loss);
  // The feature gradient accumulates.
  const Vec base = test::random_normal(batch * seq * h, rng);
  Vec acc = base;
  weighted_rows_backward(Cpu{}, mat(acc, batch * seq, h), cmat(dy, batch, h),
                         cmat(weights, batch, seq));
  BOOST_TEST(close(csp(acc), csp(plus(base, dfeat))));
}

namespace {

// Mean cross-entropy computed directly (log-sum-exp over the unmasked columns).
double reference_cross_entropy(const Vec& logits, index_t n, index_t c,
                               const std::vector<std::int64_t>& labels,
                               const std::vector<std::int64_t>& row_weight,
                               const std::vector<std::int64_t>& column_mask) {
  double total = 0;
  int count = 0;
  for (index_t r = 0; r < n; ++r) {
    if ((!row_weight.empty() && row_weight[r] == 0) || labels[r] == -100) continue;
    double mx = -std::numeric_limits<double>::infinity();
    for (index_t j = 0; j < c; ++j)
      if (column_mask.empty() || column_mask[r * c + j]) mx = std::max(mx, logits[r * c + j]);
    double sum = 0;
    for (index_t j = 0; j < c; ++j)
      if (column_mask.empty() || column_mask[r * c + j]) sum += std::exp(logits[r * c + j] - mx);
    total += mx + std::log(sum) - logits[r * c + labels[r]];
    ++count;
  }
  return count ? total / count : 0.0;
}

void cross_entropy_case(const std::string& label, const std::vector<std::int64_t>& labels,
                        const std::vector<std::int64_t>& row_weight,
                        const std::vector<std::int64_t>& column_mask, Checker& check) {
  const index_t n = static_cast<index_t>(labels.size()), c = 5;
  std::mt19937_64 rng(1001);
  Vec logits = test::random_normal(n * c, rng, 2.0);
  Vec d = test::random_normal(n * c, rng);  // overwritten
  const double value = cross_entropy(Cpu{}, mat(d, n, c), cmat(logits, n, c), labels, row_weight,
                                     column_mask);
  const double ref = reference_cross_entropy(logits, n, c, labels, row_weight, column_mask);
  BOOST_TEST_INFO(label << ": loss " << value << " vs " << ref);
  BOOST_TEST(std::fabs(value - ref) <= 1e-13 * std::max(1.0, std::fabs(ref)));
  // Rows that do not count and masked columns get exactly 0.
  for (index_t r = 0; r < n; ++r)
    for (index_t j = 0; j < c; ++j) {
      const bool row_off = (!row_weight.empty() && row_weight[r] == 0) || labels[r] == -100;
      const bool col_off = !column_mask.empty() && column_mask[r * c + j] == 0;
      if (row_off || col_off) {
        BOOST_TEST_INFO(label << ": row " << r << " column " << j);
        BOOST_TEST(d[r * c + j] == 0.0);
      }
    }
  auto loss = [&] {
    return cross_entropy(Cpu{}, MatrixView<double>{}, cmat(logits, n, c), labels, row_weight,
                         column_mask);
  };
  check(label, sp(logits), csp(d), loss);
}

}  // namespace

BOOST_AUTO_TEST_CASE(cross_entropy_loss) {
  Checker check("cross_entropy");
  const std::vector<std::int64_t> labels{0, 3, 4, 1, 2, 3};
  const std::vector<std::int64_t> none;
  cross_entropy_case("plain", labels, none, none, check);
  cross_entropy_case("row_weight", labels, {1, 0, 1, 1, 0, 1}, none, check);
  cross_entropy_case("ignore -100", {0, -100, 4, 1, -100, 3}, none, none, check);
  std::vector<std::int64_t> cmask(6 * 5, 1);
  cmask[0 * 5 + 1] = cmask[0 * 5 + 4] = 0;  // row 0 (label 0)
  cmask[1 * 5 + 0] = 0;                     // row 1 (label 3)
  cmask[2 * 5 + 0] = cmask[2 * 5 + 1] = cmask[2 * 5 + 2] = 0;  // row 2 (label 4)
  cmask[5 * 5 + 4] = 0;                     // row 5 (label 3)
  cross_entropy_case("column_mask", labels, none, cmask, check);
  cross_entropy_case("all three", {0, -100, 4, 1, 2, 3}, {1, 1, 1, 0, 1, 1}, cmask, check);

  // Nothing counts: loss 0, gradient 0.
  Vec logits(2 * 5, 0.5), d(2 * 5, 7.0);
  const std::vector<std::int64_t> ignored{-100, -100};
  BOOST_TEST(cross_entropy(Cpu{}, mat(d, 2, 5), cmat(logits, 2, 5), ignored) == 0.0);
  BOOST_TEST(max_abs(csp(d)) == 0.0);

  // A counted label outside [0, C), or on a masked column, throws; an uncounted one does not.
  auto ce = [&](std::vector<std::int64_t> lab, std::vector<std::int64_t> rw,
                std::vector<std::int64_t> cm) {
    return cross_entropy(Cpu{}, mat(d, 2, 5), cmat(logits, 2, 5), lab, rw, cm);
  };
  BOOST_CHECK_THROW(ce({0, 5}, {}, {}), kadapter::Error);
  BOOST_CHECK_THROW(ce({-1, 0}, {}, {}), kadapter::Error);
  BOOST_CHECK_THROW(ce({0, -7}, {}, {}), kadapter::Error);
  BOOST_CHECK_THROW(ce({0, 2}, {}, {1, 1, 1, 1, 1, 1, 1, 0, 1, 1}), kadapter::Error);
  BOOST_CHECK_NO_THROW(ce({0, 5}, {1, 0}, {}));
  BOOST_CHECK_NO_THROW(ce({0, 2}, {}, {1, 1, 1, 1, 1, 1, 1, 1, 1, 0}));
}

BOOST_AUTO_TEST_CASE(bce_with_logits_loss) {
  Checker check("bce_with_logits");
  const index_t n = 4, c = 4;
  std::mt19937_64 rng(1101);
  Vec logits = test::random_normal(n * c, rng, 2.0);
  const double large[] = {40.0, -40.0, 40.0, -40.0, 20.0, -20.0};
  for (int i = 0; i < 6; ++i) logits[i] = large[i];
  Vec targets(n * c);
  test::fill_uniform(sp(targets), rng, 0.0, 1.0);
  targets[0] = 1.0;  // x = 40, y = 1: loss ~ 0
  targets[1] = 1.0;  // x = -40, y = 1: loss ~ 40
  targets[2] = 0.0;  // x = 40, y = 0: loss ~ 40
  targets[3] = 0.0;  // x = -40, y = 0: loss ~ 0
  targets[6] = 1.0;
  targets[7] = 0.0;

  // Direct formula: -(y log σ(x) + (1 - y) log σ(-x)), log σ written without cancellation.
  auto log_sigmoid = [](double x) {
    return x < 0 ? x - std::log1p(std::exp(x)) : -std::log1p(std::exp(-x));
  };
  double ref = 0;
  Vec d_ref(n * c);
  for (index_t i = 0; i < n * c; ++i) {
    const double x = logits[i], y = targets[i];
    ref -= y * log_sigmoid(x) + (1 - y) * log_sigmoid(-x);
    d_ref[i] = (std::exp(log_sigmoid(x)) - y) / static_cast<double>(n * c);
  }
  ref /= static_cast<double>(n * c);

  Vec d = test::random_normal(n * c, rng);  // overwritten
  const double value = bce_with_logits(Cpu{}, mat(d, n, c), cmat(logits, n, c), cmat(targets, n, c));
  BOOST_TEST_INFO("loss " << value << " vs " << ref);
  BOOST_TEST(std::fabs(value - ref) <= 1e-14 * std::fabs(ref));
  BOOST_TEST(std::isfinite(value));
  BOOST_TEST(max_abs_diff(csp(d), csp(d_ref)) <= 1e-16);
  auto loss = [&] {
    return bce_with_logits(Cpu{}, MatrixView<double>{}, cmat(logits, n, c), cmat(targets, n, c));
  };
  check("logits", sp(logits), csp(d), loss);
}

BOOST_AUTO_TEST_CASE(dropout) {
  const index_t seq = 10, width = 100, rows = 1000;
  const std::size_t count = static_cast<std::size_t>(rows * width);
  const Dropout drop{0.3f, 2718, dropout_stream(11, 0, 3)};
  auto view = [&](Vec& v) { return MatrixView<double>(v.data(), rows, width); };
  Vec x(count, 1.0);
  dropout_inplace(Cpu{}, view(x), drop, seq);
  const double scale = 1.0 / (1.0 - static_cast<double>(drop.p));
  std::size_t dropped = 0, bad = 0;
  for (double v : x) {
    if (v == 0.0)
      ++dropped;
    else if (v != scale)
      ++bad;
  }
  const double fraction = static_cast<double>(dropped) / static_cast<double>(count);
  std::cout << "[dropout] fraction dropped " << fraction << " (p = 0.3)\n";
  BOOST_TEST(std::fabs(fraction - 0.3) < 0.01);  // ~7 standard deviations
  BOOST_TEST(bad == 0u);
  BOOST_TEST(std::fabs(scale - 1.0 / 0.7) < 1e-7);

  // Same (seed, stream): the same mask; another stream or seed: a different one.
  Vec again(count, 1.0), other_stream(count, 1.0), other_seed(count, 1.0);
  dropout_inplace(Cpu{}, view(again), drop, seq);
  dropout_inplace(Cpu{}, view(other_stream), Dropout{drop.p, drop.seed, dropout_stream(11, 0, 4)}, seq);
  dropout_inplace(Cpu{}, view(other_seed), Dropout{drop.p, drop.seed + 1, drop.stream}, seq);
  BOOST_TEST(identical(csp(again), csp(x)));
  auto differ = [&](const Vec& o) {
    std::size_t k = 0;
    for (std::size_t i = 0; i < count; ++i) k += (o[i] == 0.0) != (x[i] == 0.0);
    return static_cast<double>(k) / static_cast<double>(count);
  };
  // Independent masks disagree on 2 p (1 - p) = 42% of the elements.
  BOOST_TEST(std::fabs(differ(other_stream) - 0.42) < 0.02);
  BOOST_TEST(std::fabs(differ(other_seed) - 0.42) < 0.02);

  // The mask is Dropout::factor of the element's (sequence, position, column) index.
  for (index_t r = 0; r < 20; ++r)
    for (index_t c = 0; c < width; ++c)
      BOOST_TEST(x[static_cast<std::size_t>(r * width + c)] ==
                 drop.factor<double>(token_element(static_cast<std::uint64_t>(r / seq),
                                                   static_cast<std::uint64_t>(r % seq),
                                                   static_cast<std::uint64_t>(c))));
  // The same sequences padded to 25 positions: every real position keeps its mask.
  const index_t padded = 25;
  Vec wide(static_cast<std::size_t>((rows / seq) * padded * width), 1.0);
  dropout_inplace(Cpu{}, MatrixView<double>(wide.data(), (rows / seq) * padded, width), drop, padded);
  std::size_t moved = 0;
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < width; ++c)
      moved += wide[static_cast<std::size_t>(((r / seq) * padded + r % seq) * width + c)] !=
               x[static_cast<std::size_t>(r * width + c)];
  BOOST_TEST(moved == 0u);
  Vec keep(100, 3.0);
  dropout_inplace(Cpu{}, MatrixView<double>(keep.data(), 10, 10), Dropout{0.0f, 1, 2}, 10);
  BOOST_TEST(std::all_of(keep.begin(), keep.end(), [](double v) { return v == 3.0; }));
}
