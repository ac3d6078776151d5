//! The page file (`index.pages`): the blocks of the index's sequence maps, written by
//! checkpoints and read back on demand through a bounded cache.
//!
//! A page is a fixed-size slot of [`PAGE_BYTES`] at `page * PAGE_BYTES`, of which a block uses
//! a 32-byte header and 16 bytes per slot (see `docs/journal-format.md`). Pages are never
//! updated in place while a durable checkpoint refers to them: a checkpoint writes the blocks
//! changed since the last one to pages that the last durable root (`index.db`) does not name,
//! syncs this file, then replaces the root. A crash at any point leaves the previous root and
//! every page it names intact. The root keeps each page's CRC, so a page that is stale, torn or
//! overwritten by someone else is never taken for the block the root means.
//!
//! The cache keeps bodies up to a byte budget (`index_cache_bytes`), least recently used out
//! first; a body still held by the map (changed, or not yet demoted) is not counted twice in
//! what the process holds, but the budget counts only what the cache holds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::journal::seqmap::{Block, Slot, BLOCK_SLOTS_MAX};
use crate::journal::storage::StorageFile;
use crate::StoreError;

/// The page file's name.
pub const PAGES_FILE: &str = "index.pages";
/// Bytes between the starts of two pages (the largest block, 2048 slots, takes 32 KiB + 32).
pub const PAGE_BYTES: u64 = 40 * 1024;
/// Bytes of a page's header.
pub const PAGE_HEADER_BYTES: usize = 32;
/// The magic at the start of every page.
pub const PAGE_MAGIC: &[u8; 4] = b"FMQP";
/// Default of `index_cache_bytes`.
pub const INDEX_CACHE_BYTES_DEFAULT: u64 = 32 * 1024 * 1024;

/// Counters of the page file.
#[derive(Debug, Default)]
pub(crate) struct PageCounters {
    pub(crate) pages_written: AtomicU64,
    pub(crate) page_reads: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
}

#[derive(Debug, Default)]
struct Cache {
    /// Page -> (CRC, body, last use).
    entries: HashMap<u32, (u32, Arc<Block>, u64)>,
    /// Last use -> page, oldest first.
    order: BTreeMap<u64, u32>,
    bytes: usize,
    clock: u64,
}

/// The page file and its cache.
#[derive(Debug)]
pub(crate) struct Pager {
    file: Arc<dyn StorageFile>,
    budget: usize,
    cache: Mutex<Cache>,
    /// Pages the last durable root names: a checkpoint writes only to others.
    committed: Mutex<BTreeSet<u32>>,
    pub(crate) counters: PageCounters,
}

fn corrupt(page: u32, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        location: format!("{PAGES_FILE} page {page}"),
        reason: reason.into(),
    }
}

/// CRC32C of a page's bytes but its CRC field (bytes 24..28).
fn page_crc(bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&bytes[..24]), &bytes[28..])
}

/// Encodes `block` as page `page`; returns the bytes and their CRC (which the root keeps).
pub(crate) fn encode_page(page: u32, block: &Block) -> (Vec<u8>, u32) {
    let mut out = Vec::with_capacity(PAGE_HEADER_BYTES + block.slots.len() * 16);
    out.extend_from_slice(PAGE_MAGIC);
    out.extend_from_slice(&page.to_le_bytes());
    out.extend_from_slice(&block.base.to_le_bytes());
    out.extend_from_slice(&(block.slots.len() as u32).to_le_bytes());
    out.extend_from_slice(&(block.live as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 8]); // CRC (below) and reserved
    for s in &block.slots {
        out.extend_from_slice(&s.delta.to_le_bytes());
        out.extend_from_slice(&s.segment.to_le_bytes());
        out.extend_from_slice(&s.offset.to_le_bytes());
        out.extend_from_slice(&s.len.to_le_bytes());
    }
    let crc = page_crc(&out);
    out[24..28].copy_from_slice(&crc.to_le_bytes());
    (out, crc)
}

