#pragma once

/// For programs that read or manage snapshot directories rather than train:
/// the store, one opened snapshot, manifests, retention and the file-system
/// seam. (`autosnap.h` is the training face and does not bring these in.)

#include "autosnap/fs.h"
#include "autosnap/manifest.h"
#include "autosnap/retention.h"
#include "autosnap/snapshot.h"
#include "autosnap/store.h"
