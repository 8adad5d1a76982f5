// This host's CPU measured for the speed model, on the model at hand.
//
// The products of each weight type come from plan::MeasureHost. Each
// distinct layer of the model (its matrices' types and shapes, and how far
// its attention reaches) is also run whole on a cpu device by RunLayer, the
// code the executor runs a unit with: weights regrouped by the device as it
// regroups a model's (or in the file's layout, as the sim device computes
// them), a KV cache of several sequences, the step's other work included.
// A sum of parts measured apart (the products of one width per type, the
// other work over one sequence) misses what depends on the layer's own
// shapes: the file layout's kernel, walked at the widest matrix, priced
// a layer at 1 token 1.6x what it took (docs/measurements.md).
#pragma once

#include <cstdint>

#include "engine/gguf/gguf.h"
#include "engine/model/config.h"
#include "engine/plan/host.h"

namespace ferry::exec {

// plan::MeasureHost for the file's weight types (in the file's layout too
// where `file_layout`: the sim device's kernels), then each distinct layer
// on `threads` threads with every token attending over `position` cached
// positions (clamped to 1..4096). The weights are made up (one quantized
// row repeated: their values do not change the kernels' speed), so a file
// of headers alone serves. The layers are copied through a buffer of about
// `model_bytes` (64 MiB .. 512 MiB, at most a quarter of the free memory,
// at least one layer) so that their weights come from memory as a model's
// do. A layer whose types ferry cannot quantize, or that does not fit (a
// header may claim any size), gets no curve and keeps the price of its
// parts; a layer's other work apart is measured only for such layers.
plan::HostSpec MeasureHost(const gguf::File& file, const model::ModelConfig& config, int threads, uint64_t model_bytes,
                           bool file_layout, int position);

}  // namespace ferry::exec
