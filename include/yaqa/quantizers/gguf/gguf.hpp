#pragma once
//! \file
//! All GGUF block quantizers (llama.cpp's formats): see <yaqa/quantizers/gguf/common.hpp>.
#include <yaqa/quantizers/gguf/common.hpp>
