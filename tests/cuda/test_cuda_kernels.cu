// Every Cuda overload against the CPU backend on the same inputs (fp32): the forward
// kernels, the backward kernels, the losses, AdamW and the gradient norm. A tensor agrees when
// max |gpu - cpu| <= 1e-5 · max |cpu| (products of depth K differ from the CPU's in their
// summation order, so element-wise relative error near zero would measure cancellation, not
// a bug). Dropout masks must agree exactly. Skipped without a GPU.
#define BOOST_TEST_MODULE cuda_kernels
#include "support/skippable_main.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cuda/cpu_reference.hpp"
#include "cuda/device_check.hpp"
#include "cuda/gpu_compare.hpp"
#include "kadapter/kadapter_cuda.hpp"
#include "kadapter/layers/encoder_layer.hpp"
#include "kadapter/models/adapter.hpp"
#include "kadapter/models/parameters.hpp"

using namespace kadapter;
using cuda::DeviceBuffer;
using gpu_test::check_per_tensor;
using gpu_test::kTol;
using gpu_test::rel_error;

bool ka_test_can_run(std::string& why_not) { return cuda_device_present(why_not); }

namespace {

/// @p n values drawn uniformly from [lo, hi) with @p seed.
std::vector<float> random_values(std::size_t n, unsigned seed, float lo = -1.0f, float hi = 1.0f) {
  std::vector<float> v(n);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  for (float& x : v) x = u(rng);
  return v;
}

/// A host tensor and its device copy.
struct Pair {
  std::vector<float> host;
  DeviceBuffer<float> dev;
  Pair(std::size_t n, unsigned seed, float lo = -1.0f, float hi = 1.0f)
      : host(random_values(n, seed, lo, hi)), dev(std::span<const float>(host)) {}
  static Pair zeros(std::size_t n) {
    Pair p(n, 0);
    std::fill(p.host.begin(), p.host.end(), 0.0f);
    p.dev.upload(p.host);
    return p;
  }
  MatrixView<float> h(index_t r, index_t c) { return {host.data(), r, c}; }
  MatrixView<float> d(index_t r, index_t c) { return {dev.data(), r, c}; }
  VectorView<float> hv() { return {host.data(), static_cast<index_t>(host.size())}; }
  VectorView<float> dv() { return {dev.data(), static_cast<index_t>(dev.size())}; }
  std::vector<float> back() {
    cuda::context().synchronize();
    return dev.download();
  }
};

#define CHECK_CLOSE(pair, what) BOOST_TEST(rel_error((pair).back(), (pair).host) <= kTol, what)

LinearParams<float> lin(Pair& w, Pair* b, index_t out, index_t in, bool device) {
  LinearParams<float> p;
  p.weight = device ? w.d(out, in) : w.h(out, in);
  if (b) p.bias = device ? b->dv() : b->hv();
  return p;
}

}  // namespace

BOOST_AUTO_TEST_CASE(gemm_batched_transposed_matches_loops) {
  // C_b (M, N) = 0.5 · op(A_b) op(B_b) + 2 · C_b for all four transpose pairs, batch 3.
  const index_t m = 13, n = 21, k = 17, batch = 3;
  for (int variant = 0; variant < 4; ++variant) {
    const bool ta = variant & 1, tb = variant & 2;
    Pair a(static_cast<std::size_t>(batch * m * k), 1), b(static_cast<std::size_t>(batch * k * n), 2),
        c(static_cast<std::size_t>(batch * m * n), 3);
    std::vector<float> expect = c.host;
    for (index_t q = 0; q < batch; ++q)
      for (index_t i = 0; i < m; ++i)
        for (index_t j = 0; j < n; ++j) {
          double s = 0;
          for (index_t l = 0; l < k; ++l) {
            const float av = ta ? a.host[q * m * k + l * m + i] : a.host[q * m * k + i * k + l];
            const float bv = tb ? b.host[q * k * n + j * k + l] : b.host[q * k * n + l * n + j];
            s += static_cast<double>(av) * bv;
          }
          float& e = expect[q * m * n + i * n + j];
          e = static_cast<float>(0.5 * s + 2.0 * e);
        }
    cuda::Gemm g;
    g.trans_a = ta;
    g.trans_b = tb;
    g.m = m;
    g.n = n;
    g.k = k;
    g.a = a.dev.data();
    g.lda = ta ? m : k;
    g.b = b.dev.data();
    g.ldb = tb ? k : n;
    g.c = c.dev.data();
    g.ldc = n;
    g.alpha = 0.5f;
    g.beta = 2.0f;
    g.batch = batch;
    g.stride_a = m * k;
    g.stride_b = k * n;
    g.stride_c = m * n;
    cuda::gemm(cuda::context(), g);
    c.host = expect;
    CHECK_CLOSE(c, "transposes " << ta << tb);
  }
}

