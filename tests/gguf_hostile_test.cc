// Hostile GGUF files: each case is built byte by byte and must be refused
// with a specific error, without crashing or allocating for absurd counts.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>

#include "engine/gguf/gguf.h"
#include "engine/gguf/writer.h"

namespace ferry::gguf {
namespace {

using ::testing::HasSubstr;

// Little-endian GGUF bytes, field by field.
class Raw {
 public:
  Raw& U8(uint8_t v) { return Put(&v, 1); }
  Raw& U32(uint32_t v) { return Put(&v, 4); }
  Raw& U64(uint64_t v) { return Put(&v, 8); }
  Raw& Bytes(const std::string& s) { return Put(s.data(), s.size()); }
  Raw& Str(const std::string& s) { return U64(s.size()).Bytes(s); }
  Raw& Header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    return Bytes("GGUF").U32(version).U64(n_tensors).U64(n_kv);
  }
  Raw& KvU32(const std::string& key, uint32_t v) { return Str(key).U32(4).U32(v); }
  Raw& TensorInfo(const std::string& name, std::initializer_list<uint64_t> dims, uint32_t type, uint64_t offset) {
    Str(name).U32(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) U64(d);
    return U32(type).U64(offset);
  }
  Raw& PadTo(size_t alignment) {
    while (bytes_.size() % alignment != 0) bytes_.push_back('\0');
    return *this;
  }
  Raw& Zeros(size_t n) {
    bytes_.append(n, '\0');
    return *this;
  }
  const std::string& bytes() const { return bytes_; }

 private:
  Raw& Put(const void* p, size_t n) {
    bytes_.append(static_cast<const char*>(p), n);
    return *this;
  }
  std::string bytes_;
};

constexpr uint32_t kF32 = 0;
constexpr uint32_t kQ4_K = 12;

absl::Status Parse(const std::string& bytes) {
  return File::FromBuffer(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size())).status();
}

void ExpectRefused(const Raw& raw, const std::string& fragment) {
  const absl::Status s = Parse(raw.bytes());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(fragment));
}

// A valid file with one f32 tensor of 8 elements: the baseline every case edits.
Raw OneTensor(uint64_t offset = 0) {
  Raw r;
  r.Header(1, 1).KvU32("general.alignment", 32).TensorInfo("w", {8}, kF32, offset).PadTo(32).Zeros(offset + 32);
  return r;
}

TEST(GgufHostile, BaselineIsValid) { EXPECT_TRUE(Parse(OneTensor().bytes()).ok()); }

TEST(GgufHostile, WrongMagic) {
  Raw r;
  r.Bytes("GGML").U32(3).U64(0).U64(0);
  ExpectRefused(r, "not a GGUF file: it starts with \"GGML\"");
}

TEST(GgufHostile, UnsupportedVersion) {
  Raw v1, v4;
  v1.Header(0, 0, 1);
  v4.Header(0, 0, 4);
  ExpectRefused(v1, "unsupported GGUF version 1");
  ExpectRefused(v4, "unsupported GGUF version 4");
}

TEST(GgufHostile, BigEndianFileNamed) {
  Raw r;
  r.Header(0, 0, 0x03000000);
  ExpectRefused(r, "big-endian");
}

TEST(GgufHostile, TensorCountLargerThanFileCouldHold) {
  Raw r;
  r.Header(uint64_t{1} << 60, 0).Zeros(64);
  ExpectRefused(r, "tensor count 1152921504606846976 cannot fit");
}

TEST(GgufHostile, KeyCountLargerThanFileCouldHold) {
  Raw r;
  r.Header(0, 1000).Zeros(64);
  ExpectRefused(r, "metadata count 1000 cannot fit");
}

TEST(GgufHostile, KeyLengthZero) {
  Raw r;
  r.Header(0, 1).Str("").U32(4).U32(7);
  ExpectRefused(r, "metadata key #0 has length 0");
}

TEST(GgufHostile, KeyLengthBeyondFile) {
  Raw r;
  r.Header(0, 1).U64(1000).Bytes("general.x").U32(4).U32(1);
  ExpectRefused(r, "metadata key #0 length 1000 runs past the end of the file");
}

TEST(GgufHostile, StringValueLengthBeyondFile) {
  Raw r;
  r.Header(0, 1).Str("general.name").U32(8).U64(uint64_t{1} << 40).Bytes("abc");
  ExpectRefused(r, "string value length 1099511627776 runs past the end of the file");
}

TEST(GgufHostile, TensorNameLengthZero) {
  Raw r;
  r.Header(1, 0).TensorInfo("", {8}, kF32, 0).PadTo(32).Zeros(32);
  ExpectRefused(r, "tensor name #0 has length 0");
}

TEST(GgufHostile, DuplicateKeys) {
  Raw r;
  r.Header(0, 2).KvU32("llama.block_count", 2).KvU32("llama.block_count", 3);
  ExpectRefused(r, "duplicate metadata key 'llama.block_count'");
}

