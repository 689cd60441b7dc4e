#pragma once
//! \file
//! All GGUF block quantizers (llama.cpp's formats): see <yaqa/quantizers/gguf/common.hpp>, and
//! gguf_any (<yaqa/quantizers/gguf/any.hpp>) for the type picked at run time.
#include <yaqa/quantizers/gguf/common.hpp>
#include <yaqa/quantizers/gguf/iq4_nl.hpp>
#include <yaqa/quantizers/gguf/legacy.hpp>
#include <yaqa/quantizers/gguf/q2_k.hpp>
#include <yaqa/quantizers/gguf/q3_k.hpp>
#include <yaqa/quantizers/gguf/q4_k.hpp>
#include <yaqa/quantizers/gguf/q6_k.hpp>
#include <yaqa/quantizers/gguf/any.hpp>
