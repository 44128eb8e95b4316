#pragma once

/// AUTOSNAP_API marks what libautosnap exports. The library is built with
/// hidden symbol visibility (as fmt's FMT_API and LevelDB's LEVELDB_EXPORT),
/// so only the public API declared with it is part of the shared library's
/// ABI; everything in plugin/src stays internal.
#if defined(__GNUC__) || defined(__clang__)
#define AUTOSNAP_API __attribute__((visibility("default")))
#else
#define AUTOSNAP_API
#endif
