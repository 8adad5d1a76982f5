// libFuzzer target: request validation. The input is parsed as a
// ferry.v1.GenerateRequest (and as a TokenizeRequest) the way gRPC's
// deserializer parses a received message, then checked by the server's own
// PrepareRequest / TokenizeText on a small SentencePiece or byte-level BPE
// tokenizer (the last input byte picks). Any input gives a request or an
// error; an accepted request keeps every limit it was checked against.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "engine/text/sampler.h"
#include "ferry/v1/inference.pb.h"
#include "service/requests.h"
#include "tests/tiny_tokenizers.h"

namespace {

struct Context {
  ferry::testing::TinyTokenizer tok;
  ferry::service::RequestContext ctx;
};

Context Make(bool bpe) {
  absl::StatusOr<ferry::testing::TinyTokenizer> t = bpe ? ferry::testing::TinyBpe() : ferry::testing::TinySpm();
  if (!t.ok()) std::abort();
  Context c{std::move(*t), {}};
  c.ctx.tokenizer = c.tok.tokenizer.get();
  c.ctx.n_ctx = 256;
  c.ctx.chat = ferry::text::ChatTemplate{};  // chatml
  c.ctx.limits.max_prompt_tokens = 128;
  c.ctx.max_token_bytes = ferry::service::MaxTokenBytes(*c.tok.tokenizer);
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Context spm = Make(false), bpe = Make(true);
  const Context& c = size > 0 && (data[size - 1] & 1) ? bpe : spm;
  const ferry::service::RequestContext& ctx = c.ctx;
  const int n_vocab = ctx.tokenizer->n_vocab();

  ferry::v1::GenerateRequest req;
  if (req.ParseFromArray(data, static_cast<int>(size))) {
    absl::StatusOr<ferry::service::PreparedRequest> p = ferry::service::PrepareRequest(req, ctx, 42);
    if (p.ok()) {
      const ferry::runtime::Request& r = p->request;
      if (r.prompt.empty() || static_cast<int>(r.prompt.size()) > ferry::service::PromptTokenLimit(ctx)) std::abort();
      if (r.max_tokens < 0 || static_cast<int64_t>(r.prompt.size()) + r.max_tokens > ctx.n_ctx) std::abort();
      for (int32_t id : r.prompt) {
        if (id < 0 || id >= n_vocab) std::abort();
      }
      for (int32_t id : r.stop_ids) {
        if (id < 0 || id >= n_vocab) std::abort();
      }
      if (static_cast<int>(r.stops.size()) > ctx.limits.max_stops) std::abort();
      if (static_cast<int>(r.session.size()) > ctx.limits.max_session_bytes) std::abort();
      if (!ferry::text::Validate(r.sampling, n_vocab).ok()) std::abort();
      for (const auto& [token, bias] : r.sampling.logit_bias) {
        if (!(bias >= -ferry::text::kMaxLogitBias && bias <= ferry::text::kMaxLogitBias)) std::abort();
      }
    } else {
      const absl::StatusCode code = p.status().code();
      if (code != absl::StatusCode::kInvalidArgument && code != absl::StatusCode::kFailedPrecondition) std::abort();
      if (p.status().message().empty()) std::abort();
    }
  }
  ferry::v1::TokenizeRequest t;
  if (t.ParseFromArray(data, static_cast<int>(size))) {
    ferry::v1::TokenizeResponse resp;
    const absl::Status s = ferry::service::TokenizeText(t, ctx, &resp);
    if (s.ok() != (resp.ids_size() > 0 || t.text().empty())) std::abort();
    if (s.ok() && t.text().size() > ferry::service::PromptTextByteLimit(ctx)) std::abort();
  }
  return 0;
}
