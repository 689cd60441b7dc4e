# Lists every header yaqa.hpp pulls in (g++ -H) and fails if any is a CUDA header or lives under
# backend/cuda.
file(MAKE_DIRECTORY ${OUT})
set(tu ${OUT}/no_cuda_leak.cpp)
file(WRITE ${tu} "#include <yaqa/yaqa.hpp>\nint main() { return 0; }\n")
execute_process(COMMAND ${CXX} ${FLAGS} -H ${tu} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "yaqa.hpp does not compile without CUDA:\n${err}")
endif()
# Match header names and CUDA install directories, not any path that merely contains "cuda"
# (a build directory named build-cuda holds the generated version.hpp).
string(REGEX MATCHALL "[^\n]*(/cuda[-.0-9]*/|/cuda[_a-zA-Z0-9]*\\.h|/cublas|/cusolver|/backend/cuda/)[^\n]*"
       leaks "${err}")
if(leaks)
  message(FATAL_ERROR "yaqa.hpp reaches CUDA headers:\n${leaks}")
endif()
string(REGEX MATCHALL "\n\\.+ [^\n]*" all "${err}")
list(LENGTH all n)
message(STATUS "yaqa.hpp includes ${n} headers, none of them CUDA")
