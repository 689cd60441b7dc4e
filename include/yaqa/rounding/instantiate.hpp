#pragma once
//! \file
//! Compile the layer driver once per quantizer in a project with many translation units.
//!
//! quantize_layer<B, Q> instantiates the whole pipeline (factorization, rounding, refinement,
//! report) for its quantizer: a minute or more of compile time per quantizer at -O3, paid again
//! in every translation unit that calls it. Declare the instantiations extern where they are
//! called and define them once:
//!
//!   // layers.hpp, included by every caller
//!   #include <yaqa/rounding/instantiate.hpp>
//!   YAQA_EXTERN_QUANTIZE_LAYER(yaqa::cpu_backend, yaqa::int_grid<float>)
//!   // layers.cpp, compiled once
//!   #include "layers.hpp"
//!   YAQA_INSTANTIATE_QUANTIZE_LAYER(yaqa::cpu_backend, yaqa::int_grid<float>)
//!
//! The convenience overload without a backend argument calls the cpu_backend one, so it is
//! covered too. A quantizer type with a comma in it needs an alias first (macro arguments).
#include <yaqa/rounding/layer.hpp>

//! The signature of quantize_layer<B, Q>, as explicit instantiation spells it.
#define YAQA_QUANTIZE_LAYER_SIGNATURE(B, Q)                                                          \
  ::yaqa::layer_result<Q> yaqa::quantize_layer<B, Q>(                                             \
      const B&, const Q&, ::yaqa::matrix_view<const ::yaqa::scalar_of<Q>>,                          \
      ::yaqa::matrix_view<const ::yaqa::scalar_of<Q>>, ::yaqa::matrix_view<const ::yaqa::scalar_of<Q>>, \
      const ::yaqa::rounding_options&)

//! Declares quantize_layer<B, Q> as instantiated elsewhere (this translation unit does not compile it).
#define YAQA_EXTERN_QUANTIZE_LAYER(B, Q) extern template YAQA_QUANTIZE_LAYER_SIGNATURE(B, Q);

//! Instantiates quantize_layer<B, Q> here (exactly one translation unit of the program).
#define YAQA_INSTANTIATE_QUANTIZE_LAYER(B, Q) template YAQA_QUANTIZE_LAYER_SIGNATURE(B, Q);
