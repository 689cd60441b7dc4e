# The Python extension's build inputs for the main build (python/CMakeLists.txt builds it):
# Python's development headers and nanobind. nanobind comes from -Dnanobind_DIR, from the
# interpreter when it can import nanobind, or else is pip-installed (pinned, --no-deps) into a
# venv with the system site packages under the build directory, once, at configure time, as the
# gguf tests do for gguf-py. Sets YAQA_PYTHON_EXTENSION ON when both were found.
set(YAQA_NANOBIND_VERSION 2.4.0)
set(YAQA_PYTHON_EXTENSION OFF)
if(NOT DEFINED Python_EXECUTABLE AND EXISTS /usr/bin/python3)
  set(Python_EXECUTABLE /usr/bin/python3)  # Debian's: the one with python3-numpy / python3-torch
endif()
find_package(Python 3.8 COMPONENTS Interpreter Development.Module QUIET)
if(NOT Python_FOUND)
  set(yaqa_python_why "no Python interpreter with development headers (Debian: python3-dev)")
  return()
endif()
if(NOT nanobind_DIR)
  execute_process(COMMAND ${Python_EXECUTABLE} -c "import nanobind; print(nanobind.cmake_dir())"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE dir ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT rc EQUAL 0)
    set(venv ${PROJECT_BINARY_DIR}/python-venv)
    set(vpy ${venv}/bin/python)
    execute_process(COMMAND ${vpy} -c "import nanobind; assert nanobind.__version__ == '${YAQA_NANOBIND_VERSION}'; print(nanobind.cmake_dir())"
                    RESULT_VARIABLE rc OUTPUT_VARIABLE dir ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(NOT rc EQUAL 0)
      message(STATUS "yaqa: installing nanobind==${YAQA_NANOBIND_VERSION} into ${venv} (pip --no-deps)")
      execute_process(COMMAND ${Python_EXECUTABLE} -m venv --system-site-packages ${venv}
                      RESULT_VARIABLE rc OUTPUT_QUIET ERROR_QUIET)
      if(rc EQUAL 0)
        execute_process(COMMAND ${vpy} -m pip install --disable-pip-version-check -q --no-deps
                                nanobind==${YAQA_NANOBIND_VERSION}
                        RESULT_VARIABLE rc OUTPUT_QUIET ERROR_VARIABLE err)
      endif()
      execute_process(COMMAND ${vpy} -c "import nanobind; print(nanobind.cmake_dir())"
                      RESULT_VARIABLE rc OUTPUT_VARIABLE dir ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
    endif()
  endif()
  if(rc EQUAL 0)
    set(nanobind_DIR ${dir} CACHE PATH "nanobind's CMake package directory" FORCE)
  endif()
endif()
if(nanobind_DIR)
  find_package(nanobind CONFIG QUIET)
endif()
if(nanobind_FOUND)
  set(YAQA_PYTHON_EXTENSION ON)
  message(STATUS "yaqa: Python extension yaqa._yaqa for ${Python_EXECUTABLE} (nanobind ${nanobind_VERSION})")
else()
  set(yaqa_python_why "nanobind ${YAQA_NANOBIND_VERSION} could not be found or pip-installed (python3-venv, PyPI)")
endif()
