// The ferry binary as a user runs it: exit codes and what it prints.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cctype>
#include <cstdio>
#include <filesystem>

#include "tests/shared_models.h"

namespace ferry {
namespace {

using ::testing::HasSubstr;

struct Result {
  int exit_code;
  std::string output;  // stdout and stderr together
};

// Runs `ferry ARGS` with optional VAR=value assignments in front.
Result RunFerry(const std::string& args, const std::string& env = "", bool with_stderr = true) {
  const std::string cmd = env + " " + std::string(FERRY_BINARY) + " " + args + (with_stderr ? " 2>&1" : " 2>/dev/null");
  FILE* p = popen(cmd.c_str(), "r");
  Result r{-1, ""};
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string TempDir() {
  const auto dir = std::filesystem::temp_directory_path() / ("ferry_cli_test_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  return dir.string();
}

TEST(Cli, HelpAndUsage) {
  Result r = RunFerry("--help");
  EXPECT_THAT(r.output, HasSubstr("make-model"));
  EXPECT_THAT(r.output, HasSubstr("inspect"));
  EXPECT_THAT(r.output, HasSubstr("--kv_heads"));
  // A command's help: its flags only, with their defaults.
  r = RunFerry("serve --help");
  EXPECT_THAT(r.output, HasSubstr("usage: ferry serve [flags]"));
  EXPECT_THAT(r.output, HasSubstr("\n  --max_queue=64\n"));
  EXPECT_THAT(r.output, ::testing::Not(HasSubstr("--kv_heads")));
  r = RunFerry("");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("usage: ferry <command>"));
  r = RunFerry("frobnicate");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("unknown command 'frobnicate'"));
}

TEST(Cli, MakeModelThenInspect) {
  const std::string path = TempDir() + "/m.gguf";
  Result r = RunFerry("make-model --out " + path + " --layers 3 --embd 64 --heads 4 --kv_heads 2 --ff 128 --vocab 400 --type f16");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("wrote " + path));
  r = RunFerry("inspect --model " + path);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("architecture: llama"));
  EXPECT_THAT(r.output, HasSubstr("shape: layers 3, embd 64, ff 128, heads 4, kv heads 2, context 2048, vocab 400"));
  EXPECT_THAT(r.output, HasSubstr("f16"));
  r = RunFerry("inspect --json --model " + path);
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("\"llama.block_count\":{\"type\":\"u32\",\"value\":3}"));
}

TEST(Cli, BenchPrintsARowPerBatchSize) {
  const std::string path = TempDir() + "/bench.gguf";
  Result r = RunFerry("make-model --out " + path + " --layers 2 --embd 64 --heads 4 --kv_heads 2 --ff 128 --type q4_0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = RunFerry("bench --model " + path + " --batches=1,3 --prompt_tokens 8 --gen_tokens 4 --repetitions 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, ::testing::ContainsRegex("\n +1 +[0-9.]+ +[0-9.]+ +[0-9.]+\n +3 +[0-9.]+ +[0-9.]+ +[0-9.]+"));
  r = RunFerry("bench --model " + path + " --batches=0");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("--batches: '0' is not a positive integer"));
}

// A preset is its Q4_K_M mix unless --type or --mix says otherwise; --type
// q8_0 (the demo model's type) says otherwise too.
TEST(Cli, APresetTakesAnExplicitTypeOrMix) {
  const std::string path = TempDir() + "/preset-type.gguf";
  for (auto [flags, weights] : {std::pair<std::string, std::string>{"", "4.58 GiB"}, {"--type q8_0", "7.95 GiB"},
                                {"--type q4_0", "4.21 GiB"}, {"--mix q5_k_m", "5.33 GiB"}}) {
    SCOPED_TRACE(flags);
    Result r = RunFerry("make-model --preset llama3.1-8b --header_only " + flags + " --out " + path);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    r = RunFerry("inspect --model " + path);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_THAT(r.output, HasSubstr("data " + weights));
  }
  Result r = RunFerry("make-model --preset llama3.1-8b --header_only --mix q9_k --out " + path);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("--mix must be q4_k_m or q5_k_m, got 'q9_k'"));
}