BOOST_AUTO_TEST_CASE(gemm_refuses_bad_sizes_and_writes_empty_sums) {
  Pair c(6 * 5, 3);
  auto product = [&] {
    cuda::Gemm g;
    g.m = 6;
    g.n = 5;
    g.k = 0;  // an empty sum: C = 0
    g.lda = 1;
    g.ldb = 5;
    g.c = c.dev.data();
    g.ldc = 5;
    return g;
  };
  cuda::gemm(cuda::context(), product());
  c.host.assign(c.host.size(), 0.0f);
  CHECK_CLOSE(c, "k = 0 writes zeros");
  auto refused = [&](cuda::Gemm g, const std::string& words) {
    try {
      cuda::gemm(cuda::context(), g);
      BOOST_ERROR("accepted: " << words);
    } catch (const cuda::CudaError& e) {
      BOOST_TEST(std::string(e.what()).find(words) != std::string::npos, e.what());
    }
  };
  auto g = product();
  g.batch = 0;
  refused(g, "batch >= 1, got m 6, n 5, k 0, batch 0");
  g = product();
  g.k = -1;
  refused(g, "must be >= 0");
  g = product();
  g.m = -1;
  refused(g, "got m -1");
  g = product();
  g.n = -1;
  refused(g, "n -1");
  g = product();
  g.beta = 1.0f;
  refused(g, "k = 0 and beta != 0 or a bias is not supported");
}

BOOST_AUTO_TEST_CASE(linear_forward_and_backward) {
  const index_t rows = 37, in = 96, out = 80;
  for (int bias : {0, 1, 2}) {  // none, in cuBLASLt's epilogue, a 4-byte aligned one in a kernel
    Pair x(rows * in, 10), w(out * in, 11), b(out + 1, 12), y = Pair::zeros(rows * out);
    LinearParams<float> ph = lin(w, nullptr, out, in, false), pd = lin(w, nullptr, out, in, true);
    if (bias) {
      const index_t offset = bias == 2 ? 1 : 0;
      ph.bias = VectorView<const float>(b.host.data() + offset, out);
      pd.bias = VectorView<const float>(b.dev.data() + offset, out);
    }
    ref::linear_forward(y.h(rows, out), x.h(rows, in), ph);
    linear_forward(Cuda{}, y.d(rows, out), MatrixView<const float>(x.d(rows, in)), pd);
    CHECK_CLOSE(y, "forward, bias case " << bias);
  }
  for (GradientMode mode : {GradientMode::Overwrite, GradientMode::Accumulate}) {
    Pair x(rows * in, 20), w(out * in, 21), b(out, 22), dy(rows * out, 23), dx(rows * in, 24), gw(out * in, 25),
        gb(out, 26);
    LinearGrads<float> gh{gw.h(out, in), gb.hv()}, gd{gw.d(out, in), gb.dv()};
    ref::linear_backward(dx.h(rows, in), mode, &gh, dy.h(rows, out), x.h(rows, in), lin(w, &b, out, in, false));
    linear_backward(Cuda{}, dx.d(rows, in), mode, &gd, MatrixView<const float>(dy.d(rows, out)),
                    MatrixView<const float>(x.d(rows, in)), lin(w, &b, out, in, true));
    CHECK_CLOSE(dx, "d_in");
    CHECK_CLOSE(gw, "weight gradient");
    CHECK_CLOSE(gb, "bias gradient");
  }
}

