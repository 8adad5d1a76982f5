// The real `ferry serve` binary on a free port, driven through the generated
// gRPC client: streamed output against `ferry generate`, batching that does
// not change any request's output, cancellation, deadlines, the admission
// queue, drain on SIGTERM, every INVALID_ARGUMENT case, TLS, mutual TLS and
// bearer tokens. A "slow" server streams every layer through a sim device
// with a 20 MB/s copy engine, so a step takes tens of milliseconds and
// requests are still running when the test acts on them.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <mutex>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ferry/v1/inference.grpc.pb.h"
#include "health_client.grpc.pb.h"
#include "tests/reference_forward.h"
#include "tests/server_process.h"
#include "tests/shared_models.h"

namespace ferry {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

constexpr char kStories[] = "stories260K-f32.gguf";
// Every layer streamed at 20 MB/s: about 50 ms per step for a model of
// stories260K's shape (testing::StoriesShapedModel, the servers' model here).
constexpr char kSlowDevice[] = "--device sim:mem=64MiB,overhead=0,h2d=0.02GB/s --gpu_layers 0 --placement stream";

// Shared servers, started once for the suite.
class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fast_ = new ServerProcess("--model " + testing::StoriesShapedModel() + " --ctx 256 --slots 4 --max_queue 8");
    ASSERT_TRUE(fast_->WaitServing()) << fast_->output();
  }
  static void TearDownTestSuite() {
    delete fast_;
    fast_ = nullptr;
  }
  void SetUp() override { stub_ = Connect(fast_->target()); }
  static ServerProcess* fast_;
  std::unique_ptr<v1::Inference::Stub> stub_;
};
ServerProcess* ServerTest::fast_ = nullptr;

// `ferry generate` prints the prompt, the generated text and a new line.
std::string FerryGenerate(const std::string& args) {
  const std::string cmd = std::string(FERRY_BINARY) + " generate " + args + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

TEST_F(ServerTest, StreamedTextEqualsFerryGenerate) {
  const std::string model = testing::StoriesShapedModel();
  for (const std::string prompt : {"Once upon a time", "The little dog", "Lily and Ben went to"}) {
    const Generated g = Generate(*stub_, Greedy(prompt, 48));
    ASSERT_TRUE(g.status.ok()) << g.status.error_message();
    EXPECT_GT(g.messages, 1);
    const std::string expected =
        FerryGenerate("--model " + model + " --ctx 256 -n 48 --temperature 0 --prompt '" + prompt + "'");
    EXPECT_EQ(prompt + g.text + "\n", expected);
  }
}

// The double-precision reference's greedy continuation of `tokens`; every
// step's top-2 logit margin must clear `min_margin` (far above ferry's f32
// rounding, ~1e-5 of a logit on this model), or the golden would not be one.
std::vector<int32_t> ReferenceGreedy(const std::string& path, std::vector<int32_t> tokens, int n, double min_margin) {
  auto file = gguf::File::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return {};
  auto ref = testing::ReferenceModel::Load(**file);
  EXPECT_TRUE(ref.ok()) << ref.status();
  if (!ref.ok()) return {};
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    const std::vector<double> z = ref->Logits(tokens).back();
    std::vector<double> sorted = z;
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<>());
    EXPECT_GT(sorted[0] - sorted[1], min_margin) << "a near-tie at step " << i;
    const int32_t best = static_cast<int32_t>(std::max_element(z.begin(), z.end()) - z.begin());
    out.push_back(best);
    tokens.push_back(best);
  }
  return out;
}

