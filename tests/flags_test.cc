// The command line against the settings' tables it is made from: every
// entry has its flag with the group's default and the entry's help, every
// flag is an entry, every flag is read by a command, and --help says all of
// it.
#include "service/flags.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "absl/flags/marshalling.h"
#include "absl/flags/reflection.h"
#include "absl/strings/str_cat.h"
#include "engine/engine/engine.h"
#include "service/args.h"

namespace ferry::service {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Calls f(name, the group's default unparsed, help, whether the flag's type
// is the member's) for every entry of Group's table.
template <class Group, class F>
void ForEachEntry(F&& f) {
  Group::ForEach([&](auto member, absl::string_view name, const char* help) {
    using T = std::remove_cvref_t<decltype(Group().*member)>;
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    f(name, absl::UnparseFlag(Group().*member), std::string(help), flag, flag && flag->TryGet<T>().has_value());
  });
}

template <class Group>
void ExpectFlagsMatchTable() {
  ForEachEntry<Group>([](absl::string_view name, const std::string& default_value, const std::string& help,
                         const absl::CommandLineFlag* flag, bool same_type) {
    ASSERT_NE(flag, nullptr) << "--" << name << " is in a table but has no flag";
    EXPECT_TRUE(same_type) << "--" << name;
    EXPECT_EQ(flag->DefaultValue(), default_value) << "--" << name << ": the flag's default is not the group's";
    EXPECT_EQ(flag->Help(), help) << "--" << name << ": the flag's help is not the table's";
  });
}

TEST(Flags, EveryTableEntryHasItsFlagWithTheGroupsDefaultAndHelp) {
  ExpectFlagsMatchTable<ModelArgs>();
  ExpectFlagsMatchTable<engine::PlacementArgs>();
  ExpectFlagsMatchTable<GpuArgs>();
  ExpectFlagsMatchTable<engine::RuntimeArgs>();
  ExpectFlagsMatchTable<SamplingArgs>();
  ExpectFlagsMatchTable<OutputArgs>();
  ExpectFlagsMatchTable<BenchArgs>();
  ExpectFlagsMatchTable<ServerArgs>();
  ExpectFlagsMatchTable<LoadgenArgs>();
  ExpectFlagsMatchTable<MakeModelArgs>();
}

TEST(Flags, EveryFlagIsInOneGroupAndReadBySomeCommand) {
  std::multiset<std::string> grouped;
  for (const FlagGroup& g : FlagGroups()) grouped.insert(g.flags.begin(), g.flags.end());
  int ours = 0;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (flag->Filename().find("service/flags.cc") == std::string::npos) continue;  // Abseil's own (--helpfull, ...)
    ++ours;
    EXPECT_EQ(grouped.count(std::string(name)), 1u) << "--" << name << " is not in exactly one group";
    bool read = false;
    for (const FlagReader& r : FlagReaders()) read = read || Reads(r.name, name);
    EXPECT_TRUE(read) << "no command reads --" << name;
  }
  EXPECT_EQ(ours, static_cast<int>(grouped.size()));
  for (const FlagReader& r : FlagReaders()) {
    for (absl::string_view f : r.flags) EXPECT_EQ(grouped.count(std::string(f)), 1u) << r.name << " reads --" << f;
  }
}

TEST(Flags, ACommandGetsOnlyTheFlagsItSaysItReads) {
  absl::FlagSaver restore;
  std::string error;
  ASSERT_TRUE(absl::FindCommandLineFlag("ring_depth")->ParseFrom("5", &error)) << error;
  ASSERT_TRUE(absl::FindCommandLineFlag("device")->ParseFrom("sim", &error)) << error;
  ASSERT_TRUE(absl::FindCommandLineFlag("kv_type")->ParseFrom("f32", &error)) << error;
  EXPECT_FALSE(absl::FindCommandLineFlag("kv_type")->ParseFrom("q4", &error));
  EXPECT_THAT(error, HasSubstr("kv_type must be f16 or f32, got 'q4'"));
  const engine::PlacementArgs plan = FromFlags<engine::PlacementArgs>("plan");
  EXPECT_EQ(plan.ring_depth, 5);
  EXPECT_EQ(plan.device, "cpu");  // plan does not read --device
  EXPECT_EQ(FromFlags<engine::PlacementArgs>("serve").device, "sim");
  EXPECT_EQ(FromFlags<engine::RuntimeArgs>("serve").kv_type, exec::KvType::kF32);
  EXPECT_EQ(FromFlags<engine::RuntimeArgs>("bench").kv_type, exec::KvType::kF16);  // bench does not read it
}

TEST(Flags, HelpListsEveryFlagWithItsDefaultAndReaders) {
  const std::string help = Help("");
  for (const FlagGroup& g : FlagGroups()) {
    EXPECT_THAT(help, HasSubstr("\n" + std::string(g.title) + ":\n"));
    for (absl::string_view name : g.flags) {
      std::string value = FlagOf(name).DefaultValue();
      if (value.empty()) value = "\"\"";
      std::string readers;
      for (const FlagReader& r : FlagReaders()) {
        if (Reads(r.name, name)) readers += (readers.empty() ? "" : ", ") + std::string(r.name);
      }
      EXPECT_THAT(help, HasSubstr("\n  --" + std::string(name) + "=" + value + "  (" + readers + ")\n"));
    }
  }
  const std::string serve = Help("serve");
  EXPECT_THAT(serve, HasSubstr("usage: ferry serve [flags]"));
  EXPECT_THAT(serve, HasSubstr(absl::StrCat("\n  --port=", ServeOptions().port, "\n")));
  EXPECT_THAT(serve, HasSubstr(absl::StrCat("\n  --slots=", engine::RuntimeArgs().slots, "\n")));
  EXPECT_THAT(serve, Not(HasSubstr("--layers")));
  EXPECT_THAT(serve, Not(HasSubstr("--temperature")));
  EXPECT_THAT(Help("loadgen"), HasSubstr(absl::StrCat("\n  --slots=", engine::RuntimeArgs().slots, "  (loadgen --direct)\n")));
  EXPECT_EQ(Help("frobnicate"), "");
}

}  // namespace
}  // namespace ferry::service