BOOST_AUTO_TEST_CASE(concatenated_linear_and_weighted_rows) {
  // The fac head's com_dense and dense: Linear(concat(a, b)) with W's column blocks.
  const index_t rows = 33, wa = 40, wb = 24, out = 56;
  Pair a(rows * wa, 140), b(rows * wb, 141), w(out * (wa + wb), 142), bias(out, 143), y(rows * out, 149);  // overwritten, not added to
  const LinearParams<float> ph{w.h(out, wa + wb), bias.hv()}, pd{w.d(out, wa + wb), bias.dv()};
  const MatrixView<const float> in_h[2] = {a.h(rows, wa), b.h(rows, wb)}, in_d[2] = {a.d(rows, wa), b.d(rows, wb)};
  ref::linear_concat_forward(y.h(rows, out), in_h, ph);
  linear_concat_forward(Cuda{}, y.d(rows, out), std::span<const MatrixView<const float>>(in_d), pd);
  CHECK_CLOSE(y, "concat forward");
  {
    // A bias 4 bytes past an aligned address: added by a kernel, not cuBLASLt's epilogue.
    Pair bias_off(out + 1, 155), y_off(rows * out, 156);
    const LinearParams<float> ph_off{w.h(out, wa + wb), VectorView<const float>(bias_off.host.data() + 1, out)};
    const LinearParams<float> pd_off{w.d(out, wa + wb), VectorView<const float>(bias_off.dev.data() + 1, out)};
    ref::linear_concat_forward(y_off.h(rows, out), in_h, ph_off);
    linear_concat_forward(Cuda{}, y_off.d(rows, out), std::span<const MatrixView<const float>>(in_d), pd_off);
    CHECK_CLOSE(y_off, "concat forward, unaligned bias");
  }
  for (GradientMode mode : {GradientMode::Overwrite, GradientMode::Accumulate}) {
    Pair dy(rows * out, 144), da(rows * wa, 145), db(rows * wb, 146), gw(out * (wa + wb), 147), gb(out, 148);
    LinearGrads<float> gh{gw.h(out, wa + wb), gb.hv()}, gd{gw.d(out, wa + wb), gb.dv()};
    const MatrixView<float> dh[2] = {da.h(rows, wa), MatrixView<float>{}}, dd[2] = {da.d(rows, wa), MatrixView<float>{}};
    ref::linear_concat_backward(dh, mode, &gh, dy.h(rows, out), in_h, ph);  // b's gradient skipped
    linear_concat_backward(Cuda{}, std::span<const MatrixView<float>>(dd), mode, &gd, MatrixView<const float>(dy.d(rows, out)),
                           std::span<const MatrixView<const float>>(in_d), pd);
    CHECK_CLOSE(da, "concat d_in");
    CHECK_CLOSE(db, "skipped d_in untouched");
    CHECK_CLOSE(gw, "concat weight gradient");
    CHECK_CLOSE(gb, "concat bias gradient");
  }
  // Row selection by one-hot (and general) weights, as the fac and relation heads do.
  const index_t batch = 5, seq = 37, width = 48;
  Pair weights(batch * seq, 150, 0.0f, 1.0f), feats(batch * seq * width, 151), sel(batch * width, 154);
  ref::weighted_rows_forward(sel.h(batch, width), weights.h(batch, seq), feats.h(batch * seq, width));
  weighted_rows_forward(Cuda{}, sel.d(batch, width), MatrixView<const float>(weights.d(batch, seq)),
                        MatrixView<const float>(feats.d(batch * seq, width)));
  CHECK_CLOSE(sel, "weighted rows");
  Pair dsel(batch * width, 152), dfeats(batch * seq * width, 153);
  ref::weighted_rows_backward(dfeats.h(batch * seq, width), dsel.h(batch, width), weights.h(batch, seq));
  weighted_rows_backward(Cuda{}, dfeats.d(batch * seq, width), MatrixView<const float>(dsel.d(batch, width)),
                         MatrixView<const float>(weights.d(batch, seq)));
  CHECK_CLOSE(dfeats, "weighted rows backward");
}

BOOST_AUTO_TEST_CASE(column_sums_over_many_rows) {
  // Bias gradients: row counts below one chunk, of several chunks, and more rows than 64
  // chunks of 64; widths not a multiple of the 32 columns of a block.
  for (const index_t rows : {5, 1000, 5000})
    for (const index_t width : {7, 100, 768}) {
      Pair d(rows * width, 160), g(width, 161);
      ref::accumulate_bias_grad(g.host.data(), d.h(rows, width));
      accumulate_bias_grad(Cuda{}, g.dev.data(), MatrixView<const float>(d.d(rows, width)));
      CHECK_CLOSE(g, rows << " x " << width);
    }
}

BOOST_AUTO_TEST_CASE(layernorm_forward_and_backward) {
  const index_t rows = 29, width = 200;
  Pair a(rows * width, 30, -2.0f, 3.0f), b(rows * width, 31), gamma(width, 32), beta(width, 33);
  Pair y = Pair::zeros(rows * width), xhat = Pair::zeros(rows * width), rstd = Pair::zeros(rows);
  LayerNormParams<float> ph{gamma.hv(), beta.hv()}, pd{gamma.dv(), beta.dv()};
  LayerNormCache<float> ch{xhat.h(rows, width), rstd.hv()}, cd{xhat.d(rows, width), rstd.dv()};
  ref::add_layernorm_forward(y.h(rows, width), &ch, a.h(rows, width), b.h(rows, width), ph, 1e-5f);
  add_layernorm_forward(Cuda{}, y.d(rows, width), &cd, MatrixView<const float>(a.d(rows, width)),
                        MatrixView<const float>(b.d(rows, width)), pd, 1e-5f);
  CHECK_CLOSE(y, "output");
  CHECK_CLOSE(xhat, "xhat");
  CHECK_CLOSE(rstd, "rstd");
  // In place (out aliases a), no residual, no cache.
  ref::add_layernorm_forward(a.h(rows, width), nullptr, a.h(rows, width), {}, ph, 1e-12f);
  layernorm_forward(Cuda{}, a.d(rows, width), nullptr, MatrixView<const float>(a.d(rows, width)), pd, 1e-12f);
  CHECK_CLOSE(a, "in place");
  for (GradientMode mode : {GradientMode::Overwrite, GradientMode::Accumulate}) {
    Pair dy(rows * width, 34), dx(rows * width, 35), gg(width, 36), gbeta(width, 37);
    LayerNormGrads<float> gh{gg.hv(), gbeta.hv()}, gd{gg.dv(), gbeta.dv()};
    ref::layernorm_backward(dx.h(rows, width), mode, &gh, dy.h(rows, width), ch, ph);
    layernorm_backward(Cuda{}, dx.d(rows, width), mode, &gd, MatrixView<const float>(dy.d(rows, width)), cd, pd);
    CHECK_CLOSE(dx, "d_in");
    CHECK_CLOSE(gg, "gamma gradient");
    CHECK_CLOSE(gbeta, "beta gradient");
  }
}

