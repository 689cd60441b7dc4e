# The real yaqa-quantize binary writes byte-identical files for 1, 2 and 4 threads and across runs.
# -DTESTS=<yaqa_tests_cli> -DCLI=<yaqa-quantize> -DDIR=<scratch dir>
file(REMOVE_RECURSE ${DIR})
set(ENV{YAQA_CLI_MODEL_DIR} ${DIR})
execute_process(COMMAND ${TESTS} "[cli_model]" RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "generating the model failed:\n${out}")
endif()
foreach(method gptq ldlq yaqa)
  foreach(run 1 2 4 1again)
    string(REPLACE "again" "" threads ${run})
    execute_process(COMMAND ${CLI} --weights ${DIR}/W.safetensors --hessians ${DIR}/H.safetensors
                            --out ${DIR}/Q-${method}-${run}.safetensors --method ${method} --bits 3
                            --threads ${threads} --seed 5 --quiet
                    RESULT_VARIABLE rc ERROR_VARIABLE err)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "yaqa-quantize ${method} --threads ${threads} failed (${rc}): ${err}")
    endif()
    if(NOT run STREQUAL "1")
      execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files ${DIR}/Q-${method}-1.safetensors
                              ${DIR}/Q-${method}-${run}.safetensors RESULT_VARIABLE diff)
      if(NOT diff EQUAL 0)
        message(FATAL_ERROR "${method}: output with --threads ${threads} (run ${run}) differs from --threads 1")
      endif()
    endif()
  endforeach()
endforeach()
message(STATUS "byte-identical for 1, 2, 4 threads and two runs: gptq ldlq yaqa")
file(REMOVE_RECURSE ${DIR})
