//! What a durable-write figure depends on, read from `/proc` and `/sys` (Linux): the
//! filesystem a directory is on, and the flags of the block device under it. A probe report
//! carries them so that a figure is never quoted without its conditions.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::Serialize;

/// The block device queue settings that decide what `fdatasync` and `O_DSYNC` cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    /// The whole disk's name in `/sys/block` (`vda`), not the partition's.
    pub name: String,
    /// `queue/fua`: 1 = the device honours Force Unit Access, so an `O_DSYNC` overwrite can be
    /// one FUA write; 0 = the kernel follows each durable write with a cache flush.
    pub fua: Option<String>,
    /// `queue/write_cache`: "write back" (a flush is needed for durability) or "write through".
    pub write_cache: Option<String>,
    /// `queue/logical_block_size`: the `O_DIRECT` alignment unit.
    pub logical_block_bytes: Option<u64>,
    /// `queue/physical_block_size`: writes smaller than this may be read-modify-write.
    pub physical_block_bytes: Option<u64>,
    /// `queue/rotational` as reported (virtual disks often say 1 whatever backs them).
    pub rotational: Option<String>,
}

/// The filesystem type of the mount holding `dir` (`ext4`, `tmpfs`, ...), from
/// `/proc/self/mountinfo`; `None` when that cannot be read.
pub fn filesystem_type(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // The longest mount point that is a prefix of `dir` is its mount (later lines win ties:
    // a mount stacked over another one is listed after it).
    let mut best: Option<(usize, String)> = None;
    for line in mountinfo.lines() {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = unescape(left.split(' ').nth(4)?);
        let fs_type = right.split(' ').next()?;
        if dir.starts_with(&mount_point) {
            let len = mount_point.len();
            let longer = match &best {
                Some((l, _)) => len >= *l,
                None => true,
            };
            if longer {
                best = Some((len, fs_type.to_owned()));
            }
        }
    }
    best.map(|(_, t)| t)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The queue settings of the block device holding `dir`; `None` when it is not on a block
/// device (tmpfs, overlay over several, network filesystems) or `/sys` is not readable.
pub fn device_info(dir: &Path) -> Option<DeviceInfo> {
    let dev = std::fs::metadata(dir).ok()?.dev();
    // glibc's gnu_dev_major / gnu_dev_minor.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let mut sys = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    if sys.join("partition").exists() {
        sys = sys.parent()?.to_path_buf();
    }
    let queue = sys.join("queue");
    if !queue.is_dir() {
        return None;
    }
    let read = |name: &str| {
        std::fs::read_to_string(queue.join(name))
            .ok()
            .map(|s| s.trim().to_owned())
    };
    Some(DeviceInfo {
        name: sys.file_name()?.to_string_lossy().into_owned(),
        fua: read("fua"),
        write_cache: read("write_cache"),
        logical_block_bytes: read("logical_block_size").and_then(|s| s.parse().ok()),
        physical_block_bytes: read("physical_block_size").and_then(|s| s.parse().ok()),
        rotational: read("rotational"),
    })
}