BOOST_AUTO_TEST_CASE(gelu_forward_and_backward) {
  const index_t rows = 11, width = 300;
  Pair x(rows * width, 40, -6.0f, 6.0f);
  ref::gelu_inplace(x.host);
  gelu_inplace(Cuda{}, std::span<float>(x.dev.data(), x.dev.size()));
  CHECK_CLOSE(x, "gelu");
  Pair pre(rows * width, 41, -6.0f, 6.0f), d(rows * width, 42);
  ref::gelu_backward_inplace(d.host, pre.host);
  gelu_backward_inplace(Cuda{}, std::span<float>(d.dev.data(), d.dev.size()),
                        std::span<const float>(pre.dev.data(), pre.dev.size()));
  CHECK_CLOSE(d, "gelu backward");
  Pair p2(rows * width, 43, -4.0f, 4.0f), act = Pair::zeros(rows * width), bias(width, 44);
  ref::bias_gelu_forward(p2.h(rows, width), act.h(rows, width), bias.host.data());
  bias_gelu_forward(Cuda{}, p2.d(rows, width), act.d(rows, width), static_cast<const float*>(bias.dev.data()));
  CHECK_CLOSE(p2, "bias added");
  CHECK_CLOSE(act, "bias + gelu");
  Pair g(rows * width, 45), bg(width, 46);
  ref::bias_gelu_backward(g.h(rows, width), p2.h(rows, width), bg.host.data());
  bias_gelu_backward(Cuda{}, g.d(rows, width), MatrixView<const float>(p2.d(rows, width)), bg.dev.data());
  CHECK_CLOSE(g, "bias + gelu backward");
  CHECK_CLOSE(bg, "bias gradient");
}

BOOST_AUTO_TEST_CASE(dropout_masks_are_identical) {
  const index_t seq = 7, rows = 3 * seq, width = 50;
  Pair x(rows * width, 50);
  const Dropout d{0.3f, 1234, dropout_stream(5, 0, 2)};
  ref::dropout_inplace(x.h(rows, width), d, seq);
  dropout_inplace(Cuda{}, x.d(rows, width), d, seq);
  const std::vector<float> gpu = x.back();
  std::size_t zeros = 0;
  for (std::size_t i = 0; i < gpu.size(); ++i) {
    BOOST_TEST(gpu[i] == x.host[i], "element " << i);
    zeros += x.host[i] == 0.0f;
  }
  BOOST_TEST(zeros > gpu.size() / 5);  // the mask does drop
  BOOST_TEST(zeros < gpu.size() / 2);
}

BOOST_AUTO_TEST_CASE(attention_forward_and_backward) {
  // seq 19 (one pass of a warp over a row) with the -10000 fill, seq 45 (two) with lowest().
  for (const index_t seq : {19, 45}) {
  const index_t batch = 3, heads = 4, d = 16, width = heads * d, tokens = batch * seq;
  const float fill = seq == 19 ? -10000.0f : std::numeric_limits<float>::lowest();
  for (bool with_dropout : {false, true}) {
    Pair q(tokens * width, 60), k(tokens * width, 61), v(tokens * width, 62);
    Pair mask(tokens, 63);
    for (index_t i = 0; i < tokens; ++i) mask.host[i] = (i % seq) >= seq - 1 - (i / seq) * 3 ? fill : 0.0f;
    mask.dev.upload(mask.host);
    Pair ctx = Pair::zeros(tokens * width), probs = Pair::zeros(batch * heads * seq * seq);
    const Dropout drop{0.1f, 99, dropout_stream(3, 1, 7)};
    const Dropout* dp = with_dropout ? &drop : nullptr;
    ref::attention_forward(ctx.h(tokens, width), probs.host.data(), q.h(tokens, width), k.h(tokens, width),
                           v.h(tokens, width), mask.host, batch, seq, heads, dp);
    DeviceBuffer<float> scratch(cuda::attention_scratch(batch, seq, width, heads));
    attention_forward(Cuda{}, ctx.d(tokens, width), probs.dev.data(), MatrixView<const float>(q.d(tokens, width)),
                      MatrixView<const float>(k.d(tokens, width)), MatrixView<const float>(v.d(tokens, width)),
                      std::span<const float>(mask.dev.data(), mask.dev.size()), batch, seq, heads, scratch.data(), dp);
    CHECK_CLOSE(probs, "probabilities, dropout " << with_dropout);
    CHECK_CLOSE(ctx, "context, dropout " << with_dropout);
    Pair dctx(tokens * width, 64), dq = Pair::zeros(tokens * width), dk = Pair::zeros(tokens * width),
        dv = Pair::zeros(tokens * width);
    ref::attention_backward(dq.h(tokens, width), dk.h(tokens, width), dv.h(tokens, width), dctx.h(tokens, width),
                            q.h(tokens, width), k.h(tokens, width), v.h(tokens, width), probs.host.data(), batch, seq,
                            heads, dp);
    attention_backward(Cuda{}, dq.d(tokens, width), dk.d(tokens, width), dv.d(tokens, width),
                       MatrixView<const float>(dctx.d(tokens, width)), MatrixView<const float>(q.d(tokens, width)),
                       MatrixView<const float>(k.d(tokens, width)), MatrixView<const float>(v.d(tokens, width)),
                       static_cast<const float*>(probs.dev.data()), batch, seq, heads, scratch.data(), dp);
    CHECK_CLOSE(dq, "d_q, dropout " << with_dropout);
    CHECK_CLOSE(dk, "d_k, dropout " << with_dropout);
    CHECK_CLOSE(dv, "d_v, dropout " << with_dropout);
    // Inference: no probabilities kept (the softmax runs in place in the scratch).
    Pair ctx2 = Pair::zeros(tokens * width);
    attention_forward(Cuda{}, ctx2.d(tokens, width), nullptr, MatrixView<const float>(q.d(tokens, width)),
                      MatrixView<const float>(k.d(tokens, width)), MatrixView<const float>(v.d(tokens, width)),
                      std::span<const float>(mask.dev.data(), mask.dev.size()), batch, seq, heads, scratch.data(), dp);
    ctx2.host = ctx.host;
    CHECK_CLOSE(ctx2, "context without kept probabilities, dropout " << with_dropout);
  }
  }
}