TEST_F(ServerTest, GreedyFromBosIsTheReferenceGreedy) {
  v1::GenerateRequest r;
  r.mutable_tokens()->add_ids(1);  // BOS alone
  r.set_max_tokens(60);
  r.set_ignore_eos(true);
  r.mutable_sampling()->set_temperature(0);
  const Generated g = Generate(*stub_, r);
  ASSERT_TRUE(g.status.ok()) << g.status.error_message();
  EXPECT_EQ(g.ids, ReferenceGreedy(testing::StoriesShapedModel(), {1}, 60, 1e-3));
  EXPECT_EQ(g.last.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(g.last.usage().prompt_tokens(), 1);
  EXPECT_EQ(g.last.usage().completion_tokens(), 60);
  EXPECT_EQ(static_cast<int>(g.ids.size()), 60);
}

// The real stories260K (../shared/models): its author's documented text.
TEST(StoriesGolden, DocumentedGreedyTextFromBos) {
  const std::string model = testing::SharedModel(kStories);
  FERRY_REQUIRE_SHARED_MODEL(model);
  ServerProcess server("--model " + model + " --ctx 256");
  ASSERT_TRUE(server.WaitServing()) << server.output();
  v1::GenerateRequest r;
  r.mutable_tokens()->add_ids(1);  // BOS alone
  r.set_max_tokens(60);
  r.mutable_sampling()->set_temperature(0);
  const Generated g = Generate(*Connect(server.target()), r);
  ASSERT_TRUE(g.status.ok()) << g.status.error_message();
  EXPECT_THAT(g.text, ::testing::StartsWith("Once upon a time, there was a little girl named Lily. She loved to play "
                                           "outside in the park."));
  EXPECT_EQ(g.last.usage().completion_tokens(), 60);
}

// Temperature 0, and a fixed seed at temperature 0.9: each request's output
// alone equals its output among 11 others (more than the 4 slots, so some
// also wait in the queue and join a running batch mid-way).
TEST_F(ServerTest, ConcurrentRequestsEachEqualTheirOutputAlone) {
  std::vector<v1::GenerateRequest> reqs;
  const char* prompts[] = {"Once upon a time", "The cat", "One day, Tom", "She saw a big", "He was happy",
                           "The sun was"};
  for (const char* p : prompts) {
    reqs.push_back(Greedy(p, 40));
    v1::GenerateRequest seeded = Greedy(p, 40);
    seeded.mutable_sampling()->set_temperature(0.9f);
    seeded.set_seed(1234);
    reqs.push_back(seeded);
  }
  std::vector<Generated> alone;
  for (const auto& r : reqs) alone.push_back(Generate(*stub_, r));
  std::vector<Generated> together(reqs.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < reqs.size(); ++i) {
    threads.emplace_back([&, i] { together[i] = Generate(*Connect(fast_->target()), reqs[i]); });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_TRUE(alone[i].status.ok()) << alone[i].status.error_message();
    ASSERT_TRUE(together[i].status.ok()) << together[i].status.error_message();
    EXPECT_EQ(together[i].ids, alone[i].ids) << "request " << i;
    EXPECT_EQ(together[i].text, alone[i].text) << "request " << i;
  }
}

TEST_F(ServerTest, StopSequencesLogprobsEchoAndSeed) {
  // A stop sequence taken from the middle of the unstopped greedy text: the
  // text then ends just before its first occurrence.
  v1::GenerateRequest free_run = Greedy("Once upon a time", 60);
  free_run.set_ignore_eos(true);
  const Generated full = Generate(*stub_, free_run);
  ASSERT_TRUE(full.status.ok()) << full.status.error_message();
  ASSERT_GT(full.text.size(), 24u) << full.text;
  // Whole characters from the middle, at least 4 bytes.
  auto char_start = [&](size_t i) {
    while (i > 0 && i < full.text.size() && (static_cast<unsigned char>(full.text[i]) & 0xc0) == 0x80) --i;
    return i;
  };
  const size_t cut = char_start(full.text.size() / 2);
  size_t end = cut + 4;
  while (end < full.text.size() && (static_cast<unsigned char>(full.text[end]) & 0xc0) == 0x80) ++end;
  const std::string stop = full.text.substr(cut, end - cut);
  const std::string expected = full.text.substr(0, full.text.find(stop));
  v1::GenerateRequest r = free_run;
  r.add_stop(stop);
  r.set_logprobs(true);
  r.set_top_logprobs(3);
  r.set_echo(true);
  grpc::ClientContext ctx;
  auto reader = stub_->Generate(&ctx, r);
  v1::GenerateResponse m;
  std::vector<v1::GenerateResponse> all;
  while (reader->Read(&m)) all.push_back(m);
  const grpc::Status finished = reader->Finish();
  ASSERT_TRUE(finished.ok()) << finished.error_message() << " (stop '" << stop << "')";
  ASSERT_GE(all.size(), 2u);
  EXPECT_TRUE(all[0].echo_prompt());
  EXPECT_EQ(all[0].text(), "Once upon a time");
  std::string text;
  for (size_t i = 1; i < all.size(); ++i) {
    text += all[i].text();
    ASSERT_EQ(all[i].logprobs_size(), all[i].token_ids_size());
    for (const auto& lp : all[i].logprobs()) {
      EXPECT_LE(lp.logprob(), 0.0f);
      ASSERT_EQ(lp.top_size(), 3);
      EXPECT_EQ(lp.top(0).token_id(), lp.token_id());  // greedy: the chosen token is the most likely
      EXPECT_GE(lp.top(0).logprob(), lp.top(1).logprob());
    }
  }
  EXPECT_EQ(all.back().finish_reason(), v1::FINISH_REASON_STOP_SEQUENCE);
  EXPECT_THAT(text, ::testing::Not(HasSubstr(stop)));
  EXPECT_EQ(text, expected) << "stop " << stop;
}

TEST_F(ServerTest, SessionReusesTheCachedPromptPrefixWithTheSameOutput) {
  const std::string turn1 = "Once upon a time, there was a little girl named Lily.";
  v1::GenerateRequest a = Greedy(turn1, 20);
  a.set_session_id("conversation-7");
  const Generated first = Generate(*stub_, a);
  ASSERT_TRUE(first.status.ok());
  v1::GenerateRequest b = Greedy(turn1 + first.text + " Then", 20);
  const Generated fresh = Generate(*stub_, b);  // no session: computed from scratch
  b.set_session_id("conversation-7");
  const Generated reused = Generate(*stub_, b);
  ASSERT_TRUE(fresh.status.ok());
  ASSERT_TRUE(reused.status.ok());
  EXPECT_EQ(fresh.last.usage().cached_tokens(), 0);
  EXPECT_GT(reused.last.usage().cached_tokens(), 10);
  EXPECT_EQ(reused.ids, fresh.ids);
  // Another session never sees that cache.
  b.set_session_id("someone-else");
  EXPECT_EQ(Generate(*stub_, b).last.usage().cached_tokens(), 0);
}

struct BadCase {
  std::string name;
  std::function<void(v1::GenerateRequest&)> edit;
  std::string message;
};

TEST_F(ServerTest, EveryMalformedFieldIsInvalidArgumentWithTheLimit) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<BadCase> cases = {
      {"no prompt", [](auto& r) { r.clear_text(); }, "prompt is empty"},
      {"empty text", [](auto& r) { r.set_text(""); }, "prompt text is empty"},
      {"empty token list", [](auto& r) { r.mutable_tokens(); }, "prompt tokens are empty"},
      {"token id too large", [](auto& r) { r.mutable_tokens()->add_ids(512); }, "outside the vocabulary [0, 512)"},
      {"negative token id", [](auto& r) { r.mutable_tokens()->add_ids(-1); }, "outside the vocabulary"},
      {"bad utf-8", [](auto& r) { r.set_text(std::string("a\xff\xfe")); }, "not valid UTF-8"},
      {"negative max_tokens", [](auto& r) { r.set_max_tokens(-1); }, "max_tokens = -1 is outside [0, 256]"},
      {"prompt + max_tokens beyond context", [](auto& r) { r.set_max_tokens(256); }, "exceeds the context of 256"},
      {"temperature NaN", [=](auto& r) { r.mutable_sampling()->set_temperature(nan); }, "temperature"},
      {"negative temperature", [](auto& r) { r.mutable_sampling()->set_temperature(-1); }, "temperature = -1"},
      {"top_p zero", [](auto& r) { r.mutable_sampling()->set_top_p(0); }, "top_p = 0 is outside (0, 1]"},
      {"top_p above one", [](auto& r) { r.mutable_sampling()->set_top_p(1.5f); }, "top_p = 1.5"},
      {"top_k negative", [](auto& r) { r.mutable_sampling()->set_top_k(-3); }, "top_k = -3"},
      {"min_p NaN", [=](auto& r) { r.mutable_sampling()->set_min_p(nan); }, "min_p"},
      {"typical_p zero", [](auto& r) { r.mutable_sampling()->set_typical_p(0); }, "typical_p"},
      {"repetition_penalty zero", [](auto& r) { r.mutable_sampling()->set_repetition_penalty(0); }, "repetition_penalty"},
      {"presence_penalty inf", [](auto& r) { r.mutable_sampling()->set_presence_penalty(INFINITY); }, "presence_penalty"},
      {"frequency_penalty huge", [](auto& r) { r.mutable_sampling()->set_frequency_penalty(1e6f); }, "frequency_penalty"},
      {"penalty_last_n negative", [](auto& r) { r.mutable_sampling()->set_penalty_last_n(-1); }, "penalty_last_n"},
      {"logit_bias token", [](auto& r) { (*r.mutable_sampling()->mutable_logit_bias())[9999] = 1; }, "logit_bias token 9999"},
      {"logit_bias NaN", [=](auto& r) { (*r.mutable_sampling()->mutable_logit_bias())[5] = nan; }, "is NaN"},
      {"top_logprobs without logprobs", [](auto& r) { r.set_top_logprobs(2); }, "top_logprobs needs logprobs"},
      {"top_logprobs too many", [](auto& r) { r.set_logprobs(true); r.set_top_logprobs(21); }, "top_logprobs = 21"},
      {"too many stops", [](auto& r) { for (int i = 0; i < 17; ++i) r.add_stop(absl::StrCat("x", i)); },
       "17 stop sequences; the limit is 16"},
      {"empty stop", [](auto& r) { r.add_stop(""); }, "stop sequence 0 is empty"},
      {"long stop", [](auto& r) { r.add_stop(std::string(300, 'a')); }, "the limit is 256"},
      {"stop not utf-8", [](auto& r) { r.add_stop("\xc3"); }, "stop sequence 0 is not valid UTF-8"},
      {"stop token id", [](auto& r) { r.add_stop_token_ids(600); }, "stop_token_ids 0 = 600"},
      {"chat without template", [](auto& r) { r.mutable_chat()->add_messages()->set_content("hi"); },
       "no chat template"},
      {"session id too long", [](auto& r) { r.set_session_id(std::string(300, 's')); }, "session_id"},
  };
  for (const BadCase& c : cases) {
    v1::GenerateRequest r = Greedy("Once upon a time", 8);
    c.edit(r);
    const Generated g = Generate(*stub_, r);
    const auto want = c.name == "chat without template" ? grpc::StatusCode::FAILED_PRECONDITION
                                                        : grpc::StatusCode::INVALID_ARGUMENT;
    EXPECT_EQ(g.status.error_code(), want) << c.name << ": " << g.status.error_message();
    EXPECT_THAT(g.status.error_message(), HasSubstr(c.message)) << c.name;
    EXPECT_EQ(g.messages, 0) << c.name;
  }
  // Detokenize checks its ids too.
  grpc::ClientContext ctx;
  v1::DetokenizeRequest d;
  d.add_ids(700);
  v1::DetokenizeResponse resp;
  const grpc::Status st = stub_->Detokenize(&ctx, d, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("ids[0] = 700"));
}

