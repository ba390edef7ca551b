// Boost.Test with our own main(): a test that cannot run on this machine (no GPU, no optional
// model) returns 77, which CTest reports as skipped.
//
// Usage: #define BOOST_TEST_MODULE name, include this header, then define
//   bool ka_test_can_run(std::string& why_not);
#pragma once

#ifndef BOOST_TEST_DYN_LINK
#define BOOST_TEST_DYN_LINK
#endif
#define BOOST_TEST_NO_MAIN
#include <boost/test/unit_test.hpp>

#include <cstdio>
#include <string>

bool ka_test_can_run(std::string& why_not);

int main(int argc, char* argv[]) {
  std::string why_not;
  if (!ka_test_can_run(why_not)) {
    std::printf("skipped: %s\n", why_not.c_str());
    return 77;
  }
  return boost::unit_test::unit_test_main(&init_unit_test, argc, argv);
}
