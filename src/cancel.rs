/*!
`baton cancel [--running] ID|NAME...`: take jobs out of the queue (SPEC
"Taking a job out"). Being written.
*/

use std::path::PathBuf;

use crate::error::{Error, Result};

/// A validated `baton cancel`.
#[derive(Debug)]
pub(crate) struct CancelArgs {
    pub(crate) running: bool,
    pub(crate) dir: PathBuf,
    pub(crate) targets: Vec<String>,
}

pub(crate) fn cancel(args: CancelArgs) -> Result<u8> {
    let _ = (args.running, &args.dir, &args.targets);
    Err(Error::Internal("baton cancel is not built yet".into()))
}