TEST_F(ServerTest, TokenizeDetokenizeModelInfoAndPlan) {
  grpc::ClientContext c1;
  v1::TokenizeRequest t;
  t.set_text("Once upon a time");
  v1::TokenizeResponse tr;
  ASSERT_TRUE(stub_->Tokenize(&c1, t, &tr).ok());
  ASSERT_GT(tr.ids_size(), 1);
  EXPECT_EQ(tr.ids(0), 1);  // BOS by the model's rule
  grpc::ClientContext c2;
  v1::DetokenizeRequest d;
  d.mutable_ids()->CopyFrom(tr.ids());
  v1::DetokenizeResponse dr;
  ASSERT_TRUE(stub_->Detokenize(&c2, d, &dr).ok());
  EXPECT_EQ(dr.text(), "Once upon a time");

  grpc::ClientContext c3;
  v1::ModelInfo info;
  ASSERT_TRUE(stub_->GetModelInfo(&c3, {}, &info).ok());
  EXPECT_EQ(info.architecture(), "llama");
  EXPECT_EQ(info.layers(), 5);
  EXPECT_EQ(info.vocab(), 512);
  EXPECT_EQ(info.context(), 256);
  EXPECT_EQ(info.slots(), 4);
  EXPECT_EQ(info.parameters(), 292800u);
  ASSERT_EQ(info.quant_mix_size(), 1);
  EXPECT_EQ(info.quant_mix(0).type(), "f32");

  grpc::ClientContext c4;
  v1::PlanRequest p;
  p.set_gpu_profile("rtx4060-8g");
  p.set_context(4096);
  p.set_slots(2);
  v1::PlanResponse pr;
  ASSERT_TRUE(stub_->Plan(&c4, p, &pr).ok());
  EXPECT_EQ(pr.layers(), 5);
  EXPECT_EQ(pr.layers_resident(), 5);
  EXPECT_TRUE(pr.head_resident());
  // f16 KV: 2 (K and V) x 5 layers x 2 slots x 4096 positions x 32 (kv width) x 2 bytes.
  EXPECT_EQ(pr.kv_cache_bytes(), 2ull * 5 * 2 * 4096 * 32 * 2);
  EXPECT_EQ(pr.total_bytes(), pr.weights_resident_bytes() + pr.staging_bytes() + pr.kv_cache_bytes() +
                                  pr.workspace_bytes() + pr.overhead_bytes() + pr.margin_bytes());
  grpc::ClientContext c5;
  p.set_slots(0);
  EXPECT_EQ(stub_->Plan(&c5, p, &pr).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServerTest, HealthReportsServingForTheServiceAndOverall) {
  auto health = grpc::health::v1::Health::NewStub(grpc::CreateChannel(fast_->target(), grpc::InsecureChannelCredentials()));
  for (const std::string service : {"", "ferry.v1.Inference"}) {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(health->Check(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING) << "'" << service << "'";
  }
}

// A client that never reads its stream does not hold up the others.
TEST_F(ServerTest, AClientThatStopsReadingDoesNotStallOthers) {
  grpc::ClientContext stalled_ctx;
  v1::GenerateRequest long_req = Greedy("Once upon a time", 200);
  long_req.set_ignore_eos(true);
  auto stalled = stub_->Generate(&stalled_ctx, long_req);  // never read
  for (int i = 0; i < 3; ++i) {
    const Generated g = Generate(*stub_, Greedy("The cat", 30));
    ASSERT_TRUE(g.status.ok()) << g.status.error_message();
    EXPECT_EQ(g.last.usage().completion_tokens(), 30);
  }
  stalled_ctx.TryCancel();
  stalled->Finish();
}

// The cut-off itself: a client whose HTTP/2 receive window is small (1 KiB,
// no BDP growth) and that does not read stalls the server's writes; once
// more than --max_buffered_tokens tokens wait for it the server ends the
// request and frees its slot. The client sees CANCELLED: a status with the
// reason would travel in trailers behind the data it does not read, so the
// server resets the stream instead of holding it open.
TEST(ServerCutOff, AClientThatStopsReadingIsCutOffAndItsSlotFreed) {
  const std::string model = testing::StoriesShapedModel();
  ServerProcess server("--model " + model + " --ctx 256 --slots 2 --max_buffered_tokens 4");
  ASSERT_TRUE(server.WaitServing()) << server.output();
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 1024);
  auto stalled = v1::Inference::NewStub(
      grpc::CreateCustomChannel(server.target(), grpc::InsecureChannelCredentials(), args));
  v1::GenerateRequest r = Greedy("Once upon a time", 200);
  r.set_ignore_eos(true);
  r.set_logprobs(true);
  r.set_top_logprobs(5);  // about 100 bytes a token
  grpc::ClientContext ctx;
  auto reader = stalled->Generate(&ctx, r);
  auto watcher = Connect(server.target());
  ASSERT_TRUE(Eventually([&] {
    const v1::Stats s = GetStats(*watcher);
    return s.requests_finished() == 1 && s.running() == 0 && s.kv_tokens_used() == 0;
  })) << "the stalled request was not ended; the server said:\n" << server.output();
  // What the window let through, then the reason.
  int tokens = 0;
  v1::GenerateResponse m;
  while (reader->Read(&m)) tokens += m.token_ids_size();
  const grpc::Status st = reader->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::CANCELLED) << st.error_message();
  EXPECT_LT(tokens, 200);
  EXPECT_LT(GetStats(*watcher).generated_tokens(), 200u);
  // The server goes on serving.
  EXPECT_TRUE(Generate(*watcher, Greedy("The cat", 3)).status.ok());
}

