//! The filesystem mounted for real (needs root and /dev/fuse; fails, never skips, without
//! them): ordinary std::fs calls through the kernel, then power cuts.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use ferromq_powerfs::{LossMode, PowerFs};

fn mount(dir: &Path) -> PowerFs {
    PowerFs::mount(dir).unwrap_or_else(|e| panic!("{e}"))
}

fn read(path: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    File::open(path).unwrap().read_to_end(&mut v).unwrap();
    v
}

fn sync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

#[test]
fn synced_writes_survive_a_cut_and_unsynced_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut fs = mount(dir.path());
    let root = dir.path();
    let mut f = File::create(root.join("log")).unwrap();
    sync_dir(root);
    f.write_all(&[1u8; 10_000]).unwrap();
    f.sync_data().unwrap();
    f.write_all(&[2u8; 5_000]).unwrap();
    f.set_len(20_000).unwrap();
    assert_eq!(
        read(&root.join("log")).len(),
        20_000,
        "visible before the cut"
    );
    let usage = fs.usage();
    assert!(usage.pages_unsynced >= 2, "{usage:?}");
    drop(f);

    let r = fs.cut_power(LossMode::DropAll).unwrap();
    assert!(r.pages_lost >= 2, "{r:?}");
    assert_eq!(read(&root.join("log")), vec![1u8; 10_000]);
    // Writable again after the remount.
    let mut f = OpenOptions::new()
        .append(true)
        .open(root.join("log"))
        .unwrap();
    f.write_all(b"more").unwrap();
    f.sync_all().unwrap();
    drop(f);
    fs.cut_power(LossMode::DropAll).unwrap();
    assert_eq!(read(&root.join("log")).len(), 10_004);
}

#[test]
fn a_rename_and_a_create_without_a_directory_fsync_are_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut fs = mount(dir.path());
    let root = dir.path();
    std::fs::create_dir(root.join("d")).unwrap();
    sync_dir(root);
    let d = root.join("d");
    for (name, body) in [("index", b"old"), ("index.tmp", b"new")] {
        let mut f = File::create(d.join(name)).unwrap();
        f.write_all(body).unwrap();
        f.sync_all().unwrap();
    }
    sync_dir(&d);
    std::fs::rename(d.join("index.tmp"), d.join("index")).unwrap();
    let mut f = File::create(d.join("segment-2")).unwrap();
    f.write_all(b"synced data, unsynced name").unwrap();
    f.sync_all().unwrap();
    drop(f);

    let r = fs.cut_power(LossMode::DropAll).unwrap();
    assert_eq!(r.dirs_lost, 1, "{r:?}");
    assert_eq!(read(&d.join("index")), b"old");
    assert_eq!(read(&d.join("index.tmp")), b"new");
    assert!(!d.join("segment-2").exists());

    std::fs::rename(d.join("index.tmp"), d.join("index")).unwrap();
    std::fs::remove_file(d.join("index")).ok();
    sync_dir(&d);
    fs.cut_power(LossMode::DropAll).unwrap();
    assert!(!d.join("index").exists() && !d.join("index.tmp").exists());
}

#[test]
fn a_torn_cut_tears_the_last_unsynced_page_at_a_sector() {
    let dir = tempfile::tempdir().unwrap();
    let mut fs = mount(dir.path());
    let path = dir.path().join("j");
    let mut f = File::create(&path).unwrap();
    sync_dir(dir.path());
    f.write_all(&[1u8; 4096]).unwrap();
    f.sync_data().unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(&[2u8; 8192]).unwrap();
    drop(f);
    let r = fs.cut_power(LossMode::TornLastPage { seed: 7 }).unwrap();
    assert_eq!(r.pages_torn, 1, "{r:?}");
    let c = read(&path);
    assert!(c[..4096].iter().all(|b| *b == 2), "earlier pages whole");
    assert_eq!((c.len() - 4096) % 512, 0, "torn at a sector: {}", c.len());
    assert!(c[4096..].iter().all(|b| *b == 2));
}

#[test]
fn random_cuts_with_one_seed_lose_the_same_pages() {
    let run = |seed: u64| -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let mut fs = mount(dir.path());
        let path = dir.path().join("j");
        let mut f = File::create(&path).unwrap();
        sync_dir(dir.path());
        for p in 0..32u8 {
            f.write_all(&[p + 1; 4096]).unwrap();
        }
        drop(f);
        fs.cut_power(LossMode::RandomPages { seed }).unwrap();
        read(&path).chunks(4096).map(|p| p[0]).collect()
    };
    let a = run(5);
    assert_eq!(a, run(5));
    assert!(a.contains(&0), "some pages lost: {a:?}");
    assert!(a.iter().any(|p| *p != 0), "some pages kept: {a:?}");
}
