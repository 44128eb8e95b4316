#pragma once

// How the examples end on an error: one line on stderr naming the program,
// and an exit status that tells what kind of error it was (README, "Exit
// statuses of the examples"):
//   2  bad configuration (autosnap::ConfigError: the message names file:line:column)
//   3  the snapshot does not fit this program (autosnap::StateMismatch)
//   4  the snapshot directory is locked by another run (autosnap::LockedError)
//   5  any other autosnap error (I/O, no valid snapshot with resume: required, ...)
//   1  anything else
// A stop asked for by a signal ends with signals.exit_code (snap.exit_code()).

#include <autosnap/errors.h>
#include <c10/util/Exception.h>

#include <exception>
#include <iostream>

namespace examples {

constexpr int kExitOtherError = 1, kExitConfig = 2, kExitStateMismatch = 3, kExitLocked = 4,
              kExitAutosnapError = 5;

/// Runs `body` (which returns the exit status) and turns an escaping exception into a status.
template <typename Body>
int run_reporting_errors(const char* program, Body&& body) {
  auto fail = [&](const std::exception& e, int status) {
    std::cerr << program << ": " << e.what() << std::endl;
    return status;
  };
  try {
    return body();
  } catch (const autosnap::ConfigError& e) {
    return fail(e, kExitConfig);
  } catch (const autosnap::StateMismatch& e) {
    return fail(e, kExitStateMismatch);
  } catch (const autosnap::LockedError& e) {
    return fail(e, kExitLocked);
  } catch (const autosnap::Error& e) {
    return fail(e, kExitAutosnapError);
  } catch (const c10::Error& e) {  // LibTorch's: without its stack trace, one line
    std::cerr << program << ": " << e.what_without_backtrace() << std::endl;
    return kExitOtherError;
  } catch (const std::exception& e) {
    return fail(e, kExitOtherError);
  }
}

}  // namespace examples
