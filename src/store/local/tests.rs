//! Unit tests of the local store that need more than one module.

use std::rc::Rc;

use super::ofd::{self, JobByte};
use super::records::{RECORD, key_of, queue_name};
use super::spares::SPARES;
use super::*;

fn open(path: &std::path::Path) -> Rc<StateDir> {
    Rc::new(StateDir::open(path, true).unwrap().unwrap())
}

fn queued(dir: &Rc<StateDir>, name: &str) -> LocalJob {
    let info = JobInfo {
        name: name.into(),
        resources: vec![Resource {
            name: "x".into(),
            mode: Mode::Exclusive,
        }],
        ..JobInfo::default()
    };
    match LocalJob::enqueue(dir, &info, Options::default()) {
        Ok(Entered::Queued(job, _)) => job,
        _ => panic!("enqueue {name}"),
    }
}

/// Once a job's command has ended and its alive lock is gone, another
/// job's decision may clear its records as dead and a new job may take
/// the freed record; the finishing job must then leave that one alone
/// (else the new job would vanish from the queue).
#[test]
fn a_finished_job_clears_only_its_own_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = open(&tmp.path().join("state"));
    let a = queued(&dir, "a");
    let index = a.places[0].index;
    // As a waiter's decision does when it finds `a` dead.
    clear_record(&a.places[0].queue, index).unwrap();
    let b = queued(&dir, "b");
    assert_eq!(b.places[0].index, index, "b takes the freed record");
    a.finish(0);
    let live = snapshot(&dir).unwrap();
    assert!(
        live.iter().any(|j| j.id == b.seq && !j.claims.is_empty()),
        "b's record must survive a's finish"
    );
}

/// A burst of more than 64 jobs (the old limit) leaves one spare per job, and
/// the next burst reuses those inodes instead of allocating new ones.
#[test]
fn a_burst_leaves_spares_that_the_next_burst_reuses() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state");
    let dir = open(&path);
    let inodes = |prefix: &str| -> std::collections::BTreeSet<u64> {
        std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .map(|e| e.metadata().unwrap().ino())
            .collect()
    };
    let burst = |n: usize| {
        let jobs: Vec<_> = (0..n).map(|i| queued(&dir, &format!("job{i}"))).collect();
        let files = inodes("j.");
        for job in jobs {
            job.finish(0);
        }
        files
    };
    let first = burst(100);
    assert_eq!(first.len(), 100);
    let spares = inodes("s.");
    assert_eq!(spares, first, "every finished job's file is kept");
    assert!(
        path.join(format!("s.{}", SPARES - 1)).exists(),
        "retired to the top"
    );
    // The first burst's waiters sleep on the job ahead through its file
    // (an interest lock), and let go of it from their own threads once it
    // ends: a spare still held is rightly skipped. Wait for that event
    // (the kernel's), within a bound.
    let held: Vec<std::fs::File> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("s."))
        .map(|e| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(e.path())
                .unwrap()
        })
        .collect();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for fd in &held {
            ofd::write_wait(fd, JobByte::Interest).unwrap();
            ofd::unlock(fd, JobByte::Interest).unwrap();
        }
        let _ = tx.send(());
    });
    rx.recv_timeout(std::time::Duration::from_secs(30))
        .expect("the first burst's waiters let go of the spares");
    let second = burst(100);
    assert_eq!(second, first, "the second burst allocated no inode");
    assert!(inodes("j.").is_empty());
}

/// A queue file left empty stays (one free record) for the next job of
/// the resource, and the periodic sweep removes it.
#[test]
fn an_empty_queue_file_stays_until_the_sweep() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state");
    let dir = open(&path);
    let q = path.join(queue_name(key_of("x")));
    let jobs: Vec<_> = (0..3).map(|i| queued(&dir, &format!("job{i}"))).collect();
    assert_eq!(std::fs::metadata(&q).unwrap().len(), 3 * RECORD as u64);
    for job in jobs {
        job.finish(0);
    }
    assert_eq!(std::fs::metadata(&q).unwrap().len(), RECORD as u64);
    assert!(snapshot(&dir).unwrap().is_empty());
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&q).unwrap());
    queued(&dir, "again").finish(0);
    let again = std::fs::metadata(&q).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::ino(&again), ino, "reused");
    // Hostile look-alikes are left alone, and nothing is followed.
    let outside = tmp.path().join("outside");
    std::fs::write(&outside, "").unwrap();
    let link = path.join(queue_name(key_of("link")));
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let subdir = path.join(queue_name(key_of("dir")));
    std::fs::create_dir(&subdir).unwrap();
    let locked = dir.lock().unwrap();
    locked.sweep_orphans();
    assert!(!q.exists(), "the sweep removes an empty queue file");
    assert!(link.symlink_metadata().is_ok() && subdir.is_dir());
    assert!(outside.exists());
}
