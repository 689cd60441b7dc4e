# Compiles one public header, included twice, alone in a translation unit (syntax only).
string(MAKE_C_IDENTIFIER "${HEADER}" id)
file(MAKE_DIRECTORY ${OUT})
set(tu ${OUT}/${id}.cpp)
file(WRITE ${tu} "#include <${HEADER}>\n#include <${HEADER}>\nint main() { return 0; }\n")
execute_process(COMMAND ${CXX} ${FLAGS} ${tu} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${HEADER} is not self-contained:\n${out}${err}")
endif()