BOOST_AUTO_TEST_CASE(embeddings_forward_matches) {
  const index_t vocab = 50, positions = 40, types = 2, width = 64, n = 30;
  Pair word(vocab * width, 70), pos(positions * width, 71), type(types * width, 72), gamma(width, 73), beta(width, 74);
  std::vector<std::int64_t> ids(n), posid(n), tt(n);
  for (index_t i = 0; i < n; ++i) {
    ids[i] = (i * 7) % vocab;
    posid[i] = 2 + i % 15;
    tt[i] = i % 2;
  }
  DeviceBuffer<std::int64_t> dids{std::span<const std::int64_t>(ids)}, dpos{std::span<const std::int64_t>(posid)},
      dtt{std::span<const std::int64_t>(tt)};
  Pair out = Pair::zeros(n * width);
  EmbeddingParams<float> ph{word.h(vocab, width), pos.h(positions, width), type.h(types, width), {gamma.hv(), beta.hv()}};
  EmbeddingParams<float> pd{word.d(vocab, width), pos.d(positions, width), type.d(types, width), {gamma.dv(), beta.dv()}};
  ref::embeddings_forward(out.h(n, width), nullptr, ids, posid, tt, ph, 1e-5f);
  embeddings_forward(Cuda{}, out.d(n, width), nullptr, std::span<const std::int64_t>(dids.data(), ids.size()),
                     std::span<const std::int64_t>(dpos.data(), posid.size()),
                     std::span<const std::int64_t>(dtt.data(), tt.size()), pd, 1e-5f);
  CHECK_CLOSE(out, "embeddings");
}

BOOST_AUTO_TEST_CASE(losses_match) {
  const index_t n = 23, c = 45;  // more classes than a warp has lanes
  Pair logits(n * c, 80, -5.0f, 5.0f), grad = Pair::zeros(n * c);
  std::vector<std::int64_t> labels(n), weight(n), cmask(n * c, 1);
  for (index_t r = 0; r < n; ++r) {
    labels[r] = r % 5 == 4 ? -100 : (r * 3) % c;
    weight[r] = r % 7 != 3;
    cmask[r * c + (labels[r] + 1 + c) % c] = 0;  // a masked column that is never the label
  }
  const float lh = ref::cross_entropy(grad.h(n, c), logits.h(n, c), labels, weight, cmask);
  const float ld = cross_entropy(Cuda{}, grad.d(n, c), MatrixView<const float>(logits.d(n, c)),
                                 std::span<const std::int64_t>(labels), std::span<const std::int64_t>(weight),
                                 std::span<const std::int64_t>(cmask));
  BOOST_TEST(std::abs(ld - lh) <= kTol * std::abs(lh));
  CHECK_CLOSE(grad, "cross-entropy gradient");
  // A bad label is the same error as on the CPU.
  labels[2] = c;
  BOOST_CHECK_THROW(cross_entropy(Cuda{}, grad.d(n, c), MatrixView<const float>(logits.d(n, c)),
                                  std::span<const std::int64_t>(labels)),
                    Error);
  Pair targets(n * c, 81, 0.0f, 1.0f), bgrad = Pair::zeros(n * c);
  const float bh = ref::bce_with_logits(bgrad.h(n, c), logits.h(n, c), targets.h(n, c));
  const float bd = bce_with_logits(Cuda{}, bgrad.d(n, c), MatrixView<const float>(logits.d(n, c)),
                                   MatrixView<const float>(targets.d(n, c)));
  BOOST_TEST(std::abs(bd - bh) <= kTol * std::abs(bh));
  CHECK_CLOSE(bgrad, "bce gradient");
}