TEST_F(ServerTest, LoadgenReportsLatencyPercentilesAndErrorsByCode) {
  const std::string cmd = std::string(FERRY_BINARY) + " loadgen --target " + fast_->target() +
                          " --concurrency 4 --requests 8 -n 16 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  EXPECT_EQ(pclose(p), 0) << out;
  EXPECT_THAT(out, HasSubstr("requests: 8 ok in"));
  EXPECT_THAT(out, HasSubstr("(128 tokens)"));  // 8 x 16: the end-of-generation token is ignored
  EXPECT_THAT(out, ::testing::ContainsRegex("time to first token +p50 +[0-9.]+ ms +p90 +[0-9.]+ ms +p99"));
  EXPECT_THAT(out, HasSubstr("(120 samples)"));  // 8 x 15 gaps between tokens
  // Against nothing: every request fails, by code.
  const std::string bad = std::string(FERRY_BINARY) + " loadgen --target 127.0.0.1:1 --requests 2 -n 4 2>&1";
  p = popen(bad.c_str(), "r");
  out.clear();
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  pclose(p);
  EXPECT_THAT(out, HasSubstr("requests: 0 ok, 2 UNAVAILABLE"));
}

// Servers of their own, on the slow device.
class SlowServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = testing::StoriesShapedModel();
  }
  std::unique_ptr<ServerProcess> Start(const std::string& extra) {
    auto s = std::make_unique<ServerProcess>("--model " + model_ + " --ctx 256 " + kSlowDevice + " " + extra);
    if (!s->WaitServing()) {
      ADD_FAILURE() << s->output();
      return nullptr;
    }
    return s;
  }
  std::string model_;
};

