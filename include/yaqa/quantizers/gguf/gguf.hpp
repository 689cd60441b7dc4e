#pragma once
//! \file
//! All GGUF block quantizers (llama.cpp's formats): see <yaqa/quantizers/gguf/common.hpp>.
#include <yaqa/quantizers/gguf/common.hpp>
#include <yaqa/quantizers/gguf/q2_k.hpp>
#include <yaqa/quantizers/gguf/q4_k.hpp>
