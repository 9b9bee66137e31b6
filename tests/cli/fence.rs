//! `BATON_FENCE`, `BATON_RESOURCES`, `BATON_JOB`: what the command learns
//! of its grant, and that every later grant of a resource has a greater
//! token (SPEC "Every grant has a fencing token").

use crate::*;

fn environ(pid: nix::unistd::Pid) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap()
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// The environment of `pid` once it holds `name`, waiting (bounded) while
/// it cannot be read: during the command's own `exec` its environ reads
/// empty, so a test reads it once, here, and looks at that copy.
fn env_with(pid: nix::unistd::Pid, name: &str) -> Vec<String> {
    let mut env = Vec::new();
    await_that(&format!("{name} of {pid}"), || {
        env = environ(pid);
        var(&env, name).is_some()
    });
    env
}

/// `name` in the environment of `pid` (see [`env_with`]).
fn env_of(pid: nix::unistd::Pid, name: &str) -> String {
    var(&env_with(pid, name), name).unwrap_or_default()
}

fn var(env: &[String], name: &str) -> Option<String> {
    env.iter()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(String::from))
}

#[test]
fn the_command_is_told_its_job_id_resources_and_token() {
    let w = World::new();
    let h = w.hold(
        "job",
        &["-l", "a", "-s", "b", "--slots", "c=2", "-l", "~/Mail dir"],
    );
    let env = env_with(h.pid, "BATON_FENCE");
    let st = w.status();
    let id = st["resources"][0]["holders"][0]["id"].as_u64().unwrap();
    assert_eq!(var(&env, "BATON_JOB"), Some(id.to_string()));
    assert_eq!(
        var(&env, "BATON_RESOURCES").as_deref(),
        Some("a\n~/Mail dir\nb:shared\nc:slots=2")
    );
    let fence: u64 = var(&env, "BATON_FENCE").unwrap().parse().unwrap();
    assert!(fence > 0);
    h.release();
    let r = w.record_of("job");
    assert_eq!(r["fence"], fence, "the history keeps the token");
}

#[test]
fn every_later_grant_of_a_resource_has_a_greater_token() {
    let w = World::new();
    let log = w.path("log");
    // Logged while holding x: the log's order is the grant order.
    let script = format!("echo $BATON_FENCE >> {}", log.display());
    let mut jobs: Vec<_> = (0..30)
        .map(|i| {
            let mut args = vec!["run", "-q", "-l", "x"];
            // Some also hold y, some share z: one counter serves them all.
            if i % 3 == 0 {
                args.extend(["-l", "y"]);
            }
            if i % 2 == 0 {
                args.extend(["-s", "z"]);
            }
            args.extend(["--", "sh", "-c", &script]);
            w.spawn(&args)
        })
        .collect();
    for j in &mut jobs {
        assert_eq!(wait_exit(j), Some(0));
    }
    let fences: Vec<u64> = read_lines(&log)
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(fences.len(), 30);
    assert!(
        fences.windows(2).all(|p| p[0] < p[1]),
        "strictly increasing in grant order: {fences:?}"
    );
    // Shared holders granted together still get tokens of their own.
    let a = w.hold("s1", &["-s", "z"]);
    let b = w.hold("s2", &["-s", "z"]);
    let fa = env_of(a.pid, "BATON_FENCE");
    let fb = env_of(b.pid, "BATON_FENCE");
    assert!(fa.parse::<u64>().unwrap() < fb.parse::<u64>().unwrap());
    assert!(fences.last().unwrap() < &fa.parse::<u64>().unwrap());
}

#[test]
fn a_preempted_job_granted_again_gets_a_new_greater_token() {
    let w = World::new();
    let log = w.path("log");
    let once = w.path("once");
    let script = format!(
        "echo v $BATON_FENCE >> {l}; if [ -e {o} ]; then exit 0; fi; trap 'exit 1' TERM; \
         touch {o}; while :; do sleep 0.02; done",
        l = log.display(),
        o = once.display()
    );
    let mut v = w.spawn(&[
        "run",
        "-q",
        "--preemptible",
        "-l",
        "m",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    await_that("the first run", || once.exists());
    let p = format!("echo p $BATON_FENCE >> {}", log.display());
    assert_eq!(
        w.code(&[
            "run",
            "-q",
            "--preempt",
            "-p",
            "5",
            "-l",
            "m",
            "--",
            "sh",
            "-c",
            &p
        ]),
        0
    );
    assert_eq!(wait_exit(&mut v), Some(0));
    let lines = read_lines(&log);
    let tags: Vec<&str> = lines.iter().map(|l| &l[..1]).collect();
    assert_eq!(tags, ["v", "p", "v"]);
    let f: Vec<u64> = lines.iter().map(|l| l[2..].parse().unwrap()).collect();
    assert!(f[0] < f[1] && f[1] < f[2], "{f:?}");
}