TEST_F(SlowServerTest, MessageSizeAndStreamsPerConnectionLimits) {
  auto server = Start("--slots 4 --max_message_bytes 65536 --max_streams_per_connection 1");
  ASSERT_NE(server, nullptr);
  auto stub = Connect(server->target());
  // A request past --max_message_bytes is refused by gRPC before ferry sees it.
  const Generated big = Generate(*stub, Greedy(std::string(100000, 'a'), 4));
  EXPECT_EQ(big.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << big.status.error_message();
  // Two calls on one connection run one at a time; other connections are not limited.
  v1::GenerateRequest r = Greedy("Once upon a time", 12);
  r.set_ignore_eos(true);
  Generated a, b;
  std::thread ta([&] { a = Generate(*stub, r); });
  std::thread tb([&] { b = Generate(*stub, r); });
  // A connection of its own (channels with equal arguments share one).
  grpc::ChannelArguments own;
  own.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto watcher = v1::Inference::NewStub(
      grpc::CreateCustomChannel(server->target(), grpc::InsecureChannelCredentials(), own));
  int most_running = 0;
  for (int i = 0; i < 40; ++i) {
    most_running = std::max(most_running, GetStats(*watcher).running());
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  ta.join();
  tb.join();
  EXPECT_TRUE(a.status.ok() && b.status.ok()) << a.status.error_message() << " / " << b.status.error_message();
  EXPECT_EQ(most_running, 1) << "--max_streams_per_connection 1 let two calls of one connection run together";
}

TEST_F(SlowServerTest, CancelMidStreamFreesTheSlot) {
  auto server = Start("--slots 2");
  ASSERT_NE(server, nullptr);
  auto stub = Connect(server->target());
  v1::GenerateRequest r = Greedy("Once upon a time", 200);
  r.set_ignore_eos(true);
  int seen = 0;
  bool running_seen = false;
  const Generated g = Generate(*stub, r, {}, [&](const v1::GenerateResponse&, grpc::ClientContext& ctx) {
    if (++seen == 3) {
      running_seen = GetStats(*stub).running() == 1;
      ctx.TryCancel();
    }
  });
  EXPECT_TRUE(running_seen);
  EXPECT_EQ(g.status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(Eventually([&] {
    const v1::Stats s = GetStats(*stub);
    return s.running() == 0 && s.kv_tokens_used() == 0 && s.requests_finished() == 1;
  }));
  // The freed slot serves the next request.
  EXPECT_TRUE(Generate(*stub, Greedy("The cat", 3)).status.ok());
}

// Keepalive enforcement (--min_ping_interval_ms): a client that pings as
// often as gRPC lets it (asked for 100 ms; gRPC's client sends about one a
// second) while its call waits in the queue (no data flows to it) is
// disconnected by a server that allows one ping per 5 s (the third early
// ping ends the connection); the same client against a server that allows
// one per 10 ms gets its answer after the ~5 s wait.
TEST_F(SlowServerTest, KeepaliveEnforcementDisconnectsAFastPinger) {
  for (const bool strict : {true, false}) {
    SCOPED_TRACE(strict ? "--min_ping_interval_ms 5000" : "--min_ping_interval_ms 10");
    auto server = Start(std::string("--slots 1 --min_ping_interval_ms ") + (strict ? "5000" : "10"));
    ASSERT_NE(server, nullptr);
    auto watcher = Connect(server->target());
    v1::GenerateRequest long_req = Greedy("Once upon a time", 120);
    long_req.set_ignore_eos(true);
    std::thread occupant([&] { Generate(*Connect(server->target()), long_req); });  // holds the only slot
    ASSERT_TRUE(Eventually([&] { return GetStats(*watcher).running() == 1; }));
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 100);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    auto pinger =
        v1::Inference::NewStub(grpc::CreateCustomChannel(server->target(), grpc::InsecureChannelCredentials(), args));
    const auto start = std::chrono::steady_clock::now();
    const Generated g = Generate(*pinger, Greedy("The cat", 3));
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    occupant.join();
    if (strict) {
      EXPECT_EQ(g.status.error_code(), grpc::StatusCode::UNAVAILABLE) << g.status.error_message();
    } else {
      EXPECT_TRUE(g.status.ok()) << g.status.error_message();
      EXPECT_GT(waited, 3.5) << "the call did not wait long enough for pings to matter";
    }
  }
}

TEST_F(SlowServerTest, DeadlineEndsTheRequestAndFreesTheSlot) {
  auto server = Start("--slots 2");
  ASSERT_NE(server, nullptr);
  auto stub = Connect(server->target());
  v1::GenerateRequest r = Greedy("Once upon a time", 200);
  r.set_ignore_eos(true);
  const Generated g = Generate(*stub, r, [](grpc::ClientContext& ctx) {
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(400));
  });
  EXPECT_EQ(g.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(Eventually([&] { return GetStats(*stub).running() == 0; }));
}

TEST_F(SlowServerTest, QueueFullIsResourceExhaustedWithTheLimit) {
  auto server = Start("--slots 1 --batch 8 --max_queue 1");
  ASSERT_NE(server, nullptr);
  v1::GenerateRequest r = Greedy("Once upon a time", 100);
  r.set_ignore_eos(true);
  std::vector<std::thread> threads;
  std::vector<Generated> results(2);
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&, i] { results[i] = Generate(*Connect(server->target()), r); });
    auto stub = Connect(server->target());
    // One running, then one waiting.
    ASSERT_TRUE(Eventually([&] { return GetStats(*stub).running() + GetStats(*stub).waiting() == i + 1; }));
  }
  auto stub = Connect(server->target());
  const Generated third = Generate(*stub, r);
  EXPECT_EQ(third.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(third.status.error_message(), HasSubstr("admission queue full"));
  EXPECT_THAT(third.status.error_message(), HasSubstr("limit 1"));
  server->Signal(SIGKILL);
  for (auto& t : threads) t.join();
}

