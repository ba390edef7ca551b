#include "cuda/model_reference.hpp"

#include "kadapter/io/model_dir.hpp"

namespace ref {

cases::CaseResult run_case_cpu(const cases::ModelCase& c) { return cases::run_case<kadapter::Cpu>(c); }

kadapter::cli::GradsResult<float> grads_cpu(const kadapter::cli::GradsRequest& req) {
  return kadapter::cli::compute_grads<float>(req);
}

std::vector<std::vector<float>> encode_cpu(const std::string& dir, kadapter::index_t batch, kadapter::index_t seq,
                                           const std::vector<std::int64_t>& ids,
                                           const std::vector<std::int64_t>& mask,
                                           const std::vector<std::int64_t>& types,
                                           kadapter::PositionScheme positions) {
  using namespace kadapter;
  return io::with_encoder_dir<float>(dir, [&](auto& enc, const io::EncoderLoadReport&) {
    HiddenStates<float> states(enc.config().layers);
    enc.forward(states, TokenBatch{batch, seq, ids, mask, types}, ForwardOptions{positions, MaskFill::lowest});
    std::vector<std::vector<float>> out;
    for (index_t k : states.kept()) {
      const auto s = states[k];
      out.emplace_back(s.data(), s.data() + s.size());
    }
    return out;
  });
}

}  // namespace ref
