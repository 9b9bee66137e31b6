//! Fuzz targets of the state directory's decoders (see `src/fuzz.rs`):
//! queue records and files, queue file names and the other names baton
//! makes, job files, and the `lock` header (arrival counter, spare bitmap,
//! fencing counter). Every input is untrusted: another process of the
//! same user, a crash or a disk may have written anything there.
//!
//! One file per decoder: `records.rs` (queue records, queue files, names),
//! `jobfile.rs` (job files), `lock.rs` (the `lock` header).

mod jobfile;
mod lock;
mod records;

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;

use proptest::prelude::*;

use crate::queue::Mode;

pub(super) fn arb_mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Exclusive),
        Just(Mode::Shared),
        (1u32..).prop_map(Mode::Slots),
        Just(Mode::Slots(1)),
    ]
}

/// A scratch file that each case rewrites.
pub(super) struct Scratch {
    file: File,
    fd: OwnedFd,
}

impl Scratch {
    pub(super) fn new() -> Scratch {
        let file = tempfile::tempfile().unwrap();
        let fd = OwnedFd::from(file.try_clone().unwrap());
        Scratch { file, fd }
    }

    pub(super) fn holding(&self, bytes: &[u8]) -> &OwnedFd {
        self.file.set_len(0).unwrap();
        self.file.write_all_at(bytes, 0).unwrap();
        &self.fd
    }

    pub(super) fn contents(&self) -> Vec<u8> {
        let len = self.file.metadata().unwrap().len() as usize;
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, 0).unwrap();
        buf
    }
}