TEST(Cli, PlanFromAHeaderOnlyFile) {
  const std::string path = TempDir() + "/llama8b-header.gguf";
  Result r = RunFerry("make-model --preset llama3.1-8b --header_only --out " + path);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = RunFerry("plan --model " + path);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("llama, 32 layers"));
  // A row per strategy (stream, cpu, mixed): layers resident / streamed / on the CPU.
  EXPECT_THAT(r.output, ::testing::ContainsRegex(" 8.00 GiB [ >]stream +[0-9]+\\+h / [0-9]+ / 0 "));
  EXPECT_THAT(r.output, ::testing::ContainsRegex(" 8.00 GiB [ >]cpu +[0-9]+\\+h / 0 / [0-9]+ "));
  EXPECT_THAT(r.output, ::testing::ContainsRegex(" 8.00 GiB [ >]mixed "));
  EXPECT_THAT(r.output, ::testing::ContainsRegex("80.00 GiB [ >]stream +32\\+h / 0 / 0 +100.0%"));
  r = RunFerry("plan --json --gpu_memory=8GiB --model " + path);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("\"budget_bytes\":8589934592"));
  // The spelling, dashes, is the same flag.
  r = RunFerry("plan --json --gpu-memory=8GiB --model " + path);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("\"budget_bytes\":8589934592"));
  r = RunFerry("plan --gpu-layers 32 --gpu rtx4060-8g --ctx 131072 --model " + path);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("missing"));
  r = RunFerry("plan --gpu_memory=lots --model " + path);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("'lots' is not a size"));
}

TEST(Cli, ClearErrors) {
  Result r = RunFerry("make-model");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("--out PATH is required"));
  r = RunFerry("make-model --out /tmp/x.gguf --type q9_9");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("unknown tensor type 'q9_9'"));
  r = RunFerry("make-model --out /tmp/x.gguf --heads 7");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("not divisible by heads 7"));
  r = RunFerry("inspect --model /nonexistent/model.gguf");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("/nonexistent/model.gguf: cannot open"));
}

TEST(Cli, DemoModelIsMadeOnFirstUse) {
  const std::string cache = TempDir() + "/cache";
  std::filesystem::remove_all(cache);
  Result r = RunFerry("inspect", "FERRY_CACHE_DIR=" + cache);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("writing the demo model (random weights; its text is noise)"));
  EXPECT_THAT(r.output, HasSubstr("name: ferry demo (random weights)"));
  r = RunFerry("inspect", "FERRY_CACHE_DIR=" + cache);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("using the demo model"));
}

// The text `ferry generate ARGS` prints on stdout (the prompt, if any, then
// what it generated and a new line; the figures go to stderr).
std::string GeneratedText(const std::string& args) {
  const Result r = RunFerry("generate " + args, "", /*with_stderr=*/false);
  EXPECT_EQ(r.exit_code, 0) << args;
  return r.output;
}

// On a model of stories260K's shape (random weights, generated here).
TEST(Cli, GenerateGreedyStopsSeedsAndFigures) {
  const std::string path = testing::StoriesShapedModel();
  ASSERT_FALSE(path.empty());
  Result r = RunFerry("generate --model " + path + " --temperature 0 --ignore_eos -n 50");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, ::testing::ContainsRegex(
                            "prompt 1 tokens, generated 50 tokens \\(length\\); prefill [0-9.]+ tokens/s, decode "
                            "[0-9.]+ tokens/s; peak memory [0-9.]+ MiB"));
  // A stop sequence (a run of letters from the second half of the greedy
  // text) ends generation before it is printed.
  const std::string text = GeneratedText("--model " + path + " --temperature 0 --ignore_eos -n 50");
  size_t at = text.size() / 2;
  while (at < text.size() && !std::isalpha(static_cast<unsigned char>(text[at]))) ++at;
  size_t len = 0;
  while (at + len < text.size() && len < 6 && std::isalpha(static_cast<unsigned char>(text[at + len]))) ++len;
  ASSERT_GE(len, 2u) << "no letters in the second half of: " << text;
  const std::string stop = text.substr(at, len);
  EXPECT_EQ(GeneratedText("--model " + path + " --temperature 0 --ignore_eos -n 50 --stop=" + stop),
            text.substr(0, text.find(stop)) + "\n")
      << "stop " << stop;
  r = RunFerry("generate --model " + path + " --temperature 0 --ignore_eos -n 50 --stop=" + stop);
  EXPECT_THAT(r.output, HasSubstr("(stop_sequence)"));
  r = RunFerry("generate --model " + path + " --stop_token_ids=512");
  EXPECT_THAT(r.output, HasSubstr("stop token id 512 is outside the vocabulary [0, 512)"));
  // Same seed, same text.
  const Result a = RunFerry("generate --model " + path + " --prompt \"Tom\" -n 30 --seed 5");
  const Result b = RunFerry("generate --model " + path + " --prompt \"Tom\" -n 30 --seed 5");
  EXPECT_EQ(a.output.substr(0, a.output.find("prompt ")), b.output.substr(0, b.output.find("prompt ")));
  r = RunFerry("generate --model " + path + " --top_p 0");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("top_p = 0 is outside (0, 1]"));
  r = RunFerry("info --model " + path);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("tokenizer: llama (SentencePiece-style), 512 tokens, bos 1, eos 2"));
}

