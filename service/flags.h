// The command line, made from the settings' tables (engine/engine/engine.h:
// PlacementArgs, RuntimeArgs; service/args.h: the rest). service/flags.cc
// defines one Abseil flag per table entry, with the entry's name, the
// group's default and the entry's help, and says which commands read each
// flag; `ferry --help` is printed from the same tables and that list.
#pragma once

#include <string>
#include <type_traits>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/strings/string_view.h"

namespace ferry::service {

// One group of settings: a title and its flags, in the table's order.
struct FlagGroup {
  absl::string_view title;
  std::vector<absl::string_view> flags;
};
// Every group the command line has, in the order --help lists them.
const std::vector<FlagGroup>& FlagGroups();

// Who reads a flag: a command ("serve") or a mode of one ("loadgen --direct").
struct FlagReader {
  absl::string_view name;
  std::vector<absl::string_view> flags;
};
const std::vector<FlagReader>& FlagReaders();
bool Reads(absl::string_view reader, absl::string_view flag);

// The registered flag of a table entry (aborts, naming it, when an entry has
// no flag: a programming error the flags test catches).
const absl::CommandLineFlag& FlagOf(absl::string_view name);
[[noreturn]] void WrongFlagType(absl::string_view name);

template <class T>
T FlagValue(absl::string_view name) {
  auto v = FlagOf(name).TryGet<T>();
  if (!v) WrongFlagType(name);
  return *v;
}

// A group's settings as `reader` gets them: the value of each flag it reads,
// the default for the others (a command cannot act on a flag --help does not
// say it reads).
template <class Group>
Group FromFlags(absl::string_view reader) {
  Group g;
  Group::ForEach([&](auto member, absl::string_view name, absl::string_view) {
    using T = std::remove_cvref_t<decltype(g.*member)>;
    if (Reads(reader, name)) g.*member = FlagValue<T>(name);
  });
  return g;
}

// The commands, each with what it does.
struct CommandInfo {
  absl::string_view name;
  absl::string_view summary;  // as the usage lists it, wrapped at 78 columns
};
const std::vector<CommandInfo>& Commands();

// `ferry` alone: what it is, the commands, examples.
std::string Usage();
// `ferry --help` (command "") or `ferry COMMAND --help`: the usage (of that
// command), then each flag it reads, by group, with its default, help and
// readers. Empty for an unknown command.
std::string Help(absl::string_view command);

}  // namespace ferry::service