BOOST_AUTO_TEST_CASE(adamw_and_grad_norm_match) {
  ParameterStore<float> store;
  ref::fill_adamw_case(store, 90);
  const std::vector<double> scales = {1.0, 0.5, 1.0};
  const std::vector<float> expect = ref::adamw_run(90, scales);
  const std::vector<std::uint8_t> mask = cuda::adamw_mask(store);
  DeviceBuffer<float> p{std::span<const float>(store.values())}, g{std::span<const float>(store.gradients())};
  DeviceBuffer<float> m(p.size()), v(p.size());
  cudaMemset(m.data(), 0, m.size() * sizeof(float));
  cudaMemset(v.data(), 0, v.size() * sizeof(float));
  DeviceBuffer<std::uint8_t> dmask{std::span<const std::uint8_t>(mask)};
  const AdamWConfig cfg = ref::adamw_case_config();
  for (std::size_t t = 0; t < scales.size(); ++t)
    cuda::adamw_update(std::span<float>(p.data(), p.size()), std::span<const float>(g.data(), g.size()),
                       std::span<float>(m.data(), m.size()), std::span<float>(v.data(), v.size()), dmask.data(), cfg, cfg.lr,
                       static_cast<std::int64_t>(t + 1), scales[t]);
  cuda::context().synchronize();
  const std::vector<float> got = p.download();
  check_per_tensor(got, expect, store.table());
  // The frozen tensor is untouched, bit for bit.
  const auto* frozen = store.find("frozen.weight");
  BOOST_REQUIRE(frozen);
  for (index_t i = 0; i < frozen->size(); ++i)
    BOOST_TEST(got[frozen->offset + i] == store.values()[frozen->offset + i]);

  Pair grads(1 << 20, 91);
  const double n_cpu = ref::grad_norm(grads.host);
  const double n_gpu = cuda::grad_norm(std::span<const float>(grads.dev.data(), grads.dev.size()));
  BOOST_TEST(std::abs(n_gpu - n_cpu) <= 1e-12 * n_cpu);
}

BOOST_AUTO_TEST_CASE(encoder_layer_forward_and_backward) {
  // The layer template itself on the GPU (B = Cuda, a device Workspace) against the CPU.
  ref::LayerCase c;
  c.dims = LayerDims{.batch = 2, .seq = 24, .hidden = 64, .heads = 4, .ffn = 96, .eps = 1e-12};
  const auto& d = c.dims;
  const index_t n = d.tokens(), h = d.hidden;
  const auto random = [](std::size_t size, unsigned seed, float scale) { return random_values(size, seed, -scale, scale); };
  c.values = random(ref::encoder_layer_elements(d), 100, 0.2f);
  c.x = random(static_cast<std::size_t>(n * h), 101, 1.0f);
  c.dy = random(static_cast<std::size_t>(n * h), 102, 1.0f);
  c.mask.assign(static_cast<std::size_t>(n), 0.0f);
  for (index_t t = 17; t < d.seq; ++t) c.mask[static_cast<std::size_t>(d.seq + t)] = -1e30f;  // padding in sequence 1
  c.drop = LayerDropouts{{0.1f, 7, dropout_stream(1, 0, 1)}, {0.1f, 7, dropout_stream(1, 0, 2)}, {0.1f, 7, dropout_stream(1, 0, 3)}};
  const ref::LayerResult expect = ref::encoder_layer(c);

  DeviceBuffer<float> values{std::span<const float>(c.values)}, grads(c.values.size()), x{std::span<const float>(c.x)},
      dy{std::span<const float>(c.dy)}, mask{std::span<const float>(c.mask)}, y(c.x.size()), dx(c.x.size());
  cudaMemset(grads.data(), 0, grads.size() * sizeof(float));
  EncoderLayerGrads<float> g;
  ParamLayout<float> layout(values.data(), grads.data(), nullptr);  // views into device memory
  const auto p = layout.encoder_layer("layer.", d.hidden, d.ffn, &g);
  Workspace<float, Cuda> ws;
  ws.reserve(EncoderLayerCache<float>::elements(d) + std::max(encoder_layer_forward_scratch<float, Cuda>(d, true),
                                                              encoder_layer_backward_scratch<float, Cuda>(d)));
  EncoderLayerCache<float> cache;
  cache.bind(ws, d);
  const std::size_t mark = ws.used();
  encoder_layer_forward(Cuda{}, MatrixView<float>(y.data(), n, h), &cache, MatrixView<const float>(x.data(), n, h),
                        std::span<const float>(mask.data(), mask.size()), p, d, &c.drop, ws);
  ws.rewind(mark);
  encoder_layer_backward(Cuda{}, MatrixView<float>(dx.data(), n, h), GradientMode::Overwrite, &g,
                         MatrixView<const float>(dy.data(), n, h), cache, p, d, &c.drop, ws);
  cuda::context().synchronize();
  BOOST_TEST(rel_error(y.download(), expect.y) <= kTol);
  BOOST_TEST(rel_error(dx.download(), expect.dx) <= kTol);
  std::vector<ParamSlot<float>> table;
  ParamLayout<float>(nullptr, nullptr, &table).encoder_layer("layer.", d.hidden, d.ffn);
  check_per_tensor(grads.download(), expect.grads, table);
}