TEST_F(SlowServerTest, SigtermDrainsInFlightThenEndsTheRestUnavailableAndExitsZero) {
  auto server = Start("--slots 2 --drain_seconds 2");
  ASSERT_NE(server, nullptr);
  v1::GenerateRequest short_req = Greedy("Once upon a time", 8);
  short_req.set_ignore_eos(true);
  v1::GenerateRequest long_req = Greedy("The cat", 200);  // ~10 s on this device: outlives the drain
  long_req.set_ignore_eos(true);
  Generated short_result, long_result;
  std::thread a([&] { short_result = Generate(*Connect(server->target()), short_req); });
  std::thread b([&] { long_result = Generate(*Connect(server->target()), long_req); });
  auto stub = Connect(server->target());
  ASSERT_TRUE(Eventually([&] { return GetStats(*stub).running() == 2; }));
  server->Signal(SIGTERM);
  // Health goes NOT_SERVING at once; new work is refused.
  auto health = grpc::health::v1::Health::NewStub(grpc::CreateChannel(server->target(), grpc::InsecureChannelCredentials()));
  EXPECT_TRUE(Eventually([&] {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    return health->Check(&ctx, req, &resp).ok() && resp.status() == grpc::health::v1::HealthCheckResponse::NOT_SERVING;
  }));
  const Generated refused = Generate(*stub, short_req);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  a.join();
  b.join();
  EXPECT_TRUE(short_result.status.ok()) << short_result.status.error_message();
  EXPECT_EQ(short_result.last.usage().completion_tokens(), 8);
  EXPECT_EQ(long_result.status.error_code(), grpc::StatusCode::UNAVAILABLE) << long_result.status.error_message();
  EXPECT_EQ(server->Wait(), 0) << server->output();
  EXPECT_THAT(server->output(), HasSubstr("SIGTERM: draining"));
}

