// Downstream use of the installed package: load a model directory and encode one sequence.
#include <cstdio>
#include <vector>

#include <kadapter/kadapter.hpp>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: downstream MODEL_DIR\n");
    return 2;
  }
  try {
    const std::vector<std::int64_t> ids{0, 7, 8, 9, 2}, mask(5, 1);
    const kadapter::TokenBatch batch{1, 5, ids, mask, {}};
    return kadapter::io::with_encoder_dir<float>(argv[1], [&](auto& enc, const auto&) {
      kadapter::HiddenStates<float> states(enc.config().layers, {enc.config().layers});
      enc.forward(states, batch);
      std::printf("kadapter %s: last hidden state (1, 5, %ld), first value %.6f\n",
                  kadapter::version_string, static_cast<long>(states.hidden()),
                  states[enc.config().layers](0, 0, 0));
      return 0;
    });
  } catch (const kadapter::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
