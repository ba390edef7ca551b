// The CPU side of the model-level GPU tests, compiled by the C++ compiler in
// model_reference.cpp: the task-model cases, the official fixtures' forward/backward and the
// frozen encoder, each on the Cpu backend.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cli/grads.hpp"
#include "support/model_cases.hpp"

namespace ref {

/// cases::run_case<Cpu>.
cases::CaseResult run_case_cpu(const cases::ModelCase& c);

/// cli::compute_grads<float> (Cpu) for @p req.
kadapter::cli::GradsResult<float> grads_cpu(const kadapter::cli::GradsRequest& req);

/// Every hidden state of the encoder in @p dir for the batch, one (B·T·H) array per state.
std::vector<std::vector<float>> encode_cpu(const std::string& dir, kadapter::index_t batch, kadapter::index_t seq,
                                           const std::vector<std::int64_t>& ids,
                                           const std::vector<std::int64_t>& mask,
                                           const std::vector<std::int64_t>& types,
                                           kadapter::PositionScheme positions);

}  // namespace ref
