# Passed to llama-cpp-python's build (CMAKE_PROJECT_llama.cpp_INCLUDE): Python never loads
# llama.cpp's `common` library, and skipping it halves the compile time.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "" FORCE)
