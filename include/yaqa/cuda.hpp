#pragma once
//! \file
//! The CUDA umbrella: the CPU library plus the CUDA backend. Usable only through the yaqa::cuda
//! CMake target, which defines YAQA_HAS_CUDA and links cudart, cuBLAS and cuSOLVER.
#if !defined(YAQA_HAS_CUDA)
#error "<yaqa/cuda.hpp> needs the yaqa::cuda target (YAQA_HAS_CUDA); link yaqa::cuda or include <yaqa/yaqa.hpp>"
#endif
#include <yaqa/yaqa.hpp>

#include <yaqa/backend/cuda/backend.hpp>
