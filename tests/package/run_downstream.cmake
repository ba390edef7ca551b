# Install the package from the build tree into a scratch prefix, then configure, build and
# run a downstream project that only calls find_package(kadapter CONFIG REQUIRED).
set(prefix "${KA_WORK_DIR}/prefix")
set(build "${KA_WORK_DIR}/build")
file(REMOVE_RECURSE "${prefix}" "${build}")

function(run_step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${out}\n${err}")
  endif()
  message(STATUS "${what}: ok")
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

run_step("install" ${CMAKE_COMMAND} --install "${KA_BUILD_DIR}" --prefix "${prefix}")
run_step("configure downstream" ${CMAKE_COMMAND} -S "${KA_SOURCE_DIR}" -B "${build}"
         -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release)
run_step("build downstream" ${CMAKE_COMMAND} --build "${build}")
run_step("run downstream" "${build}/downstream" "${KA_FIXTURE_DIR}/encoder/tiny_roberta")
message(STATUS "${last_output}")
