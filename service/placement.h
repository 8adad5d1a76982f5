// Transitional: the engine's placement arguments and planning step under
// their old service names, for the front ends not yet on engine::OpenEngine.
#pragma once

#include "engine/engine/engine.h"

namespace ferry::service {

using DeviceFlags = engine::PlacementArgs;
using engine::PlanPlacement;
using engine::SpecOf;
inline int DefaultContext(const model::Model& model) { return model.config.default_context(); }

}  // namespace ferry::service
