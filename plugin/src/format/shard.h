#pragma once

// One shard = one file in PyTorch's torch.save format (a zip of data.pkl plus
// one record per storage). Writing uses LibTorch's Pickler and autosnap's
// ZipWriter (PyTorchStreamWriter's layout, byte for byte); reading uses
// autosnap's own strict zip reader and restricted unpickler.

#include <ATen/core/ivalue.h>
#include <c10/core/Device.h>

#include "autosnap/fs.h"
#include "format/checksum.h"

namespace autosnap {
namespace format {

/// A value a shard holds as it is, with no tensor or container in it: None,
/// bool, int, float, complex, str, device.
bool is_plain_value(const c10::IValue& value);

/// Throws autosnap::Error naming the first value torch.save-format files
/// cannot hold (sparse or quantized tensors, TorchScript objects, ...), with
/// its position, e.g. "value['model'][3]". Returns the bytes of its tensors'
/// storages (a shared one counted at each use): near enough the file's size.
uint64_t check_saveable(const c10::IValue& value);

/// Streams `value` into `out` (never buffering tensor data). Does not sync
/// or close `out`.
void write_shard(const c10::IValue& value, WritableFile& out);

/// Reads a torch.save-format file; tensors are created on `device` with their
/// storage sharing intact. With `check_crc` each zip record's CRC-32 is
/// verified (useful when no manifest checksum covers the file). With `digest`,
/// the whole file is also hashed (XXH3-64) in the same single pass and its
/// digest stored there, also when parsing throws (except on an IoError), so the
/// caller can compare it before using the value or report a damaged file.
c10::IValue read_shard(ReadableFile& file, const c10::Device& device, bool check_crc,
                       FileDigest* digest = nullptr);

}  // namespace format
}  // namespace autosnap
