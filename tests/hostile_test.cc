// The hostile-load suite (issue 17): the real `ferry serve` on loopback,
// driven the way an attacker or a bad day would drive it, on a model the
// test makes itself with `ferry make-model` (a few hundred KiB: steps take
// well under a millisecond on the cpu device; "slow" servers stream every
// layer through a sim device at 20 MB/s, ~20 ms a step). Every loop is
// bounded and every call has a deadline; each case ends by checking the
// server still answers.
//
//   hostile values for every request field of every RPC
//   a cancel storm (1024 cancels; slots, KV and queue back to zero within
//     one step + 50 ms; the greedy text unchanged afterwards)
//   overload (RESOURCE_EXHAUSTED at once for what does not fit; nothing hangs)
//   64 concurrent streams byte-identical to the same requests run alone
//   a session-heavy mix on 2 slots (no request starves) and idle CPU
//   half-open connections on the gRPC and the metrics port
//   SIGTERM under load, and a signal during the model load
//   the bearer token (every authorization value; the token file's checks)
//   corrupt model files (every refusal names what is wrong)
#include <arpa/inet.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "health_client.grpc.pb.h"
#include "tests/server_process.h"

namespace ferry {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Every layer streamed at 20 MB/s: ~20 ms a step for the test model.
constexpr char kSlowDevice[] = "--device sim:mem=64MiB,overhead=0,h2d=0.02GB/s --gpu_layers 0 --placement stream";

double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// `ferry ARGS`: exit code and output.
std::pair<int, std::string> RunFerry(const std::string& args) {
  const std::string cmd = std::string(FERRY_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::string Dir() {
  const fs::path d = fs::temp_directory_path() / ("ferry_hostile_test_" + std::to_string(getpid()));
  fs::create_directories(d);
  return d.string();
}

// The model every case serves: 2 llama layers of width 64, a 512-token
// SentencePiece-style vocabulary, f32 weights.
const std::string& Model() {
  static const std::string path = [] {
    const std::string p = Dir() + "/tiny.gguf";
    const auto [code, out] = RunFerry("make-model --out " + p +
                                      " --layers 2 --embd 64 --heads 4 --kv_heads 2 --ff 128 --vocab 512 --context 512"
                                      " --type f32");
    EXPECT_EQ(code, 0) << out;
    return p;
  }();
  return path;
}

std::unique_ptr<ServerProcess> Serve(const std::string& args) {
  auto s = std::make_unique<ServerProcess>("--model " + Model() + " --ctx 512 " + args);
  if (!s->WaitServing()) {
    ADD_FAILURE() << "the server did not start:\n" << s->output();
    return nullptr;
  }
  return s;
}

// The server answers a small request, and health says SERVING.
void ExpectAlive(ServerProcess& s) {
  const Generated g = Generate(*Connect(s.target()), Greedy("Once upon a time", 4));
  EXPECT_TRUE(g.status.ok()) << g.status.error_message() << "\n" << s.output();
  auto health = grpc::health::v1::Health::NewStub(grpc::CreateChannel(s.target(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  EXPECT_TRUE(health->Check(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

// The child's CPU seconds (user + system) from /proc.
double ProcessCpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), {});
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));  // after "pid (comm) "
  std::string f;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {  // field 3 is the state
    if (i == 14) utime = std::stoull(f);
    if (i == 15) stime = std::stoull(f);
  }
  return static_cast<double>(utime + stime) / sysconf(_SC_CLK_TCK);
}

// The child's CPU time over wall time while `during` runs.
double CpuShare(pid_t pid, const std::function<void()>& during) {
  const double cpu0 = ProcessCpuSeconds(pid);
  const Clock::time_point t0 = Clock::now();
  during();
  return (ProcessCpuSeconds(pid) - cpu0) / Since(t0);
}

// ---------------------------------------------------------------------------
// Hostile values for every field.

struct BadCase {
  std::string name;
  std::function<void(v1::GenerateRequest&)> edit;
  grpc::StatusCode code;
  std::string message;
};

TEST(Hostile, EveryRequestFieldRefusesHostileValues) {
  auto server = Serve("--slots 2 --max_prompt_tokens 64");
  ASSERT_NE(server, nullptr);
  auto stub = Connect(server->target());
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const auto IA = grpc::StatusCode::INVALID_ARGUMENT;
  std::vector<BadCase> cases = {
      // prompt
      {"no prompt", [](auto& r) { r.clear_text(); }, IA, "prompt is empty"},
      {"empty text", [](auto& r) { r.set_text(""); }, IA, "prompt text is empty"},
      {"invalid utf-8", [](auto& r) { r.set_text("a\xff\xfe"); }, IA, "not valid UTF-8"},
      {"overlong utf-8", [](auto& r) { r.set_text("\xc0\xaf"); }, IA, "not valid UTF-8"},
      {"surrogate", [](auto& r) { r.set_text("\xed\xa0\x80"); }, IA, "not valid UTF-8"},
      {"text past the byte limit", [](auto& r) { r.set_text(std::string(3 << 20, 'a')); }, IA,
       "bytes; at most"},
      {"text of many tokens", [](auto& r) { r.set_text(std::string(200, '~')); }, IA, "the limit is 64"},
      {"empty token list", [](auto& r) { r.mutable_tokens(); }, IA, "prompt tokens are empty"},
      {"token id 512", [](auto& r) { r.mutable_tokens()->add_ids(512); }, IA, "outside the vocabulary [0, 512)"},
      {"token id INT_MIN", [](auto& r) { r.mutable_tokens()->add_ids(INT_MIN); }, IA, "outside the vocabulary"},
      {"token id INT_MAX", [](auto& r) { r.mutable_tokens()->add_ids(INT_MAX); }, IA, "outside the vocabulary"},
      {"100000 token ids", [](auto& r) { for (int i = 0; i < 100000; ++i) r.mutable_tokens()->add_ids(-1); }, IA,
       "the prompt has 100000 tokens; the limit is 64"},
      {"chat without template", [](auto& r) { r.mutable_chat()->add_messages()->set_content("hi"); },
       grpc::StatusCode::FAILED_PRECONDITION, "no chat template"},
      {"chat of no messages", [](auto& r) { r.mutable_chat(); }, grpc::StatusCode::FAILED_PRECONDITION,
       "no chat template"},
      // length
      {"max_tokens -1", [](auto& r) { r.set_max_tokens(-1); }, IA, "max_tokens = -1 is outside [0, 512]"},
      {"max_tokens INT_MIN", [](auto& r) { r.set_max_tokens(INT_MIN); }, IA, "is outside [0, 512]"},
      {"max_tokens INT_MAX", [](auto& r) { r.set_max_tokens(INT_MAX); }, IA, "is outside [0, 512]"},
      {"prompt + max_tokens past the context", [](auto& r) { r.set_max_tokens(512); }, IA, "exceeds the context"},
      // stops
      {"17 stops", [](auto& r) { for (int i = 0; i < 17; ++i) r.add_stop(absl::StrCat("x", i)); }, IA,
       "17 stop sequences; the limit is 16"},
      {"100000 stops", [](auto& r) { for (int i = 0; i < 100000; ++i) r.add_stop("x"); }, IA,
       "100000 stop sequences"},
      {"empty stop", [](auto& r) { r.add_stop(""); }, IA, "stop sequence 0 is empty"},
      {"long stop", [](auto& r) { r.add_stop(std::string(257, 'a')); }, IA, "the limit is 256"},
      {"stop not utf-8", [](auto& r) { r.add_stop("\xc3"); }, IA, "stop sequence 0 is not valid UTF-8"},
      {"stop token id 512", [](auto& r) { r.add_stop_token_ids(512); }, IA, "stop_token_ids 0 = 512"},
      {"stop token id -1", [](auto& r) { r.add_stop_token_ids(-1); }, IA, "stop_token_ids 0 = -1"},
      {"100000 stop token ids", [](auto& r) { for (int i = 0; i < 100000; ++i) r.add_stop_token_ids(-1); }, IA,
       "100000 stop token ids; the limit is 64"},
      // sampling
      {"temperature NaN", [=](auto& r) { r.mutable_sampling()->set_temperature(nan); }, IA, "temperature"},
      {"temperature inf", [=](auto& r) { r.mutable_sampling()->set_temperature(inf); }, IA, "temperature"},
      {"temperature -1", [](auto& r) { r.mutable_sampling()->set_temperature(-1); }, IA, "temperature = -1"},
      {"temperature 1e30", [](auto& r) { r.mutable_sampling()->set_temperature(1e30f); }, IA, "temperature"},
      {"top_k -1", [](auto& r) { r.mutable_sampling()->set_top_k(-1); }, IA, "top_k = -1"},
      {"top_k INT_MAX", [](auto& r) { r.mutable_sampling()->set_top_k(INT_MAX); }, IA, "top_k"},
      {"top_p 0", [](auto& r) { r.mutable_sampling()->set_top_p(0); }, IA, "top_p = 0 is outside (0, 1]"},
      {"top_p NaN", [=](auto& r) { r.mutable_sampling()->set_top_p(nan); }, IA, "top_p"},
      {"top_p -inf", [=](auto& r) { r.mutable_sampling()->set_top_p(-inf); }, IA, "top_p"},
      {"min_p 2", [](auto& r) { r.mutable_sampling()->set_min_p(2); }, IA, "min_p"},
      {"min_p NaN", [=](auto& r) { r.mutable_sampling()->set_min_p(nan); }, IA, "min_p"},
      {"typical_p 0", [](auto& r) { r.mutable_sampling()->set_typical_p(0); }, IA, "typical_p"},
      {"typical_p inf", [=](auto& r) { r.mutable_sampling()->set_typical_p(inf); }, IA, "typical_p"},
      {"repetition_penalty 0", [](auto& r) { r.mutable_sampling()->set_repetition_penalty(0); }, IA,
       "repetition_penalty"},
      {"repetition_penalty -inf", [=](auto& r) { r.mutable_sampling()->set_repetition_penalty(-inf); }, IA,
       "repetition_penalty"},
      {"presence_penalty inf", [=](auto& r) { r.mutable_sampling()->set_presence_penalty(inf); }, IA,
       "presence_penalty"},
      {"presence_penalty NaN", [=](auto& r) { r.mutable_sampling()->set_presence_penalty(nan); }, IA,
       "presence_penalty"},
      {"frequency_penalty 1e6", [](auto& r) { r.mutable_sampling()->set_frequency_penalty(1e6f); }, IA,
       "frequency_penalty"},
      {"penalty_last_n -1", [](auto& r) { r.mutable_sampling()->set_penalty_last_n(-1); }, IA, "penalty_last_n"},
      {"penalty_last_n INT_MAX", [](auto& r) { r.mutable_sampling()->set_penalty_last_n(INT_MAX); }, IA,
       "penalty_last_n"},
      {"logit_bias token 512", [](auto& r) { (*r.mutable_sampling()->mutable_logit_bias())[512] = 1; }, IA,
       "logit_bias token 512"},
      {"logit_bias token -1", [](auto& r) { (*r.mutable_sampling()->mutable_logit_bias())[-1] = 1; }, IA,
       "logit_bias token -1"},
      {"logit_bias NaN", [=](auto& r) { (*r.mutable_sampling()->mutable_logit_bias())[5] = nan; }, IA, "is NaN"},
      {"logit_bias +inf", [=](auto& r) { (*r.mutable_sampling()->mutable_logit_bias())[5] = inf; }, IA,
       "logit_bias for token 5 = inf is outside [-100, 100]"},
      {"logit_bias -inf", [=](auto& r) { (*r.mutable_sampling()->mutable_logit_bias())[5] = -inf; }, IA,
       "is outside [-100, 100]"},
      {"logit_bias 3.4e38", [](auto& r) { (*r.mutable_sampling()->mutable_logit_bias())[5] = 3.4e38f; }, IA,
       "is outside [-100, 100]"},
      {"logit_bias entries past the vocabulary",
       [](auto& r) {
         for (int i = 0; i < 600; ++i) (*r.mutable_sampling()->mutable_logit_bias())[i] = 1;
       },
       IA, "logit_bias has 600 entries"},
      // logprobs
      {"top_logprobs without logprobs", [](auto& r) { r.set_top_logprobs(2); }, IA, "top_logprobs needs logprobs"},
      {"top_logprobs 21", [](auto& r) { r.set_logprobs(true); r.set_top_logprobs(21); }, IA, "top_logprobs = 21"},
      {"top_logprobs -1", [](auto& r) { r.set_logprobs(true); r.set_top_logprobs(-1); }, IA, "top_logprobs = -1"},
      {"top_logprobs INT_MIN", [](auto& r) { r.set_logprobs(true); r.set_top_logprobs(INT_MIN); }, IA,
       "top_logprobs"},
      // session
      {"session_id of 257 bytes", [](auto& r) { r.set_session_id(std::string(257, 's')); }, IA, "session_id"},
      {"session_id of 1 MiB", [](auto& r) { r.set_session_id(std::string(1 << 20, 's')); }, IA, "session_id"},
  };
  for (const BadCase& c : cases) {
    v1::GenerateRequest r = Greedy("Once upon a time", 8);
    c.edit(r);
    const Clock::time_point t0 = Clock::now();
    const Generated g = Generate(*stub, r);
    EXPECT_EQ(g.status.error_code(), c.code) << c.name << ": " << g.status.error_message();
    EXPECT_THAT(g.status.error_message(), HasSubstr(c.message)) << c.name;
    EXPECT_EQ(g.messages, 0) << c.name;
    EXPECT_LT(Since(t0), 30.0) << c.name;
  }
  // Values that are hostile-looking but valid run.
  for (const auto& edit : std::vector<std::function<void(v1::GenerateRequest&)>>{
           [](auto& r) { r.set_seed(UINT64_MAX); },
           [](auto& r) { r.set_max_tokens(0); },
           [](auto& r) { r.set_text(std::string("a\0b", 3)); },
           [](auto& r) { r.set_echo(true); r.set_logprobs(true); r.set_top_logprobs(20); },
           [](auto& r) { r.mutable_sampling()->set_top_k(512); r.mutable_sampling()->set_temperature(100); },
           [](auto& r) { (*r.mutable_sampling()->mutable_logit_bias())[7] = -100; },
           [](auto& r) { r.set_session_id(std::string(256, '\xff')); },
       }) {
    v1::GenerateRequest r = Greedy("Once upon a time", 4);
    edit(r);
    const Generated g = Generate(*stub, r);
    EXPECT_TRUE(g.status.ok()) << g.status.error_message();
    for (const v1::TokenLogprob& lp : g.last.logprobs()) EXPECT_TRUE(std::isfinite(lp.logprob()));
  }

  // Tokenize, Detokenize and Plan.
  auto tokenize = [&](const std::string& text) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::TokenizeRequest t;
    t.set_text(text);
    v1::TokenizeResponse resp;
    return stub->Tokenize(&ctx, t, &resp);
  };
  grpc::Status st = tokenize(std::string(3 << 20, 'a'));
  EXPECT_EQ(st.error_code(), IA);
  EXPECT_THAT(st.error_message(), HasSubstr("bytes; at most"));
  EXPECT_EQ(tokenize("\xff").error_code(), IA);
  EXPECT_TRUE(tokenize(std::string(64, 'a')).ok());
  for (const std::vector<int32_t>& ids : {std::vector<int32_t>{512}, std::vector<int32_t>{-1},
                                          std::vector<int32_t>{INT_MIN}, std::vector<int32_t>(200000, 600)}) {
    grpc::ClientContext ctx;
    v1::DetokenizeRequest d;
    for (int32_t id : ids) d.add_ids(id);
    v1::DetokenizeResponse resp;
    EXPECT_EQ(stub->Detokenize(&ctx, d, &resp).error_code(), IA);
  }
  {
    grpc::ClientContext ctx;
    v1::DetokenizeRequest d;
    for (int i = 0; i < 200000; ++i) d.add_ids(300 + i % 200);  // long but valid
    v1::DetokenizeResponse resp;
    EXPECT_TRUE(stub->Detokenize(&ctx, d, &resp).ok());
  }
  const std::vector<std::pair<std::function<void(v1::PlanRequest&)>, std::string>> plans = {
      {[](auto& p) { p.set_context(0); }, "context = 0"},
      {[](auto& p) { p.set_context(INT_MAX); }, "context = 2147483647"},
      {[](auto& p) { p.set_slots(-1); }, "slots = -1"},
      {[](auto& p) { p.set_slots(1 << 20); }, "slots = 1048576"},
      {[](auto& p) { p.set_max_batch_tokens(0); }, "max_batch_tokens = 0"},
      {[](auto& p) { p.set_ring_depth(1000); }, "ring_depth = 1000"},
      {[](auto& p) { p.set_kv_type("q4"); }, "kv_type must be f16 or f32"},
      {[](auto& p) { p.set_gpu_layers(-5); }, "gpu_layers = -5"},
      {[](auto& p) { p.set_gpu_layers(99); }, "gpu_layers = 99"},
      {[](auto& p) { p.set_gpu_profile(std::string(1000, 'x')); }, "profile"},
  };
  for (const auto& [edit, message] : plans) {
    grpc::ClientContext ctx;
    v1::PlanRequest p;
    edit(p);
    v1::PlanResponse resp;
    st = stub->Plan(&ctx, p, &resp);
    EXPECT_NE(st.error_code(), grpc::StatusCode::OK) << message;
    EXPECT_THAT(st.error_message(), HasSubstr(message));
  }
  {
    grpc::ClientContext ctx;
    v1::PlanRequest p;
    p.set_gpu_memory_bytes(UINT64_MAX);
    p.set_context(1 << 20);
    p.set_slots(4096);
    p.set_max_batch_tokens(65536);
    p.set_kv_type("f32");
    v1::PlanResponse resp;
    st = stub->Plan(&ctx, p, &resp);
    EXPECT_TRUE(st.ok() || st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  }
  ExpectAlive(*server);
}

// ---------------------------------------------------------------------------
// A cancel storm.

TEST(Hostile, CancelStormLeavesNothingBehind) {
  auto server = Serve("--slots 4 --max_queue 64");
  ASSERT_NE(server, nullptr);
  auto stub = Connect(server->target());
  const v1::GenerateRequest golden_req = Greedy("Once upon a time", 48);
  const Generated before = Generate(*stub, golden_req);
  ASSERT_TRUE(before.status.ok());
  const auto [gen_code, gen_out] =
      RunFerry("generate --model " + Model() + " --prompt 'Once upon a time' -n 48 --temperature 0 --ctx 512");
  ASSERT_EQ(gen_code, 0) << gen_out;
  EXPECT_THAT(gen_out, HasSubstr(before.text)) << "the server's greedy text is not ferry generate's";

  constexpr int kThreads = 16, kEach = 64;  // 1024 cancelled calls
  const Clock::time_point budget = Clock::now() + std::chrono::seconds(120);  // a wedged server: the count fails
  std::atomic<int> cancelled{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Connections of their own for half the threads, one shared for the rest.
      grpc::ChannelArguments args;
      args.SetInt("hostile.worker", t % 2 == 0 ? t : -1);
      auto s = v1::Inference::NewStub(
          grpc::CreateCustomChannel(server->target(), grpc::InsecureChannelCredentials(), args));
      std::mt19937 rng(t);
      for (int i = 0; i < kEach && Clock::now() < budget; ++i) {
        v1::GenerateRequest r = Greedy(i % 3 == 0 ? "Once upon a time" : "The little dog", 200);
        r.set_ignore_eos(true);
        if (rng() % 4 == 0) r.set_session_id(absl::StrCat("s", rng() % 3));
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        auto reader = s->Generate(&ctx, r);
        const int after = static_cast<int>(rng() % 6);  // messages before the cancel; 0: at once
        v1::GenerateResponse m;
        for (int k = 0; k < after && reader->Read(&m); ++k) {
        }
        ctx.TryCancel();
        while (reader->Read(&m)) {
        }
        const grpc::Status st = reader->Finish();
        (st.error_code() == grpc::StatusCode::CANCELLED ? cancelled : other)++;
      }
    });
  }
  for (auto& t : threads) t.join();
  const Clock::time_point last = Clock::now();
  ASSERT_EQ(cancelled.load() + other.load(), kThreads * kEach) << "the storm did not finish in 120 s";
  EXPECT_GE(cancelled.load(), 1000) << other.load() << " calls ended otherwise";
  // Back to zero within one step + 50 ms of the last cancel.
  v1::Stats s;
  double waited = 0;
  for (;;) {
    s = GetStats(*stub);
    waited = Since(last);
    if ((s.running() == 0 && s.waiting() == 0 && s.kv_tokens_used() == 0) || waited > 30) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  const double step = s.steps() > 0 ? s.step_seconds() / static_cast<double>(s.steps()) : 0;
  std::printf("cancel storm: %d cancelled; slots, queue and KV at zero %.1f ms after the last cancel (mean step %.2f ms)\n",
              cancelled.load(), 1e3 * waited, 1e3 * step);
  EXPECT_EQ(s.running(), 0);
  EXPECT_EQ(s.waiting(), 0);
  EXPECT_EQ(s.kv_tokens_used(), 0);
  EXPECT_LE(waited, step + 0.05) << "slots, queue and KV took " << waited << " s to empty (mean step " << step << " s)";
  const Generated after = Generate(*stub, golden_req);
  ASSERT_TRUE(after.status.ok());
  EXPECT_EQ(after.text, before.text);
  EXPECT_EQ(after.ids, before.ids);
  ExpectAlive(*server);
}

// ---------------------------------------------------------------------------
// Overload.

TEST(Hostile, OverloadIsRefusedAtOnceAndNothingHangs) {
  auto server = Serve(std::string("--slots 2 --max_queue 4 ") + kSlowDevice);
  ASSERT_NE(server, nullptr);
  constexpr int kCalls = 40;
  v1::GenerateRequest r = Greedy("Once upon a time", 100);  // ~2 s each on this device
  r.set_ignore_eos(true);
  std::vector<Generated> results(kCalls);
  std::vector<double> latency(kCalls);
  std::vector<std::thread> threads;
  std::atomic<int> ready{0};
  for (int i = 0; i < kCalls; ++i) {
    threads.emplace_back([&, i] {
      auto stub = Connect(server->target());
      ++ready;
      while (ready.load() < kCalls) std::this_thread::yield();
      const Clock::time_point t0 = Clock::now();
      results[i] = Generate(*stub, r);
      latency[i] = Since(t0);
    });
  }
  for (auto& t : threads) t.join();
  int ok = 0, exhausted = 0;
  double slowest_refusal = 0, fastest_ok = 1e9;
  for (int i = 0; i < kCalls; ++i) {
    if (results[i].status.ok()) {
      ++ok;
      fastest_ok = std::min(fastest_ok, latency[i]);
    } else {
      EXPECT_EQ(results[i].status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << results[i].status.error_message();
      EXPECT_THAT(results[i].status.error_message(), HasSubstr("admission queue full"));
      ++exhausted;
      slowest_refusal = std::max(slowest_refusal, latency[i]);
    }
  }
  EXPECT_LE(ok, 2 + 4 + 2) << "more ran than the slots and the queue hold";
  EXPECT_GE(exhausted, kCalls - 8);
  EXPECT_LT(slowest_refusal, fastest_ok) << "a refusal waited as long as a request that ran";
  ExpectAlive(*server);
}

// ---------------------------------------------------------------------------
// Concurrency does not change any request's output.

TEST(Hostile, SixtyFourConcurrentStreamsEqualTheirRunsAlone) {
  auto server = Serve("--slots 8 --max_queue 64");
  ASSERT_NE(server, nullptr);
  auto stub = Connect(server->target());
  constexpr int kStreams = 64;
  const char* prompts[] = {"Once upon a time", "The little dog", "Lily and Ben went to", "A", "Tim had a big red"};
  std::vector<v1::GenerateRequest> reqs;
  for (int i = 0; i < kStreams; ++i) {
    v1::GenerateRequest r = Greedy(prompts[i % 5], 16 + i % 24);
    r.set_ignore_eos(true);
    if (i % 4 == 1) {  // seeded sampling: the same draws whatever else runs
      r.mutable_sampling()->set_temperature(0.9f);
      r.set_seed(1000 + i);
    }
    if (i % 8 == 3) r.set_session_id(absl::StrCat("sess", i % 3));
    if (i % 8 == 5) {
      r.set_logprobs(true);
      r.set_top_logprobs(3);
    }
    reqs.push_back(r);
  }
  std::vector<Generated> alone(kStreams), together(kStreams);
  for (int i = 0; i < kStreams; ++i) alone[i] = Generate(*stub, reqs[i]);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] { together[i] = Generate(*Connect(server->target()), reqs[i]); });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_TRUE(alone[i].status.ok()) << alone[i].status.error_message();
    ASSERT_TRUE(together[i].status.ok()) << i << ": " << together[i].status.error_message();
    EXPECT_EQ(together[i].text, alone[i].text) << "stream " << i;
    EXPECT_EQ(together[i].ids, alone[i].ids) << "stream " << i;
  }
  ExpectAlive(*server);
}

// ---------------------------------------------------------------------------
// Sessions never starve anyone; an idle server sleeps.

TEST(Hostile, ASessionHeavyMixStarvesNoRequestAndAnIdleServerSleeps) {
  auto server = Serve("--slots 2 --max_queue 256");
  ASSERT_NE(server, nullptr);
  auto stub = Connect(server->target());
  // The sequence: sessions alpha and beta each leave a slot behind,
  // then a request of no session and one of a third arrive.
  for (const char* session : {"alpha", "beta"}) {
    v1::GenerateRequest r = Greedy("Once upon a time", 4);
    r.set_session_id(session);
    ASSERT_TRUE(Generate(*stub, r).status.ok());
  }
  Generated plain, gamma;
  const double busy = CpuShare(server->pid(), [&] {
    v1::GenerateRequest a = Greedy("The little dog", 4), b = Greedy("Lily and Ben", 4);
    b.set_session_id("gamma");
    auto deadline = [](grpc::ClientContext& ctx) {
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
    };
    std::thread ta([&] { plain = Generate(*Connect(server->target()), a, deadline); });
    std::thread tb([&] { gamma = Generate(*Connect(server->target()), b, deadline); });
    ta.join();
    tb.join();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  });
  EXPECT_TRUE(plain.status.ok()) << "no session: " << plain.status.error_message();
  EXPECT_TRUE(gamma.status.ok()) << "session gamma: " << gamma.status.error_message();
  EXPECT_LT(busy, 0.5) << "server CPU over wall time while those two arrived";

  // 240 requests over 8 sessions and none, 24 at a time, on 2 slots.
  constexpr int kThreads = 24, kEach = 10;
  const Clock::time_point budget = Clock::now() + std::chrono::seconds(60);  // a starving server: the count fails
  std::atomic<int> ok{0};
  std::vector<std::string> failures;
  std::mutex mu;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto s = Connect(server->target());
      std::mt19937 rng(100 + t);
      for (int i = 0; i < kEach && Clock::now() < budget; ++i) {
        const int session = static_cast<int>(rng() % 9);
        v1::GenerateRequest r = Greedy(session % 2 ? "Once upon a time" : "The little dog", 6);
        r.set_ignore_eos(true);
        if (session < 8) r.set_session_id(absl::StrCat("user", session));
        const Generated g = Generate(*s, r, [](grpc::ClientContext& ctx) {
          ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
        });
        if (g.status.ok() && g.last.usage().completion_tokens() == 6) {
          ++ok;
        } else {
          std::lock_guard<std::mutex> l(mu);
          failures.push_back(absl::StrCat(g.status.error_code(), " ", g.status.error_message()));
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kThreads * kEach) << (failures.empty() ? "" : failures[0]);

  // Nothing to do: the server sleeps.
  const double idle = CpuShare(server->pid(), [] { std::this_thread::sleep_for(std::chrono::seconds(2)); });
  EXPECT_LT(idle, 0.05) << "server CPU over wall time with nothing to do";
  ExpectAlive(*server);
}

// ---------------------------------------------------------------------------
// Half-open connections.

// A connected socket that sent `bytes` and then nothing.
int HalfOpen(int port, const std::string& bytes) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  if (!bytes.empty()) (void)!send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  return fd;
}

// GET path on the metrics port: (status code or -1, seconds).
std::pair<int, double> HttpGet(int port, const std::string& path) {
  const Clock::time_point t0 = Clock::now();
  const int fd = HalfOpen(port, "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  if (fd < 0) return {-1, Since(t0)};
  std::string reply;
  char buf[4096];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 5000) <= 0) break;  // 5 s: a probe that is that slow has failed anyway
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    reply.append(buf, n);
  }
  close(fd);
  int code = -1;
  if (reply.rfind("HTTP/1.1 ", 0) == 0 && reply.size() >= 12) code = std::stoi(reply.substr(9, 3));
  return {code, Since(t0)};
}

