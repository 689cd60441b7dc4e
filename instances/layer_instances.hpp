#pragma once
//! The layer driver's instantiations shared by this repository's programs: yaqa-quantize's
//! quantizers (tools/yaqa-quantize/write_layer.hpp, with_quantizer), which the demo and the
//! CLI / I/O / refinement / rounding tests also use. Compiled once, in layers.cpp, instead of in
//! every program that calls them (docs/reliability.md).
#include <yaqa/backend/cpu/backend.hpp>
#include <yaqa/quantizers/e8p.hpp>
#include <yaqa/quantizers/e8p_rvq.hpp>
#include <yaqa/quantizers/gguf/any.hpp>
#include <yaqa/quantizers/nonuniform_grid.hpp>
#include <yaqa/quantizers/rtn_grid.hpp>
#include <yaqa/quantizers/trellis.hpp>
#include <yaqa/rounding/instantiate.hpp>

#define YAQA_LAYER_INSTANCES(X)                         \
  X(::yaqa::cpu_backend, ::yaqa::int_grid<float>)       \
  X(::yaqa::cpu_backend, ::yaqa::lloyd_max_grid<float>) \
  X(::yaqa::cpu_backend, ::yaqa::fp4_e2m1<float>)       \
  X(::yaqa::cpu_backend, ::yaqa::e8p<float>)            \
  X(::yaqa::cpu_backend, ::yaqa::e8p_rvq<float>)        \
  X(::yaqa::cpu_backend, ::yaqa::trellis<float>)        \
  X(::yaqa::cpu_backend, ::yaqa::gguf_any<float>)

YAQA_LAYER_INSTANCES(YAQA_EXTERN_QUANTIZE_LAYER)
