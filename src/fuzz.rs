/*!
Structured fuzzing of every decoder of untrusted bytes (issue #14), on the
stable toolchain with proptest: a CI machine has no nightly, so no
cargo-fuzz. The targets are ordinary tests named `fuzz_*`, next to the
code they feed:

| target module | feeds |
| --- | --- |
| `store/local/fuzz/` | `records.rs`: queue records and files, queue file names; `jobfile.rs`: job files; `lock.rs`: the `lock` header (counter, spare bitmap, fence) |
| `history/fuzz.rs` | history files (both of them), read backwards in blocks |
| `cli/fuzz.rs` | durations, resource, job and slot names, `--since`, through the parse functions and clap definitions the CLI uses |
| `store/etcd/fuzz.rs` | record values, job values, key-values and range answers read from a cluster; the keys made from any prefix and name |

Each target runs a bounded number of cases so that `cargo test` stays fast
(about 3 s for all of them, in debug). `BATON_FUZZ_CASES=N` runs N cases
per light target instead (a heavy one, which makes big files or a state
directory per case, runs N divided by its weight; the black-box rounds of
`tests/cli/corrupt.rs` are N / 500), for the bounded run in CI, on the
debug build `cargo test` made just before (about 2 minutes on 2 cores):
`BATON_FUZZ_CASES=12000 cargo test --locked fuzz_`.
*/

use proptest::test_runner::Config;

/// How many cases a target of `weight` runs: `default` unless
/// `BATON_FUZZ_CASES` says how many a light target (weight 1) runs.
pub(crate) fn cases(default: u32, weight: u32) -> u32 {
    std::env::var("BATON_FUZZ_CASES")
        .ok()
        .and_then(|n| n.trim().parse::<u32>().ok())
        .map_or(default, |n| (n / weight.max(1)).max(1))
}

/// The proptest configuration of a target (see [`cases`]).
pub(crate) fn config(default: u32, weight: u32) -> Config {
    Config {
        cases: cases(default, weight),
        // Failures are kept under proptest-regressions/ and replayed first.
        ..Config::default()
    }
}