TEST(Hostile, HalfOpenConnectionsLeaveProbesAndCallsAnswering) {
  auto server = Serve("--slots 2");
  ASSERT_NE(server, nullptr);
  ASSERT_GT(server->metrics_port(), 0);
  std::vector<int> held;
  for (int i = 0; i < 8; ++i) held.push_back(HalfOpen(server->metrics_port(), "GET /hea"));  // half a request line
  for (int i = 0; i < 8; ++i) held.push_back(HalfOpen(server->metrics_port(), ""));  // connected, silent
  for (int i = 0; i < 8; ++i) held.push_back(HalfOpen(server->port(), "PRI * HTTP/2.0\r\n"));  // half a preface
  for (int i = 0; i < 8; ++i) held.push_back(HalfOpen(server->port(), ""));
  for (int fd : held) ASSERT_GE(fd, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  for (int round = 0; round < 3; ++round) {
    for (const std::string path : {"/healthz", "/readyz", "/metrics"}) {
      const auto [code, seconds] = HttpGet(server->metrics_port(), path);
      EXPECT_EQ(code, 200) << path;
      EXPECT_LT(seconds, 1.0) << path << " answered in " << seconds << " s with 16 connections held half-open";
    }
    const Clock::time_point t0 = Clock::now();
    const Generated g = Generate(*Connect(server->target()), Greedy("Once upon a time", 4));
    EXPECT_TRUE(g.status.ok()) << g.status.error_message();
    EXPECT_LT(Since(t0), 1.0) << "a Generate call with 16 gRPC connections held half-open";
  }
  for (int fd : held) close(fd);
  ExpectAlive(*server);
}

// ---------------------------------------------------------------------------
// Signals.

TEST(Hostile, SigtermUnderLoadFinishesOrRefusesEveryCallAndExitsZero) {
  auto server = Serve(std::string("--slots 2 --max_queue 16 --drain_seconds 1 ") + kSlowDevice);
  ASSERT_NE(server, nullptr);
  constexpr int kCalls = 12;
  std::vector<Generated> results(kCalls);
  std::vector<std::thread> threads;
  for (int i = 0; i < kCalls; ++i) {
    threads.emplace_back([&, i] {
      v1::GenerateRequest r = Greedy("Once upon a time", i % 2 ? 8 : 300);
      r.set_ignore_eos(true);
      results[i] = Generate(*Connect(server->target()), r);
    });
  }
  auto watcher = Connect(server->target());
  ASSERT_TRUE(Eventually([&] { return GetStats(*watcher).running() == 2; }));
  server->Signal(SIGTERM);
  for (auto& t : threads) t.join();
  int ok = 0, unavailable = 0;
  for (const Generated& g : results) {
    if (g.status.ok()) {
      ++ok;
    } else {
      EXPECT_EQ(g.status.error_code(), grpc::StatusCode::UNAVAILABLE) << g.status.error_message();
      ++unavailable;
    }
  }
  EXPECT_EQ(ok + unavailable, kCalls);
  EXPECT_GE(unavailable, 1) << "the 300-token requests outlive a 1 s drain";
  EXPECT_EQ(server->Wait(), 0) << server->output();
}

// Issue 17, item 6: a signal while the model loaded ended the process with
// status 0. The model has a 3-million-token vocabulary (~2 s to load on
// the 2-core VM); the signal goes as soon as the server says it is listening.
TEST(Hostile, ASignalDuringTheModelLoadExitsNonZero) {
  const std::string big = Dir() + "/vocab-3m.gguf";
  const auto [code, out] = RunFerry("make-model --out " + big +
                                    " --layers 1 --embd 16 --heads 2 --kv_heads 1 --ff 32 --vocab 3000000 --type f16"
                                    " --tied_output");
  ASSERT_EQ(code, 0) << out;
  ServerProcess s("--model " + big + " --ctx 64");
  ASSERT_TRUE(s.WaitOutput("listening on")) << s.output();
  s.Signal(SIGTERM);
  const int exit_code = s.Wait();
  fs::remove(big);
  if (s.output().find("ferry: serving") != std::string::npos) {
    GTEST_SKIP() << "the model loaded before the signal arrived; nothing was checked";
  }
  EXPECT_EQ(exit_code, 128 + SIGTERM) << s.output();
  EXPECT_THAT(s.output(), HasSubstr("SIGTERM during model load: exiting without serving"));
}

// ---------------------------------------------------------------------------
// The bearer token.

std::string TokenFile(const std::string& name, const std::string& content, fs::perms perms) {
  const std::string path = Dir() + "/" + name;
  std::ofstream(path, std::ios::trunc) << content;
  fs::permissions(path, perms);
  return path;
}

TEST(Hostile, EveryAuthorizationValueIsCheckedAndTheTokenFileToo) {
  const auto owner = fs::perms::owner_read | fs::perms::owner_write;
  auto server = Serve("--slots 2 --auth_token_file " + TokenFile("token", "s3cret\n", owner));
  ASSERT_NE(server, nullptr);
  auto stub = Connect(server->target());
  auto call = [&](const std::vector<std::string>& values) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    for (const std::string& v : values) ctx.AddMetadata("authorization", v);
    v1::TokenizeRequest req;
    req.set_text("hello");
    v1::TokenizeResponse resp;
    return stub->Tokenize(&ctx, req, &resp).error_code();
  };
  const std::string right = "Bearer s3cret", wrong = "Bearer guess";
  EXPECT_EQ(call({right}), grpc::StatusCode::OK);
  EXPECT_EQ(call({right, right}), grpc::StatusCode::OK);
  EXPECT_EQ(call({right, wrong}), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(call({wrong, right}), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(call({}), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(call({"Bearer s3cre"}), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(call({"Bearer s3cret "}), grpc::StatusCode::UNAUTHENTICATED);

  // Token files the server refuses to start with, and why.
  const std::vector<std::pair<std::string, std::string>> refused = {
      {TokenFile("long", std::string(5000, 't'), owner), "is 5000 bytes; a token file holds one token of at most 4096"},
      {TokenFile("world", "s3cret", owner | fs::perms::group_read | fs::perms::others_read),
       "readable by every user (mode 0644)"},
      {TokenFile("gw", "s3cret", owner | fs::perms::group_write), "writable by its group"},
      {TokenFile("newline", "s3c\nret", owner), "is not printable ASCII"},
  };
  for (const auto& [file, why] : refused) {
    ServerProcess s("--model " + Model() + " --metrics_port -1 --auth_token_file " + file);
    const bool served = s.WaitServing();
    if (served) s.Signal(SIGKILL);
    EXPECT_FALSE(served) << "the server started with " << file;
    EXPECT_EQ(s.Wait(), 1) << s.output();
    EXPECT_THAT(s.output(), HasSubstr(why));
  }
}

// ---------------------------------------------------------------------------
// Exposure defaults.

TEST(Hostile, ExposureDefaultsAreStated) {
  const auto [code, help] = RunFerry("--help");
  EXPECT_THAT(help, HasSubstr("gRPC on 127.0.0.1:50051"));
  EXPECT_THAT(help, HasSubstr("metrics on 127.0.0.1:9400"));
  EXPECT_THAT(help, HasSubstr("plaintext"));
  // Every interface without TLS or a token: said at start-up.
  auto server = std::make_unique<ServerProcess>("--model " + Model() + " --host 0.0.0.0");
  ASSERT_TRUE(server->WaitServing()) << server->output();
  EXPECT_THAT(server->output(), HasSubstr("warning: 0.0.0.0:"));
  EXPECT_THAT(server->output(), HasSubstr("plaintext without a token"));
  auto local = Serve("");
  ASSERT_NE(local, nullptr);
  EXPECT_THAT(local->output(), ::testing::Not(HasSubstr("warning")));
}

// ---------------------------------------------------------------------------
// Corrupt model files.

// The test model's bytes with one thing broken: a u32 metadata value, or a
// field of a tensor's info (found after its name: n_dims, dims, type, offset).
std::string WithU32(std::string b, const std::string& key, uint32_t v) {
  const size_t at = b.find(key) + key.size() + 4;  // after the value's type id
  std::memcpy(&b[at], &v, 4);
  return b;
}
size_t TensorInfoAt(const std::string& b, const std::string& name) {
  return b.find(name + std::string("\x02\x00\x00\x00", 4)) + name.size();  // 2-D tensors: n_dims = 2
}
std::string WithTensorDims(std::string b, const std::string& name, uint64_t d0, uint64_t d1) {
  std::memcpy(&b[TensorInfoAt(b, name) + 4], &d0, 8);
  std::memcpy(&b[TensorInfoAt(b, name) + 12], &d1, 8);
  return b;
}
std::string WithTensorType(std::string b, const std::string& name, uint32_t v) {
  std::memcpy(&b[TensorInfoAt(b, name) + 4 + 16], &v, 4);
  return b;
}
std::string WithTensorOffset(std::string b, const std::string& name, uint64_t v) {
  std::memcpy(&b[TensorInfoAt(b, name) + 4 + 16 + 4], &v, 8);
  return b;
}
std::string Renamed(std::string b, const std::string& from, const std::string& to) {
  b.replace(b.find(from), from.size(), to);
  return b;
}

// Nothing loads that disagrees with its own header, and each refusal names
// what is wrong: `ferry serve` exits 1 with "cannot load PATH: why".
TEST(Hostile, CorruptModelFilesAreRefusedWithWhatIsWrong) {
  std::ifstream in(Model(), std::ios::binary);
  const std::string good((std::istreambuf_iterator<char>(in)), {});
  ASSERT_GT(good.size(), 500000u);
  const size_t data_start = good.size() - 558336;  // the data section: the tensors' 558336 bytes
  struct Case {
    std::string name, bytes, why;
  };
  const std::vector<Case> cases = {
      {"magic", "XXXX" + good.substr(4), "not a GGUF file: it starts with \"XXXX\""},
      {"version", Renamed(good, std::string("GGUF\x03", 5), std::string("GGUF\x63", 5)), "unsupported GGUF version 99"},
      {"cut in the header", good.substr(0, 600), "tensor count 21 cannot fit in the 576 bytes after the header"},
      {"cut in the metadata", good.substr(0, 6000), "file truncated"},
      {"cut in the tensor data", good.substr(0, data_start + 200000), "runs past the end of the data section"},
      {"cut one byte short", good.substr(0, good.size() - 1), "'output.weight': data"},
      {"fewer layers than tensors", WithU32(good, "llama.block_count", 1),
       "'blk.1.attn_norm.weight' belongs to layer 1, but llama.block_count says the model has 1 layers"},
      {"more layers than tensors", WithU32(good, "llama.block_count", 9), "tensor 'blk.2."},
      {"no heads", WithU32(good, "llama.attention.head_count", 0), "'llama.attention.head_count' = 0 is out of range"},
      {"heads not a multiple of kv heads", WithU32(good, "llama.attention.head_count", 3),
       "head_count 3 is not a multiple of head_count_kv 2"},
      {"width against the tensors", WithU32(good, "llama.embedding_length", 65),
       "'token_embd.weight' has shape [64, 512], expected [65, 512]"},
      {"vocabulary size against the tokenizer", WithU32(good, "llama.vocab_size", 600),
       "'llama.vocab_size' = 600, but the tokenizer has 512 tokens"},
      {"zero context", WithU32(good, "llama.context_length", 0), "'llama.context_length' = 0 is out of range"},
      {"unknown tensor type", WithTensorType(good, "blk.1.attn_q.weight", 99),
       "'blk.1.attn_q.weight': unknown tensor type id 99"},
      {"a type that does not match the data", WithTensorType(good, "blk.1.attn_q.weight", 8),
       "'blk.1.attn_q.weight' (q8_0, 4352 bytes) ends at"},
      {"a shape that does not match the data", WithTensorDims(good, "blk.1.ffn_up.weight", 32, 128),
       "'blk.1.ffn_up.weight' (f32, 16384 bytes) ends at"},
      {"a shape against the metadata", WithTensorDims(good, "blk.1.ffn_up.weight", 128, 64),
       "'blk.1.ffn_up.weight' has shape [128, 64], expected [64, 128]"},
      {"an offset past the end", WithTensorOffset(good, "blk.1.attn_k.weight", 1ull << 40),
       "'blk.1.attn_k.weight': data [1099511627776"},
      {"a misaligned offset", WithTensorOffset(good, "blk.1.attn_k.weight", 3),
       "'blk.1.attn_k.weight': data offset 3 is not a multiple of the alignment 32"},
      {"overlapping tensors", WithTensorOffset(good, "blk.1.attn_k.weight", 0), "overlap"},
      {"a missing tensor", Renamed(good, "blk.1.attn_v.weight", "blk.1.attn_x.weight"),
       "tensor 'blk.1.attn_v.weight' is missing"},
      {"a tensor past the layers", Renamed(good, "blk.1.attn_v.weight", "blk.7.attn_v.weight"),
       "'blk.7.attn_v.weight' belongs to layer 7"},
      {"a duplicate tensor", Renamed(good, "blk.1.attn_v.weight", "blk.1.attn_k.weight"),
       "duplicate tensor 'blk.1.attn_k.weight'"},
      {"no tokenizer", Renamed(good, "tokenizer.ggml.model", "tokenizer.ggml.xxxxx"),
       "'tokenizer.ggml.model' not found"},
  };
  for (const Case& c : cases) {
    const std::string path = Dir() + "/corrupt.gguf";
    std::ofstream(path, std::ios::binary | std::ios::trunc) << c.bytes;
    ServerProcess s("--model " + path + " --metrics_port -1");  // (civetweb takes 2 s to stop)
    const bool served = s.WaitServing();
    if (served) s.Signal(SIGKILL);
    const int code = s.Wait();
    EXPECT_FALSE(served) << c.name << ": the file loaded";
    EXPECT_EQ(code, 1) << c.name;
    EXPECT_THAT(s.output(), HasSubstr("cannot load " + path + ": ")) << c.name;
    EXPECT_THAT(s.output(), HasSubstr(c.why)) << c.name;
  }
}

}  // namespace
}  // namespace ferry