TEST(GgufHostile, UnknownValueType) {
  Raw r;
  r.Header(0, 1).Str("general.x").U32(13).U32(0);
  ExpectRefused(r, "metadata key 'general.x' has unknown value type 13");
}

TEST(GgufHostile, UnknownArrayElementType) {
  Raw r;
  r.Header(0, 1).Str("general.x").U32(9).U32(99).U64(1).U32(0);
  ExpectRefused(r, "unknown array element type 99");
}

TEST(GgufHostile, ArrayCountWhoseByteSizeOverflows) {
  // 2^62 u32 elements: 2^64 bytes, which wraps to 0 in 64-bit arithmetic.
  Raw r;
  r.Header(0, 1).Str("tokenizer.ggml.scores").U32(9).U32(4).U64(uint64_t{1} << 62).Zeros(16);
  ExpectRefused(r, "array of 4611686018427387904 u32 needs more bytes than");
}

TEST(GgufHostile, StringArrayCountBeyondFile) {
  Raw r;
  r.Header(0, 1).Str("tokenizer.ggml.tokens").U32(9).U32(8).U64(uint64_t{1} << 40).Str("a").Str("b");
  ExpectRefused(r, "array of 1099511627776 string cannot fit");
}

TEST(GgufHostile, ArraysNestedTooDeep) {
  Raw r;
  r.Header(0, 1).Str("general.nested").U32(9);
  for (int i = 0; i < 100; ++i) r.U32(9).U64(1);
  r.U32(4).U64(0);
  ExpectRefused(r, "arrays nested deeper than 8 levels");
}

TEST(GgufHostile, BoolNeitherZeroNorOne) {
  Raw r;
  r.Header(0, 1).Str("general.flag").U32(7).U8(2);
  ExpectRefused(r, "bool value 2 is neither 0 nor 1");
}

TEST(GgufHostile, AlignmentZero) {
  Raw r;
  r.Header(0, 1).KvU32("general.alignment", 0);
  ExpectRefused(r, "general.alignment 0 is not a power of two");
}

TEST(GgufHostile, AlignmentNotPowerOfTwo) {
  Raw r;
  r.Header(0, 1).KvU32("general.alignment", 48);
  ExpectRefused(r, "general.alignment 48 is not a power of two");
}

TEST(GgufHostile, AlignmentOfWrongType) {
  Raw r;
  r.Header(0, 1).Str("general.alignment").U32(10).U64(32);
  ExpectRefused(r, "general.alignment must be u32, found u64");
}

TEST(GgufHostile, MoreThanFourDims) {
  Raw r;
  r.Header(1, 0).TensorInfo("w", {1, 1, 1, 1, 8}, kF32, 0).PadTo(32).Zeros(32);
  ExpectRefused(r, "tensor 'w': n_dims is 5, must be 1..4");
}

TEST(GgufHostile, ZeroDims) {
  Raw r;
  r.Header(1, 0).TensorInfo("w", {}, kF32, 0).PadTo(32).Zeros(32);
  ExpectRefused(r, "tensor 'w': n_dims is 0");
}

TEST(GgufHostile, ZeroDimension) {
  Raw r;
  r.Header(1, 0).TensorInfo("w", {8, 0}, kF32, 0).PadTo(32).Zeros(32);
  ExpectRefused(r, "tensor 'w': dimension 1 is 0");
}

TEST(GgufHostile, NegativeDimension) {
  Raw r;
  r.Header(1, 0).TensorInfo("w", {8, static_cast<uint64_t>(-5)}, kF32, 0).PadTo(32).Zeros(32);
  ExpectRefused(r, "tensor 'w': dimension 1 is negative (-5)");
}

TEST(GgufHostile, ElementCountOverflows) {
  Raw r;
  r.Header(1, 0).TensorInfo("w", {uint64_t{1} << 32, uint64_t{1} << 32}, kF32, 0).PadTo(32).Zeros(32);
  ExpectRefused(r, "tensor 'w': element count of shape overflows");
}

TEST(GgufHostile, ByteSizeOverflows) {
  // 2^62 f64 elements fit in 63 bits, their 2^65 bytes do not fit in 64.
  Raw r;
  r.Header(1, 0).TensorInfo("w", {uint64_t{1} << 31, uint64_t{1} << 31}, 28, 0).PadTo(32).Zeros(32);
  ExpectRefused(r, "tensor 'w': byte size overflows");
}

TEST(GgufHostile, FirstDimensionNotMultipleOfBlock) {
  Raw r;
  r.Header(1, 0).TensorInfo("w", {100, 2}, kQ4_K, 0).PadTo(32).Zeros(512);
  ExpectRefused(r, "tensor 'w' (q4_K): first dimension 100 is not a multiple of the block size 256");
}

TEST(GgufHostile, UnknownTensorType) {
  Raw r;
  r.Header(1, 0).TensorInfo("w", {8}, 4, 0).PadTo(32).Zeros(32);  // id 4 was retired (q4_2)
  ExpectRefused(r, "tensor 'w': unknown tensor type id 4");
}

