//! Fuzz targets of the command line's parsers (see `src/fuzz.rs`):
//! durations (human and flock-style seconds), resource, job and slot
//! names, `--since`, and whole argument lists, through the functions and
//! clap definitions `baton` itself uses. Never a panic; the documented
//! outcome (a value, or a one-line error and exit 64).

use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// Strings near what the parsers take, and anything.
fn arb_duration_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ +-]?[0-9]{1,22}(\\.[0-9]{0,12})?(e[+-]?[0-9]{1,3})? ?(ns|us|ms|s|sec|m|min|h|d|w|M|y|)",
        "([0-9]{1,4}(h|m|s|ms) ?){1,4}",
        "[ \t]*(nan|NaN|inf|-inf|infinity|-0|0|\\.|e5|1e400|)[ \t\n]*",
        "[0-9]{1,3}[\n\u{0}\u{7f}][0-9a-z]{0,3}",
    ]
}

fn arb_name_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z~/.é-]{0,10}[\n\t\u{0}\u{7f}\u{85}\u{9f}]?[a-z]{0,3}",
        "(a|é|\u{1f600}){120,130}",
        // Around the 255-byte limit.
        "a{250,260}",
        "é{126,129}",
        Just(String::new()),
    ]
}

/// What `baton` prints for a clap error: one line.
fn assert_one_line(e: &clap::Error) {
    let line = one_line(&e.to_string());
    assert!(!line.is_empty() && !line.contains('\n'), "{line:?}");
}

proptest! {
    #![proptest_config(crate::fuzz::config(400, 1))]

    /// Any text as a DUR: a value only for bare non-negative seconds or a
    /// human duration, else an error that names the text; never a panic.
    #[test]
    fn fuzz_durations(s in arb_duration_text()) {
        match parse_duration(&s) {
            Ok(d) => {
                let t = s.trim();
                match t.parse::<f64>() {
                    Ok(x) => {
                        prop_assert!(x >= 0.0 || x == 0.0, "negative {:?}", s);
                        prop_assert_eq!(Some(d), Duration::try_from_secs_f64(x).ok());
                    }
                    Err(_) => prop_assert_eq!(humantime::parse_duration(t).ok(), Some(d)),
                }
            }
            Err(e) => {
                prop_assert!(e.starts_with("invalid duration"));
                prop_assert!(humantime::parse_duration(s.trim()).is_err());
                prop_assert!(s.trim().parse::<f64>().map_or(true, |x| Duration::try_from_secs_f64(x).is_err()));
            }
        }
    }

    /// What `baton` writes as a duration reads back as that duration.
    #[test]
    fn fuzz_durations_round_trip(secs in 0u64..(1 << 40), nanos in 0u32..1_000_000_000, ms in 0u64..(1 << 30)) {
        let d = Duration::new(secs, nanos);
        prop_assert_eq!(parse_duration(&humantime::format_duration(d).to_string()), Ok(d));
        let text = format!("{}.{:03}", ms / 1000, ms % 1000);
        let got = parse_duration(&text).unwrap();
        prop_assert!(got.abs_diff(Duration::from_millis(ms)) < Duration::from_micros(1), "{} gave {:?}", text, got);
        let negative = format!("-{text}");
        prop_assert!(parse_duration(&negative).is_err() || ms == 0, "{}", negative);
    }
}

