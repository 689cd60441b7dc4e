#pragma once
//! \file
//! The CPU umbrella header: core, quantizers, Hessian sketches, factor solvers, rounding, file I/O
//! (safetensors, .npy, GGUF, llama.cpp imatrix) and the CPU backend. Never includes a CUDA header (checked by a test); see <yaqa/cuda.hpp> for CUDA.
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
#include <yaqa/quantizers/e8p.hpp>
#include <yaqa/quantizers/e8p_rvq.hpp>
#include <yaqa/quantizers/nonuniform_grid.hpp>
#include <yaqa/quantizers/rtn_grid.hpp>
#include <yaqa/quantizers/trellis.hpp>
#include <yaqa/quantizers/gguf/gguf.hpp>

#include <yaqa/hessian/accumulator.hpp>
#include <yaqa/hessian/common.hpp>
#include <yaqa/hessian/diagonal.hpp>
#include <yaqa/hessian/kronecker_sketch.hpp>
#include <yaqa/hessian/packed_symmetric.hpp>

#include <yaqa/linalg/block_ldl.hpp>
#include <yaqa/linalg/damping.hpp>
#include <yaqa/linalg/hadamard.hpp>
#include <yaqa/linalg/preprocess.hpp>

#include <yaqa/io/dtype.hpp>
#include <yaqa/io/file.hpp>
#include <yaqa/io/float16.hpp>
#include <yaqa/io/gguf.hpp>
#include <yaqa/io/gptq_checkpoint.hpp>
#include <yaqa/io/hessian_file.hpp>
#include <yaqa/io/imatrix.hpp>
#include <yaqa/io/npy.hpp>
#include <yaqa/io/safetensors.hpp>
#include <yaqa/io/tensor.hpp>

#include <yaqa/refine/adam.hpp>
#include <yaqa/refine/clipping.hpp>
#include <yaqa/refine/cross_layer.hpp>
#include <yaqa/refine/objective.hpp>
#include <yaqa/refine/pattern.hpp>
#include <yaqa/refine/refine.hpp>
#include <yaqa/refine/spectral.hpp>

#include <yaqa/rounding/common.hpp>
#include <yaqa/rounding/coordinate_descent.hpp>
#include <yaqa/rounding/gptq.hpp>
#include <yaqa/rounding/instantiate.hpp>
#include <yaqa/rounding/layer.hpp>
#include <yaqa/rounding/ldlq.hpp>
#include <yaqa/rounding/proxy.hpp>
#include <yaqa/rounding/rtn.hpp>
#include <yaqa/rounding/sweep.hpp>
#include <yaqa/rounding/yaqa.hpp>
