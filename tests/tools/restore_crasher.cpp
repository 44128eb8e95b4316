// Helper for the crash-loop test: a "training job" whose user state makes
// the process abort while it is being restored.
//
//   restore_crasher DIR write            snapshots step 1 (value 1) and step 2 (value 666)
//   restore_crasher DIR write-healthy    snapshots step 1 (value 1) and step 2 (value 2)
//   restore_crasher DIR resume           restores; loading the value 666 calls abort()
//   restore_crasher DIR resume-and-wait  restores, then waits (to be killed) before its first step
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>

#include "autosnap/autosnap.h"

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  const std::string directory = argv[1], mode = argv[2];
  auto config = autosnap::Config::from_string("directory: " + directory +
                                                  "\ntriggers: {every_steps: 1, on_train_end: false}\n"
                                                  "retention: {keep_last: 0}\ncontrol: {socket: false}\n"
                                                  "restore: {max_attempts: 3}\nlog_level: warn\n",
                                              "restore_crasher");
  int64_t value = 0;
  autosnap::Snapshotter snap(config);
  snap.track(
      "value", [&] { return c10::IValue(value); },
      [&](const c10::IValue& saved) {
        if (saved.toInt() == 666) std::abort();  // a bug in user code, triggered by this snapshot
        value = saved.toInt();
      });
  if (mode == "write" || mode == "write-healthy") {
    value = 1;
    snap.on_step_end(1);
    value = mode == "write" ? 666 : 2;
    snap.on_step_end(2);
    snap.close();
    return 0;
  }
  auto resumed = snap.on_train_start();
  std::cout << "resumed from step " << (resumed ? resumed->step : -1) << " with value " << value << std::endl;
  if (mode == "resume-and-wait") std::this_thread::sleep_for(std::chrono::seconds(60));
  snap.on_step_end(resumed ? resumed->step + 1 : 0);  // one completed step: the restore did not crash us
  return 0;
}