TEST(GgufHostile, DuplicateTensorNames) {
  Raw r;
  r.Header(2, 0).TensorInfo("w", {8}, kF32, 0).TensorInfo("w", {8}, kF32, 32).PadTo(32).Zeros(64);
  ExpectRefused(r, "duplicate tensor 'w'");
}

TEST(GgufHostile, OverlongTensorName) {
  Raw r;
  const std::string name(64, 'n');
  r.Header(1, 0).TensorInfo(name, {8}, kF32, 0).PadTo(32).Zeros(32);
  ExpectRefused(r, "name is 64 bytes, the limit is 63");
}

TEST(GgufHostile, MisalignedOffset) {
  Raw r;
  r.Header(2, 0).TensorInfo("a", {8}, kF32, 0).TensorInfo("b", {8}, kF32, 40).PadTo(32).Zeros(96);
  ExpectRefused(r, "tensor 'b': data offset 40 is not a multiple of the alignment 32");
}

TEST(GgufHostile, OffsetPlusSizeOverflows) {
  Raw r;
  r.Header(1, 0).TensorInfo("w", {8}, kF32, ~uint64_t{31}).PadTo(32).Zeros(32);
  ExpectRefused(r, "overflows 64 bits");
}

TEST(GgufHostile, TensorPastEndOfFile) {
  Raw r;
  r.Header(1, 0).TensorInfo("w", {64}, kF32, 0).PadTo(32).Zeros(100);  // needs 256 bytes
  ExpectRefused(r, "tensor 'w': data [0, 256) runs past the end of the data section (100 bytes)");
}

TEST(GgufHostile, OverlappingTensors) {
  Raw r;
  r.Header(2, 0).TensorInfo("a", {16}, kF32, 0).TensorInfo("b", {8}, kF32, 32).PadTo(32).Zeros(96);
  ExpectRefused(r, "tensors 'a' [0, 64) and 'b' [32, 64) overlap");
}

TEST(GgufHostile, EveryTruncationOfAValidFileIsRefused) {
  Writer w;
  ASSERT_TRUE(w.Set("general.name", MetaValue::Str("truncate me")).ok());
  ASSERT_TRUE(w.Set("tokenizer.ggml.tokens", MetaValue::StringArray(std::vector<std::string>{"a", "bb", "ccc"})).ok());
  const std::vector<float> data(64, 1.0f);
  const std::array<uint64_t, 2> dims = {8, 8};
  ASSERT_TRUE(w.AddTensor("w", quant::TensorType::kF32, dims,
                          std::span(reinterpret_cast<const uint8_t*>(data.data()), data.size() * 4))
                  .ok());
  const absl::StatusOr<std::string> full = w.WriteToString();
  ASSERT_TRUE(full.ok());
  ASSERT_TRUE(Parse(*full).ok());
  for (size_t n = 0; n < full->size(); ++n) {
    const absl::Status s = Parse(full->substr(0, n));
    ASSERT_FALSE(s.ok()) << "prefix of " << n << " bytes was accepted";
    ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    const std::string m(s.message());
    EXPECT_TRUE(m.find("truncated") != std::string::npos || m.find("past the end") != std::string::npos ||
                m.find("cannot fit") != std::string::npos)
        << "prefix " << n << ": " << m;
  }
}

TEST(GgufHostile, EmptyFileAndDirectoryOnDisk) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "ferry_hostile_test";
  std::filesystem::create_directories(dir);
  const std::string empty = (dir / "empty.gguf").string();
  std::ofstream(empty).close();
  absl::StatusOr<std::unique_ptr<File>> f = File::Open(empty);
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("file truncated: 0 bytes"));
  f = File::Open(dir.string());
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("not a regular file"));
  f = File::Open((dir / "missing.gguf").string());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
}

// Issue 17, item 6: --model naming a FIFO blocked forever in open() (the
// regular-file check came after it). The open runs on a thread; if it has
// not returned after 10 s the test opens the FIFO's other end to release
// it, and fails.
TEST(GgufHostile, AFifoIsRefusedWithoutBlocking) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "ferry_hostile_test";
  std::filesystem::create_directories(dir);
  const std::string fifo = (dir / ("model-" + std::to_string(::getpid()) + ".fifo")).string();
  ::unlink(fifo.c_str());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::promise<absl::Status> opened;
  std::future<absl::Status> result = opened.get_future();
  std::thread t([&] { opened.set_value(File::Open(fifo).status()); });
  const bool returned = result.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  if (!returned) {
    const int w = ::open(fifo.c_str(), O_WRONLY);  // lets the blocked open return
    if (w >= 0) ::close(w);
  }
  t.join();
  ::unlink(fifo.c_str());
  ASSERT_TRUE(returned) << "File::Open blocked on a FIFO";
  const absl::Status s = result.get();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("not a regular file"));
}

}  // namespace
}  // namespace ferry::gguf
