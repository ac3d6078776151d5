//! Segment files: naming, creation (header + preallocation) and the head being appended to.
//!
//! A segment is `journal-<id>.log`: a 24-byte header, then records back to back, then zeros up
//! to its preallocated length (`journal_max_file_length`: sparse via `set_len`, or a zero-filled
//! file prepared ahead, `prealloc`). A record never
//! spans two segments; a record larger than a whole segment gets a segment of its own, sized to
//! fit it (an "oversized" segment).

use std::sync::Arc;

use crate::journal::record::{segment_header, SEGMENT_HEADER_BYTES};
use crate::journal::storage::{StorageDir, StorageFile};
use crate::StoreError;

/// The file name of segment `id`.
pub fn segment_name(id: u32) -> String {
    format!("journal-{id}.log")
}

/// The id in a segment file name, if `name` is one.
pub fn parse_segment_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("journal-")?.strip_suffix(".log")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment being appended to.
#[derive(Debug, Clone)]
pub struct Head {
    /// Its id.
    pub id: u32,
    /// Its file.
    pub file: Arc<dyn StorageFile>,
    /// Where the next record goes.
    pub offset: u64,
    /// Its preallocated length: records must end at or before it.
    pub capacity_bytes: u64,
}

impl Head {
    /// Bytes still free.
    pub fn free_bytes(&self) -> u64 {
        self.capacity_bytes.saturating_sub(self.offset)
    }
}

/// Creates segment `id` able to hold at least `record_bytes` after its header: writes the
/// header, preallocates, syncs the file, and syncs the directory so the new name survives a
/// crash. The file must
/// not exist: two writers (a deposed master and its successor) never share a segment.
pub fn create_segment(
    dir: &dyn StorageDir,
    id: u32,
    file_length_bytes: u64,
    record_bytes: u64,
) -> Result<Head, StoreError> {
    let capacity_bytes = file_length_bytes.max(SEGMENT_HEADER_BYTES as u64 + record_bytes);
    let name = segment_name(id);
    let file = claim(dir, &name)?;
    file.write_at(0, &segment_header(id))
        .map_err(|e| StoreError::io("write segment header", e))?;
    file.set_len(capacity_bytes)
        .map_err(|e| StoreError::io("preallocate segment", e))?;
    // The header is durable before any record lands after it: a bad header in front of records
    // is then corruption, never a header lost while the records after it survived.
    file.sync_data()
        .map_err(|e| StoreError::io("fdatasync segment header", e))?;
    dir.sync_dir()
        .map_err(|e| StoreError::io("sync directory", e))?;
    tracing::debug!(segment = %name, capacity_bytes, "created journal segment");
    Ok(Head {
        id,
        file,
        offset: SEGMENT_HEADER_BYTES as u64,
        capacity_bytes,
    })
}

/// Makes the prepared, zero-filled file `prepared` segment `id` (see `prealloc`): stamps the
/// header on it and syncs it, claims the name exclusively (as [`create_segment`] does), renames
/// the file over the claim and syncs the directory. A crash leaves either no segment `id`, an
/// empty claim (as a crash inside `create_segment` may), or the whole segment with its header.
pub(crate) fn adopt_segment(
    dir: &dyn StorageDir,
    id: u32,
    prepared: crate::journal::prealloc::Prepared,
) -> Result<Head, StoreError> {
    let name = segment_name(id);
    let file = prepared.file;
    file.write_at(0, &segment_header(id))
        .map_err(|e| StoreError::io("write segment header", e))?;
    file.sync_data()
        .map_err(|e| StoreError::io("fdatasync segment header", e))?;
    claim(dir, &name)?;
    dir.rename(&prepared.name, &name)
        .map_err(|e| StoreError::io("rename a prepared segment into place", e))?;
    dir.sync_dir()
        .map_err(|e| StoreError::io("sync directory", e))?;
    tracing::debug!(segment = %name, capacity_bytes = prepared.capacity_bytes, "started a prepared (zero-filled) journal segment");
    Ok(Head {
        id,
        file,
        offset: SEGMENT_HEADER_BYTES as u64,
        capacity_bytes: prepared.capacity_bytes,
    })
}

/// Creates `name`, failing if it exists: the name is this writer's alone from here on.
fn claim(dir: &dyn StorageDir, name: &str) -> Result<Arc<dyn StorageFile>, StoreError> {
    dir.create_new(name).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            StoreError::Failed(format!(
                "segment {name} already exists: another writer created it (a newer master?)"
            ))
        } else {
            StoreError::io("create segment", e)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_others_are_rejected() {
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("journal-.log"), None);
        assert_eq!(parse_segment_name("journal-1.log.tmp"), None);
        assert_eq!(parse_segment_name("index.db"), None);
        assert_eq!(parse_segment_name("journal-+1.log"), None);
    }
}