/// Decodes page `page` whose root entry says `crc`.
pub(crate) fn decode_page(page: u32, crc: u32, bytes: &[u8]) -> Result<Block, StoreError> {
    if bytes.len() < PAGE_HEADER_BYTES || &bytes[0..4] != PAGE_MAGIC {
        return Err(corrupt(page, "bad magic"));
    }
    let word =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let stored = word(24);
    let actual = page_crc(bytes);
    if stored != actual || actual != crc {
        return Err(corrupt(
            page,
            format!("CRC32C {actual:08x}, page says {stored:08x}, root says {crc:08x}"),
        ));
    }
    if word(4) != page {
        return Err(corrupt(page, format!("page says it is page {}", word(4))));
    }
    let base = u64::from(word(8)) | (u64::from(word(12)) << 32);
    let n = word(16) as usize;
    if n > BLOCK_SLOTS_MAX || bytes.len() != PAGE_HEADER_BYTES + n * 16 {
        return Err(corrupt(page, format!("{n} slots in {} bytes", bytes.len())));
    }
    let mut slots = Vec::with_capacity(n);
    for i in 0..n {
        let at = PAGE_HEADER_BYTES + i * 16;
        slots.push(Slot {
            delta: word(at),
            segment: word(at + 4),
            offset: word(at + 8),
            len: word(at + 12),
        });
    }
    if slots.windows(2).any(|w| w[0].delta >= w[1].delta) {
        return Err(corrupt(page, "slots out of order"));
    }
    let block = Block::with_slots(base, slots);
    if block.live != word(20) as usize {
        return Err(corrupt(page, "live count does not match its slots"));
    }
    block.set_written(Some((page, crc)));
    Ok(block)
}

impl Pager {
    /// A pager over `file` with a cache of `budget` bytes.
    pub(crate) fn new(file: Arc<dyn StorageFile>, budget: u64) -> Pager {
        Pager {
            file,
            budget: usize::try_from(budget).unwrap_or(usize::MAX),
            cache: Mutex::new(Cache::default()),
            committed: Mutex::new(BTreeSet::new()),
            counters: PageCounters::default(),
        }
    }

    /// The body at `page` with `crc` and `slots` slots: from the cache, or read and cached.
    pub(crate) fn read(&self, page: u32, crc: u32, slots: usize) -> Result<Arc<Block>, StoreError> {
        {
            let mut c = self.cache.lock();
            let c = &mut *c;
            if let Some((have, body, used)) = c.entries.get_mut(&page) {
                if *have == crc {
                    c.order.remove(used);
                    c.clock += 1;
                    *used = c.clock;
                    c.order.insert(c.clock, page);
                    self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(body.clone());
                }
            }
        }
        let body = Arc::new(self.read_uncached(page, crc, slots)?);
        self.cache_insert(page, crc, body.clone());
        Ok(body)
    }

    /// Reads and checks a page without the cache.
    pub(crate) fn read_uncached(
        &self,
        page: u32,
        crc: u32,
        slots: usize,
    ) -> Result<Block, StoreError> {
        if slots > BLOCK_SLOTS_MAX {
            return Err(corrupt(page, format!("{slots} slots")));
        }
        let mut buf = vec![0u8; PAGE_HEADER_BYTES + slots * 16];
        self.file
            .read_at(u64::from(page) * PAGE_BYTES, &mut buf)
            .map_err(|e| StoreError::io("read index page", e))?;
        self.counters.page_reads.fetch_add(1, Ordering::Relaxed);
        decode_page(page, crc, &buf)
    }

    /// Puts a body in the cache (replacing what it had for that page), then evicts the least
    /// recently used bodies down to the budget.
    pub(crate) fn cache_insert(&self, page: u32, crc: u32, body: Arc<Block>) {
        let mut c = self.cache.lock();
        let c = &mut *c;
        if let Some((_, old, used)) = c.entries.remove(&page) {
            c.order.remove(&used);
            c.bytes -= old.heap_bytes();
        }
        c.clock += 1;
        c.bytes += body.heap_bytes();
        c.order.insert(c.clock, page);
        c.entries.insert(page, (crc, body, c.clock));
        while c.bytes > self.budget {
            let Some((_, victim)) = c.order.pop_first() else {
                break;
            };
            if let Some((_, old, _)) = c.entries.remove(&victim) {
                c.bytes -= old.heap_bytes();
            }
        }
    }