// The real stories260K (../shared/models): its author's documented text,
// and a stop token of its vocabulary.
TEST(Cli, GenerateStoriesGolden) {
  const std::string path = testing::SharedModel("stories260K-f32.gguf");
  FERRY_REQUIRE_SHARED_MODEL(path);
  Result r = RunFerry("generate --model " + path + " --temperature 0 -n 50");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("Once upon a time, there was a little girl named Lily."));
  r = RunFerry("generate --model " + path + " --temperature 0 -n 80 --stop=Lily.");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("Once upon a time, there was a little girl named \n"));
  // A stop token id ends generation (13 is "\n" in this vocabulary: <0x0A>).
  r = RunFerry("generate --model " + path + " --temperature 0 -n 80 --stop_token_ids=13");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("too high.\nprompt 1 tokens"));
  EXPECT_THAT(r.output, HasSubstr("(stop)"));
}

TEST(Cli, GenerateOnTheSimDeviceStreamsLayersAndSaysWhere) {
  const std::string path = testing::StoriesShapedModel();
  ASSERT_FALSE(path.empty());
  // 2 of 5 layers resident, the rest streamed: the same greedy text as the cpu.
  const std::string sim = " --device sim:mem=64MiB,overhead=1MiB,h2d=10GB/s,poison=1 --gpu_layers 2 --placement stream";
  const std::string greedy = "--model " + path + " --temperature 0 --ignore_eos -n 50";
  EXPECT_EQ(GeneratedText(greedy + sim), GeneratedText(greedy));
  Result r = RunFerry("generate " + greedy + sim);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("offloaded 2/5 layers + output head"));
  EXPECT_THAT(r.output, HasSubstr("3 streamed unit(s) through a ring of 2 x"));
  // A placement that cannot fit is refused at load with what is missing.
  r = RunFerry("generate --model " + path + " --device sim:mem=2MiB,overhead=1MiB --gpu_layers 5 --ctx 256");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("missing"));
  EXPECT_THAT(r.output, HasSubstr("fewer --gpu_layers"));
  r = RunFerry("generate --model " + path + " --device sim:warp=9");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("unknown key 'warp'"));
  r = RunFerry("bench --model " + path + " --device sim:mem=64MiB,overhead=0,h2d=10GB/s --sweep --batches 2 "
               "--prompt_tokens 4 --gen_tokens 4 --repetitions 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("streamed GB/s"));
  EXPECT_THAT(r.output, ::testing::ContainsRegex("\n +2 stream +0 +0 +0%"));
  EXPECT_THAT(r.output, ::testing::ContainsRegex("\n +2 cpu +0 +5 +0%"));
  EXPECT_THAT(r.output, ::testing::ContainsRegex("\n +2 stream +5\\+head +0 +100%"));
}

TEST(Cli, InspectRealModelAndRefuseV1) {
  const std::string path = testing::SharedModel("stories260K-f32.gguf");
  FERRY_REQUIRE_SHARED_MODEL(path);
  Result r = RunFerry("inspect --model " + path);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("shape: layers 5, embd 64, ff 172, heads 8, kv heads 4, context 2048, vocab 512"));
  r = RunFerry("inspect --model " + testing::SharedModel("stories260K-gguf-v1.gguf"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("unsupported GGUF version 1"));
}

}  // namespace
}  // namespace ferry
