/*!
`baton cancel [--running] ID|NAME...` (SPEC "Taking a job out"): a waiting
job named by its arrival id or its job name leaves the queue at once, its
baton saying who cancelled it and exiting 75 without running the command;
with `--running`, a running one's command gets SIGTERM to its group and its
baton exits with the command's status. The store decides each one against
the job's grant, atomically (`store::Store::cancel`).

Exit status: 0 when every argument matched a job and each was cancelled; 1
when one matched nothing to cancel (no live job of that id or name, or only
running ones without `--running`), named in a line each; 77 when one was
another user's (root may cancel anyone's).
*/

use crate::cli::Where;
use crate::error::{Result, exit};
use crate::progress::say;
use crate::store::etcd::EtcdStore;
use crate::store::local::{LocalStore, StateDir};
use crate::store::{Cancelled, Store};

/// A validated `baton cancel`.
#[derive(Debug)]
pub(crate) struct CancelArgs {
    pub(crate) running: bool,
    pub(crate) place: Where,
    pub(crate) targets: Vec<String>,
}

pub(crate) fn cancel(args: CancelArgs) -> Result<u8> {
    let done = match &args.place {
        Where::Local(path) => match StateDir::open(path, false)? {
            Some(dir) => LocalStore::new(dir).cancel(&args.targets, args.running)?,
            None => Vec::new(),
        },
        Where::Etcd(e) => EtcdStore::new(e)?.cancel(&args.targets, args.running)?,
    };
    let mut code = 0;
    let mut out = String::new();
    for (i, target) in args.targets.iter().enumerate() {
        let mine: Vec<_> = done.iter().filter(|c| c.target == i).collect();
        let mut any = false;
        for c in &mine {
            match c.done {
                Cancelled::Waiting => {
                    any = true;
                    out += &format!("cancelled job {} ({}): it was waiting\n", c.id, c.name);
                }
                Cancelled::Running => {
                    any = true;
                    out += &format!(
                        "cancelled job {} ({}): its command is being stopped\n",
                        c.id, c.name
                    );
                }
                Cancelled::LeftRunning => {}
                Cancelled::NotYours(uid) => {
                    any = true;
                    code = exit::UNSAFE_DIR;
                    say(&format!(
                        "baton: job {} ({}) is {}'s, not yours: not cancelled\n",
                        c.id,
                        c.name,
                        crate::history::user_name(uid)
                    ));
                }
            }
        }
        if !any {
            if code == 0 {
                code = 1;
            }
            let running: Vec<String> = mine
                .iter()
                .filter(|c| c.done == Cancelled::LeftRunning)
                .map(|c| c.id.to_string())
                .collect();
            if running.is_empty() {
                say(&format!("baton: no waiting or running job {target:?}\n"));
            } else {
                say(&format!(
                    "baton: job {target:?} is running (id {}): --running stops it\n",
                    running.join(", ")
                ));
            }
        }
    }
    let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
    Ok(code)
}
