// The shared layer-driver instantiations (layer_instances.hpp). One file: the quantizer-independent
// parts (factorization, Hadamard, proxy) are then compiled once, where one file per quantizer
// compiled them again in each (500 CPU-s instead of 170 when tried for yaqa-quantize).
#include "layer_instances.hpp"

YAQA_LAYER_INSTANCES(YAQA_INSTANTIATE_QUANTIZE_LAYER)