// A device fault ends the running request with INTERNAL and the process
// exits non-zero instead of serving errors.
TEST_F(SlowServerTest, ADeviceFaultIsInternalAndTheProcessExitsNonZero) {
  auto server = std::make_unique<ServerProcess>("--model " + model_ +
                                                " --ctx 256 --device sim:mem=64MiB,overhead=0,fault=500 --gpu_layers 0 --placement stream");
  ASSERT_TRUE(server->WaitServing()) << server->output();
  auto stub = Connect(server->target());
  v1::GenerateRequest r = Greedy("Once upon a time", 100);
  r.set_ignore_eos(true);
  const Generated g = Generate(*stub, r);
  EXPECT_EQ(g.status.error_code(), grpc::StatusCode::INTERNAL) << g.status.error_message();
  EXPECT_THAT(g.status.error_message(), HasSubstr("device fault"));
  EXPECT_GT(g.messages, 0) << "the first steps ran before the injected fault";
  EXPECT_EQ(server->Wait(), 3) << server->output();
  EXPECT_THAT(server->output(), HasSubstr("device fault: the engine is unusable; exiting"));
}

TEST(ServeCli, AFailedModelLoadExitsNonZeroWithTheReason) {
  const std::string bad = TempDir() + "/not-a-model.gguf";
  std::ofstream(bad) << "this is not a GGUF file";
  ServerProcess s("--model " + bad);
  EXPECT_FALSE(s.WaitServing());
  EXPECT_EQ(s.Wait(), 1);
  EXPECT_THAT(s.output(), HasSubstr("cannot load " + bad));
}

