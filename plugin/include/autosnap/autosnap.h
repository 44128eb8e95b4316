#pragma once

/// Everything autosnap offers, in one include.

#include "autosnap/device.h"
#include "autosnap/errors.h"
#include "autosnap/fs.h"
#include "autosnap/manifest.h"
#include "autosnap/optimizer_state.h"
#include "autosnap/serialize.h"
#include "autosnap/state_dict.h"
#include "autosnap/store.h"
#include "autosnap/values.h"
#include "autosnap/version.h"
