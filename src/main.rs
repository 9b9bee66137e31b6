/*!
baton: run commands that share a resource one at a time, in priority order,
with no daemon, no polling and no stale locks. `main` only dispatches; see
`cli.rs` for the command line and `docs/design.md` for the theory of
operation.
*/

mod alloc;
mod cancel;
mod cli;
mod error;
#[cfg(test)]
mod fuzz;
mod history;
mod job;
mod progress;
mod queue;
mod run;
mod signals;
mod status;
mod store;
mod terminal;
mod unit;

/// See `alloc.rs`: a short-lived process should touch few fresh pages.
#[global_allocator]
static GLOBAL: alloc::Bump = alloc::Bump::new();

fn main() -> std::process::ExitCode {
    // SIGHUP, SIGINT and SIGTERM are blocked already, before the runtime
    // started (see `signals::BLOCK_AT_START`).
    std::process::ExitCode::from(cli::main())
}
