#pragma once
//! \file
//! The CPU umbrella header: core, quantizers, Hessian sketches, factor solvers, rounding and the
//! CPU backend. Never includes a CUDA header (checked by a test); see <yaqa/cuda.hpp> for CUDA.
#include <yaqa/core/concepts.hpp>
#include <yaqa/core/config.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/core/matrix_view.hpp>
#include <yaqa/core/memory_space.hpp>
#include <yaqa/core/result.hpp>

#include <yaqa/backend/backend.hpp>
#include <yaqa/backend/cpu/backend.hpp>
#include <yaqa/backend/cpu/ops.hpp>

#include <yaqa/quantizers/concepts.hpp>