BOOST_AUTO_TEST_CASE(adapter_forward_and_backward) {
  // The adapter templates with B = Cuda: four adapter layers of two inner layers, a skip
  // connections, dropout and a padding mask, against the CPU.
  ref::AdapterCase c;
  c.cfg = AdapterConfig{48, 32, 2, 4, 64, 2, 4, {0, 1, 2, 3}, 1e-5};  // layer 4 adds layer 1's output
  c.inner = LayerDims{.batch = 2, .seq = 20, .hidden = 32, .heads = 4, .ffn = 64, .eps = 1e-5};
  const index_t n = c.inner.tokens(), h = c.cfg.hidden;
  const auto random = [](std::size_t size, unsigned seed, float scale) { return random_values(size, seed, -scale, scale); };
  c.values = random(ref::adapter_elements(c.cfg), 120, 0.2f);
  for (unsigned i = 0; i < 4; ++i) c.hidden.push_back(random(static_cast<std::size_t>(n * h), 121 + i, 1.0f));
  c.mask.assign(static_cast<std::size_t>(n), 0.0f);
  for (index_t t = 13; t < c.inner.seq; ++t) c.mask[static_cast<std::size_t>(t)] = std::numeric_limits<float>::lowest();
  c.d_result = random(static_cast<std::size_t>(n * h), 130, 1.0f);
  const ref::AdapterResult expect = ref::adapter(c);

  DeviceBuffer<float> values{std::span<const float>(c.values)}, grads(c.values.size()), mask{std::span<const float>(c.mask)},
      d_result{std::span<const float>(c.d_result)};
  cudaMemset(grads.data(), 0, grads.size() * sizeof(float));
  std::vector<DeviceBuffer<float>> hidden;
  for (const auto& hs : c.hidden) hidden.emplace_back(std::span<const float>(hs));
  ParamLayout<float> layout(values.data(), grads.data(), nullptr);
  const auto p = declare_adapter(layout, "adapter.", c.cfg, true);
  Workspace<float, Cuda> acts, ws;
  acts.reserve(AdapterCache<float>::elements(c.cfg, c.inner, true));
  ws.reserve(adapter_scratch<float, Cuda>(c.cfg, c.inner, true));
  AdapterCache<float> cache;
  cache.bind(acts, c.cfg, c.inner, true);
  const auto states = [&](index_t i) { return MatrixView<const float>(hidden[static_cast<std::size_t>(i)].data(), n, h); };
  adapter_forward(Cuda{}, cache, states, std::span<const float>(mask.data(), mask.size()), p, c.cfg, SkipRule::standard,
                  c.inner, ref::adapter_case_dropouts, true, ws);
  ws.reset();
  adapter_backward(Cuda{}, MatrixView<const float>(d_result.data(), n, h), cache, p, c.cfg, SkipRule::standard, c.inner,
                   ref::adapter_case_dropouts, ws);
  cuda::context().synchronize();
  std::vector<float> result(static_cast<std::size_t>(n * h));
  cuda::check(cudaMemcpy(result.data(), cache.result.data(), result.size() * sizeof(float), cudaMemcpyDeviceToHost), "copy");
  BOOST_TEST(rel_error(result, expect.result) <= kTol);
  std::vector<ParamSlot<float>> table;
  ParamLayout<float> names(nullptr, nullptr, &table);
  declare_adapter(names, "adapter.", c.cfg, true);
  check_per_tensor(grads.download(), expect.grads, table);
}