proptest! {
    #![proptest_config(crate::fuzz::config(120, 4))]

    /// SPEC "Words": a resource name is 1 to 255 bytes without a control
    /// character; the error is one line. The same through `--lock=NAME`,
    /// `--shared`, `--slots NAME=N`, `--name`, `baton status NAME` and
    /// `baton cancel NAME`.
    #[test]
    fn fuzz_names(s in arb_name_text(), n in prop_oneof![Just("3".to_string()), Just("0".to_string()), Just("1000001".to_string()), Just("=1".to_string()), arb_duration_text()]) {
        let ok = !s.is_empty() && s.len() <= 255 && !s.chars().any(char::is_control);
        match check_name(&s) {
            Ok(()) => prop_assert!(ok),
            Err(e) => {
                prop_assert!(!ok);
                prop_assert_eq!(e.exit_code(), crate::error::exit::USAGE);
                prop_assert!(!e.to_string().contains('\n'), "{}", e);
            }
        }
        for opt in ["--lock", "--shared"] {
            let parsed = RunOnly::try_parse_from(["baton run".to_string(), format!("{opt}={s}"), "--".into(), "true".into()]);
            match parsed {
                Ok(r) => prop_assert_eq!(r.run.validate().is_ok(), ok),
                Err(e) => assert_one_line(&e),
            }
        }
        let slots = format!("{s}={n}");
        // NAME=N splits at the last '=' (N may itself hold one: "=1").
        let (name, num) = slots.rsplit_once('=').unwrap();
        let count = num.parse::<u32>().ok().filter(|n| (1..=1_000_000).contains(n));
        let want = count.is_some() && check_name(name).is_ok();
        if let Ok(r) = RunOnly::try_parse_from(["baton run".to_string(), format!("--slots={slots}"), "true".into()]) {
            match r.run.validate() {
                Ok(args) => {
                    prop_assert!(want, "{:?}", slots);
                    prop_assert_eq!(args.resources[0].mode, Mode::Slots(count.unwrap()));
                    prop_assert_eq!(&args.resources[0].name, name);
                }
                Err(e) => {
                    prop_assert!(!want, "{:?}: {}", slots, e);
                    prop_assert_eq!(e.exit_code(), crate::error::exit::USAGE);
                }
            }
        }
        let job_ok = !s.is_empty() && !s.chars().any(char::is_control);
        if let Ok(r) = RunOnly::try_parse_from(["baton run".to_string(), "-l".into(), "x".into(), format!("--name={s}"), "true".into()]) {
            prop_assert_eq!(r.run.validate().is_ok(), job_ok);
        }
        if let Ok(Cli { command: Cmd::Cancel(c) }) = Cli::try_parse_from(["baton".to_string(), "cancel".into(), "--".into(), s.clone()]) {
            prop_assert_eq!(c.validate().is_ok(), job_ok);
        }
        if let Ok(Cli { command: Cmd::History(h) }) = Cli::try_parse_from(["baton".to_string(), "history".into(), "--".into(), s.clone()]) {
            prop_assert_eq!(h.validate().is_ok(), ok);
        }
    }

    /// `--since`: a duration back from now (never later than now, earlier
    /// for a longer one, the epoch for one longer than the time since
    /// it), or an RFC 3339 time; else an error.
    #[test]
    fn fuzz_since(s in prop_oneof![
        arb_duration_text(),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,9})?)?)?Z?",
        // Past 2^64 milliseconds, where a cast would wrap.
        "(18446744073709551|18446744073709552|36893488147419103)(\\.[0-9]{3}| ?s [0-9]{1,3}ms)",
    ], ms in 0u64..253_402_300_799_999) {
        let before = crate::job::now_ms();
        let got = parse_since(&s);
        let after = crate::job::now_ms();
        match (parse_duration(&s), got) {
            (Ok(d), Ok(stamp)) => {
                let back = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                prop_assert!(stamp.0 <= after.saturating_sub(back), "{:?}: {:?}", s, stamp);
                prop_assert!(stamp.0 >= before.saturating_sub(back), "{:?}: {:?}", s, stamp);
            }
            (Ok(_), Err(e)) => prop_assert!(false, "{:?}: {}", s, e),
            (Err(_), got) => prop_assert_eq!(got.ok(), Stamp::parse(&s)),
        }
        let t = Stamp(ms).rfc3339();
        prop_assert_eq!(parse_since(&t).ok(), Some(Stamp(ms)));
    }

    /// Whole argument lists of baton's options and odd values: the parse
    /// and validation never panic, and every error is one line.
    #[test]
    fn fuzz_argument_lists(sub in proptest::sample::select(&["run", "status", "history", "cancel", "unit", "completions", ""][..]), args in proptest::collection::vec(prop_oneof![
        proptest::sample::select(&["-l", "-s", "--slots", "-p", "-n", "-w", "--timeout", "--grace", "--name", "--coalesce", "--preempt", "--preemptible", "-E", "-c", "-q", "--dir", "--etcd", "--etcd-ttl", "--etcd-prefix", "--json", "--since", "--limit", "--svg", "--watch", "--running", "--timer", "--every", "--", "x", "true", "-1", "1e400"][..]).prop_map(String::from),
        arb_duration_text(),
        arb_name_text(),
    ], 0..8)) {
        let argv: Vec<String> = std::iter::once("baton".to_string()).chain((!sub.is_empty()).then(|| sub.to_string())).chain(args).collect();
        let outcome = match Cli::try_parse_from(&argv) {
            Err(e) => {
                assert_one_line(&e);
                None
            }
            Ok(cli) => Some(match cli.command {
                Cmd::Run(r) => r.validate().map(drop),
                Cmd::Status(s) => s.names.iter().try_for_each(|n| check_name(n)).and_then(|()| s.common.store().map(drop)),
                Cmd::History(h) => h.validate().map(drop),
                Cmd::Cancel(c) => c.validate().map(drop),
                Cmd::Unit(u) => u.validate().map(drop),
                Cmd::Completions(_) | Cmd::Man(_) => Ok(()),
            }),
        };
        if let Some(Err(e)) = outcome {
            prop_assert!(!e.to_string().contains('\n'), "{}", e);
            prop_assert_eq!(e.exit_code(), crate::error::exit::USAGE, "{}", e);
        }
        if sub == "run" {
            // `baton run` alone: the same verdict.
            let only = RunOnly::try_parse_from(std::iter::once("baton run".to_string()).chain(argv[2..].iter().cloned()));
            prop_assert_eq!(only.is_ok(), Cli::try_parse_from(&argv).is_ok());
        }
    }
}
