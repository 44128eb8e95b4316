#pragma once

/// Everything autosnap offers, in one include.

#include "autosnap/callback.h"
#include "autosnap/config.h"
#include "autosnap/device.h"
#include "autosnap/errors.h"
#include "autosnap/fs.h"
#include "autosnap/manifest.h"
#include "autosnap/optimizer_state.h"
#include "autosnap/samplers.h"
#include "autosnap/serialize.h"
#include "autosnap/snapshotter.h"
#include "autosnap/state_dict.h"
#include "autosnap/store.h"
#include "autosnap/torchscript.h"
#include "autosnap/values.h"
#include "autosnap/version.h"
