#pragma once
//! \file
//! All GGUF block quantizers (llama.cpp's formats): see <yaqa/quantizers/gguf/common.hpp>.
#include <yaqa/quantizers/gguf/common.hpp>
#include <yaqa/quantizers/gguf/iq4_nl.hpp>
#include <yaqa/quantizers/gguf/legacy.hpp>
#include <yaqa/quantizers/gguf/q3_k.hpp>
#include <yaqa/quantizers/gguf/q6_k.hpp>
#include <yaqa/quantizers/gguf/symmetric_fit.hpp>
