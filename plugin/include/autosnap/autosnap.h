#pragma once

/// What a training program needs, in one include: the Snapshotter and its
/// Config, track() and the hooks, resumable samplers, save()/load() with the
/// values they take, state dicts, and the errors. Programs that read or
/// manage snapshot directories include autosnap/tools.h as well; multi-rank
/// jobs with a c10d store of their own, autosnap/cluster.h.

#include "autosnap/callback.h"
#include "autosnap/config.h"
#include "autosnap/device.h"
#include "autosnap/errors.h"
#include "autosnap/optimizer_state.h"
#include "autosnap/samplers.h"
#include "autosnap/serialize.h"
#include "autosnap/snapshotter.h"
#include "autosnap/state_dict.h"
#include "autosnap/torchscript.h"
#include "autosnap/values.h"
#include "autosnap/version.h"