BOOST_AUTO_TEST_CASE(gradient_writes_and_small_helpers) {
  // Expected values by plain loops (these are copies, adds and one product per element).
  const index_t rows = 17, width = 45;
  const std::size_t n = static_cast<std::size_t>(rows * width);
  for (GradientMode mode : {GradientMode::Overwrite, GradientMode::Accumulate, GradientMode::Ignore}) {
    Pair src(n, 170), dst(n, 171);
    for (std::size_t i = 0; i < n; ++i)
      if (mode == GradientMode::Overwrite) dst.host[i] = src.host[i];
      else if (mode == GradientMode::Accumulate) dst.host[i] += src.host[i];
    write_gradient(Cuda{}, dst.d(rows, width), MatrixView<const float>(src.d(rows, width)), mode);
    CHECK_CLOSE(dst, "write_gradient mode " << static_cast<int>(mode));
  }
  Pair x(n, 172), y(n, 173);
  for (std::size_t i = 0; i < n; ++i) y.host[i] = 0.75f * x.host[i];
  scale_copy(Cuda{}, y.d(rows, width), MatrixView<const float>(x.d(rows, width)), 0.75f);
  CHECK_CLOSE(y, "scale_copy");
  for (float& v : x.host) v = -1.25f * v;
  scale_copy(Cuda{}, x.d(rows, width), MatrixView<const float>(x.d(rows, width)), -1.25f);
  CHECK_CLOSE(x, "scale_copy in place");
  const index_t seqs = 6, stride = 7;
  Pair all(static_cast<std::size_t>(seqs * stride * width), 174), picked(static_cast<std::size_t>(seqs * width), 175);
  for (index_t r = 0; r < seqs; ++r)
    for (index_t c = 0; c < width; ++c)
      picked.host[static_cast<std::size_t>(r * width + c)] = all.host[static_cast<std::size_t>(r * stride * width + c)];
  gather_rows(Cuda{}, picked.d(seqs, width), MatrixView<const float>(all.d(seqs * stride, width)), stride);
  CHECK_CLOSE(picked, "gather_rows");
  Pair back(static_cast<std::size_t>(seqs * stride * width), 176), rows_in(static_cast<std::size_t>(seqs * width), 177);
  for (index_t r = 0; r < seqs; ++r)
    for (index_t c = 0; c < width; ++c)
      back.host[static_cast<std::size_t>(r * stride * width + c)] = rows_in.host[static_cast<std::size_t>(r * width + c)];
  scatter_rows(Cuda{}, back.d(seqs * stride, width), MatrixView<const float>(rows_in.d(seqs, width)), stride);
  CHECK_CLOSE(back, "scatter_rows (other rows untouched)");
  const std::vector<float> host = random_values(100, 178);
  std::vector<float> round(100, 0.0f);
  DeviceBuffer<float> dev(100);
  copy_from_host(Cuda{}, dev.data(), std::span<const float>(host));
  copy_to_host(Cuda{}, std::span<float>(round), dev.data());
  BOOST_TEST(round == host);
}

namespace {
// Keeps one thread busy for about @p cycles clock cycles (some 0.5 s for 1e9).
__global__ void spin_kernel(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}
}  // namespace

BOOST_AUTO_TEST_CASE(staged_copies_survive_reuse_of_the_source) {
  // copy_from_host returns before the device copy is done: each source is overwritten (and
  // at the end freed) right after its call. A kernel that spins first holds the stream back,
  // so that no copy has run when the ring of staging slots comes round again: a slot written
  // again before its copies had read it would show here. Small copies share slots, the large
  // ones are cut into slot-sized pieces, and there are enough to go round the ring 3 times.
  using Ctx = cuda::Context;
  const std::size_t slot_floats = Ctx::kStagingSlotBytes / sizeof(float);
  const std::vector<std::size_t> sizes = {1, 3, 1000, slot_floats - 5, slot_floats, 2 * slot_floats + 7, 333, 65537};
  std::size_t total = 0;
  for (int round = 0; round < 3; ++round)
    for (std::size_t n : sizes) total += n;
  BOOST_REQUIRE(total * sizeof(float) > 3 * Ctx::kStagingSlots * Ctx::kStagingSlotBytes);
  DeviceBuffer<float> dev(total);
  const std::vector<float> expected = random_values(total, 180);
  auto& ctx = cuda::context();
  spin_kernel<<<1, 1, 0, ctx.stream()>>>(1000000000LL);
  BOOST_REQUIRE_EQUAL(static_cast<int>(cudaGetLastError()), 0);
  std::vector<float> source;
  std::size_t at = 0;
  for (int round = 0; round < 3; ++round)
    for (std::size_t n : sizes) {
      source.assign(expected.begin() + static_cast<std::ptrdiff_t>(at), expected.begin() + static_cast<std::ptrdiff_t>(at + n));
      copy_from_host(Cuda{}, dev.data() + at, std::span<const float>(source));
      std::fill(source.begin(), source.end(), std::numeric_limits<float>::quiet_NaN());
      at += n;
    }
  source.clear();
  source.shrink_to_fit();
  ctx.synchronize();
  const std::vector<float> back = dev.download();
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < total; ++i) wrong += back[i] != expected[i];
  BOOST_TEST(wrong == 0u, wrong << " of " << total << " values differ");
}

// second_unit.cu includes kadapter_cuda.hpp too: the kernels, defined in headers, must link
// from two translation units, and give the same results from either.
void second_unit_gelu(std::span<float> x);

BOOST_AUTO_TEST_CASE(kernels_link_from_two_units) {
  Pair a(1000, 110, -3.0f, 3.0f), b(1000, 110, -3.0f, 3.0f);
  gelu_inplace(Cuda{}, std::span<float>(a.dev.data(), a.dev.size()));
  second_unit_gelu(std::span<float>(b.dev.data(), b.dev.size()));
  const std::vector<float> ga = a.back(), gb = b.back();
  for (std::size_t i = 0; i < ga.size(); ++i) BOOST_TEST(ga[i] == gb[i]);
}
