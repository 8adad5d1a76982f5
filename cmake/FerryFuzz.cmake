# The libFuzzer targets need clang, while the project builds with the
# default compiler: build tests/fuzz as its own clang project and register a
# bounded fuzzing run (ASan + UBSan) of each as a ctest test: gguf_fuzz (the
# GGUF reader) and tokenizer_fuzz (the tokenizers) for FERRY_FUZZ_SECONDS,
# chat_fuzz (the chat-template parser and renderer) and request_fuzz
# (GenerateRequest/TokenizeRequest validation) for FERRY_FUZZ_SHORT_SECONDS.
set(_fuzz_enabled OFF)
if(NOT FERRY_FUZZ STREQUAL "OFF")
  find_program(FERRY_CLANGXX NAMES clang++ clang++-14)
  find_program(FERRY_CLANG NAMES clang clang-14)
  if(FERRY_CLANGXX AND FERRY_CLANG)
    set(_fuzz_enabled ON)
  elseif(FERRY_FUZZ STREQUAL "ON")
    message(FATAL_ERROR "FERRY_FUZZ=ON needs clang and clang++ with libFuzzer (Debian: clang libclang-rt-14-dev)")
  else()
    message(STATUS "ferry: clang not found, the gguf_fuzz test is not built")
  endif()
endif()

if(_fuzz_enabled)
  include(ExternalProject)
  set(_fuzz_bin ${CMAKE_BINARY_DIR}/fuzz)
  ExternalProject_Add(gguf_fuzz_build
    SOURCE_DIR ${PROJECT_SOURCE_DIR}/tests/fuzz
    BINARY_DIR ${_fuzz_bin}
    CMAKE_GENERATOR Ninja
    CMAKE_ARGS -DCMAKE_C_COMPILER=${FERRY_CLANG} -DCMAKE_CXX_COMPILER=${FERRY_CLANGXX}
               -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFERRY_CCACHE=${FERRY_CCACHE}
    INSTALL_COMMAND ""
    BUILD_ALWAYS ON
    BUILD_BYPRODUCTS ${_fuzz_bin}/gguf_fuzz ${_fuzz_bin}/tokenizer_fuzz ${_fuzz_bin}/chat_fuzz
                     ${_fuzz_bin}/request_fuzz)
  add_test(NAME gguf_fuzz
           COMMAND bash ${PROJECT_SOURCE_DIR}/tests/fuzz/run.sh ${_fuzz_bin}/gguf_fuzz ${FERRY_FUZZ_SECONDS}
                   ${PROJECT_SOURCE_DIR}/tests/fuzz/corpus ${CMAKE_BINARY_DIR}/fuzz-run)
  set_tests_properties(gguf_fuzz PROPERTIES TIMEOUT 900)
  add_test(NAME tokenizer_fuzz
           COMMAND bash ${PROJECT_SOURCE_DIR}/tests/fuzz/run.sh ${_fuzz_bin}/tokenizer_fuzz ${FERRY_FUZZ_SECONDS}
                   ${PROJECT_SOURCE_DIR}/tests/fuzz/tokenizer_corpus ${CMAKE_BINARY_DIR}/tokenizer-fuzz-run)
  set_tests_properties(tokenizer_fuzz PROPERTIES TIMEOUT 900)
  foreach(_target chat_fuzz request_fuzz)
    string(REPLACE "_fuzz" "_corpus" _seeds ${_target})
    add_test(NAME ${_target}
             COMMAND bash ${PROJECT_SOURCE_DIR}/tests/fuzz/run.sh ${_fuzz_bin}/${_target} ${FERRY_FUZZ_SHORT_SECONDS}
                     ${PROJECT_SOURCE_DIR}/tests/fuzz/${_seeds} ${CMAKE_BINARY_DIR}/fuzz-run-${_target})
    set_tests_properties(${_target} PROPERTIES TIMEOUT 600)
  endforeach()
endif()