    /// Bytes the cache holds.
    pub(crate) fn cache_bytes(&self) -> usize {
        self.cache.lock().bytes
    }

    /// Writes `block` to `page` (not synced); returns the CRC.
    pub(crate) fn write(&self, page: u32, block: &Block) -> Result<u32, StoreError> {
        let (bytes, crc) = encode_page(page, block);
        self.file
            .write_at(u64::from(page) * PAGE_BYTES, &bytes)
            .map_err(|e| StoreError::io("write index page", e))?;
        self.counters.pages_written.fetch_add(1, Ordering::Relaxed);
        Ok(crc)
    }

    /// Makes the pages written so far durable.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        self.file
            .sync_data()
            .map_err(|e| StoreError::io("fdatasync index.pages", e))
    }

    /// Pages the last durable root names.
    pub(crate) fn committed(&self) -> BTreeSet<u32> {
        self.committed.lock().clone()
    }

    /// Records the pages a root that is now durable names.
    pub(crate) fn set_committed(&self, pages: BTreeSet<u32>) {
        *self.committed.lock() = pages;
    }

    /// Forgets the file's contents: after a rebuild from the journal nothing durable names a
    /// page (the old root is about to be replaced), so every page may be rewritten.
    pub(crate) fn reset(&self) {
        self.committed.lock().clear();
        let mut c = self.cache.lock();
        *c = Cache::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::storage::{MemDir, StorageDir};

    fn block(base: u64, n: u32) -> Block {
        let slots = (0..n)
            .map(|i| Slot {
                delta: i * 2,
                segment: 1 + i / 100,
                offset: 24 + i * 40,
                len: if i % 7 == 3 {
                    crate::journal::seqmap::TOMBSTONE
                } else {
                    16
                },
            })
            .collect();
        Block::with_slots(base, slots)
    }

    #[test]
    fn a_page_round_trips_and_any_flipped_bit_or_other_crc_is_refused() {
        let b = block(1 << 40, 300);
        let (bytes, crc) = encode_page(7, &b);
        let back = decode_page(7, crc, &bytes).unwrap();
        assert_eq!(back.base, b.base);
        assert_eq!(back.slots, b.slots);
        assert_eq!(back.live, b.live);
        assert_eq!(back.written(), Some((7, crc)));
        assert!(decode_page(8, crc, &bytes).is_err(), "another page's slot");
        assert!(
            decode_page(7, crc ^ 1, &bytes).is_err(),
            "the root means other content"
        );
        for i in [0, 5, 9, 17, 21, 30, 40, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x04;
            assert!(decode_page(7, crc, &bad).is_err(), "flip at {i} undetected");
        }
    }

    #[test]
    fn the_cache_keeps_its_budget_and_evicts_the_least_recently_used() {
        let dir = MemDir::new();
        let pager = Pager::new(dir.open(PAGES_FILE, true).unwrap(), 3 * 17_000);
        let mut crcs = Vec::new();
        for page in 0..6u32 {
            let b = block(u64::from(page) * 10_000, 1024);
            crcs.push(pager.write(page, &b).unwrap());
        }
        for page in 0..6u32 {
            pager.read(page, crcs[page as usize], 1024).unwrap();
            assert!(pager.cache_bytes() <= 3 * 17_000);
        }
        // Pages 3, 4, 5 are cached; 0 was evicted first.
        let reads = pager.counters.page_reads.load(Ordering::Relaxed);
        pager.read(5, crcs[5], 1024).unwrap();
        assert_eq!(
            pager.counters.page_reads.load(Ordering::Relaxed),
            reads,
            "5 is a hit"
        );
        pager.read(0, crcs[0], 1024).unwrap();
        assert_eq!(
            pager.counters.page_reads.load(Ordering::Relaxed),
            reads + 1,
            "0 was evicted"
        );
        // A cached body is not returned for other content at the same page.
        let other = block(99, 10);
        let crc = pager.write(5, &other).unwrap();
        assert_eq!(pager.read(5, crc, 10).unwrap().base, 99);
    }
}