// Certificates made with the openssl command line for this test run.
struct Certs {
  std::string dir;
  static std::string Read(const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  bool Make() {
    dir = TempDir() + "/certs";
    fs::create_directories(dir);
    std::ofstream(dir + "/ext.cnf") << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
    const std::string d = dir;
    const std::string key = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes ";
    const std::string cmds[] = {
        "openssl req -x509" + key + "-keyout " + d + "/ca.key -out " + d + "/ca.pem -days 1 -subj /CN=ferry-test-ca",
        "openssl req" + key + "-keyout " + d + "/server.key -out " + d + "/server.csr -subj /CN=localhost",
        "openssl x509 -req -in " + d + "/server.csr -CA " + d + "/ca.pem -CAkey " + d + "/ca.key -CAcreateserial -out " +
            d + "/server.pem -days 1 -extfile " + d + "/ext.cnf",
        "openssl req" + key + "-keyout " + d + "/client.key -out " + d + "/client.csr -subj /CN=ferry-test-client",
        "openssl x509 -req -in " + d + "/client.csr -CA " + d + "/ca.pem -CAkey " + d + "/ca.key -CAcreateserial -out " +
            d + "/client.pem -days 1",
        // A CA nobody trusts, and a client certificate it signed.
        "openssl req -x509" + key + "-keyout " + d + "/other-ca.key -out " + d + "/other-ca.pem -days 1 -subj /CN=other",
        "openssl req" + key + "-keyout " + d + "/rogue.key -out " + d + "/rogue.csr -subj /CN=rogue",
        "openssl x509 -req -in " + d + "/rogue.csr -CA " + d + "/other-ca.pem -CAkey " + d +
            "/other-ca.key -CAcreateserial -out " + d + "/rogue.pem -days 1",
    };
    for (const std::string& c : cmds) {
      if (std::system((c + " >/dev/null 2>&1").c_str()) != 0) return false;
    }
    return true;
  }
  std::unique_ptr<v1::Inference::Stub> Stub(int port, const std::string& client = "") const {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = Read(dir + "/ca.pem");
    if (!client.empty()) {
      o.pem_private_key = Read(dir + "/" + client + ".key");
      o.pem_cert_chain = Read(dir + "/" + client + ".pem");
    }
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride("localhost");
    return v1::Inference::NewStub(
        grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port), grpc::SslCredentials(o), args));
  }
};

grpc::Status Tokenize(v1::Inference::Stub& stub, const std::string& token = "") {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  v1::TokenizeRequest req;
  req.set_text("hello");
  v1::TokenizeResponse resp;
  return stub.Tokenize(&ctx, req, &resp);
}

TEST(ServeSecurity, TlsAndMutualTls) {
  const std::string model = testing::StoriesShapedModel();
  Certs certs;
  ASSERT_TRUE(certs.Make()) << "openssl could not make the test certificates";
  const std::string d = certs.dir;
  {
    ServerProcess s("--model " + model + " --ctx 128 --tls_cert " + d + "/server.pem --tls_key " + d + "/server.key");
    ASSERT_TRUE(s.WaitServing()) << s.output();
    EXPECT_THAT(s.output(), HasSubstr("(gRPC, TLS)"));
    EXPECT_TRUE(Tokenize(*certs.Stub(s.port())).ok());
    // Plaintext to a TLS port fails.
    EXPECT_EQ(Tokenize(*Connect(s.target())).error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  {
    ServerProcess s("--model " + model + " --ctx 128 --tls_cert " + d + "/server.pem --tls_key " + d +
                    "/server.key --tls_client_ca " + d + "/ca.pem");
    ASSERT_TRUE(s.WaitServing()) << s.output();
    EXPECT_THAT(s.output(), HasSubstr("mutual TLS"));
    EXPECT_TRUE(Tokenize(*certs.Stub(s.port(), "client")).ok());
    EXPECT_FALSE(Tokenize(*certs.Stub(s.port())).ok()) << "no client certificate";
    EXPECT_FALSE(Tokenize(*certs.Stub(s.port(), "rogue")).ok()) << "a certificate from another CA";
  }
}

TEST(ServeSecurity, BearerToken) {
  const std::string model = testing::StoriesShapedModel();
  const std::string token_file = TempDir() + "/token";
  std::ofstream(token_file) << "s3cret-token\n";
  fs::permissions(token_file, fs::perms::owner_read | fs::perms::owner_write);  // serve refuses a file others can read
  ServerProcess s("--model " + model + " --ctx 128 --auth_token_file " + token_file);
  ASSERT_TRUE(s.WaitServing()) << s.output();
  auto stub = Connect(s.target());
  grpc::Status st = Tokenize(*stub);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(st.error_message(), HasSubstr("authorization"));
  EXPECT_EQ(Tokenize(*stub, "wrong").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(Tokenize(*stub, "s3cret-token").ok());
  const Generated g = Generate(*stub, Greedy("Once", 4));
  EXPECT_EQ(g.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

}  // namespace
}  // namespace ferry
