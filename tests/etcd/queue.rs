//! The queue across hosts, without faults: exclusion under bursts, order,
//! crossed multi-resource orders, shared and slot modes.

use std::time::Duration;

use crate::cluster;
use crate::harness::*;

/// 3 hosts x 20 jobs at once on one resource, mixed priorities: never two
/// at once, all succeed, fences increase in the order the commands ran.
#[test]
fn exclusion_across_three_hosts_under_bursts() {
    let c = cluster!("burst");
    let (guard, log, fl) = (c.path("guard"), c.path("log"), c.path("fences"));
    let mut jobs = Vec::new();
    for i in 0..20 {
        for h in 0..HOSTS {
            let tag = format!("h{h}j{i}");
            let prio = ((i + h) % 4) as i32 - 1;
            let script = guarded(&guard, &log, &fl, &tag, "0.01");
            let p = prio.to_string();
            jobs.push(c.spawn_sh(h, &tag, &["-q", "-l", "disk", "-p", &p], &script));
        }
    }
    assert_all_exit(&mut jobs, 0, Duration::from_secs(90));
    assert_eq!(read_lines(&log), Vec::<String>::new(), "overlaps");
    let f = fences(&fl);
    assert_eq!(f.len(), 60, "every command ran once");
    assert_strictly_increasing(&f);
    c.assert_idle(0);
}

/// A holder on host 0; waiters queued one by one from hosts 1 and 2: they
/// run by priority, then first come first served, as status listed them.
#[test]
fn order_is_priority_then_arrival_across_hosts() {
    let c = cluster!("order");
    let log = c.path("log");
    let holder = c.hold(0, "holder", &["-l", "x"]);
    let waiters: [(&str, usize, &str); 7] = [
        ("a", 1, "0"),
        ("b", 2, "5"),
        ("c", 1, "0"),
        ("d", 2, "-1"),
        ("e", 1, "5"),
        ("f", 2, "0"),
        ("g", 1, "-1"),
    ];
    let mut jobs = Vec::new();
    for (n, (tag, h, p)) in waiters.iter().enumerate() {
        let script = format!("echo {tag} >> {}", log.display());
        jobs.push(c.spawn_sh(*h, tag, &["-q", "-l", "x", "-p", p], &script));
        c.await_waiters(0, "x", n + 1);
    }
    let listed = c.queue(2, "x").1;
    assert_eq!(listed, ["b", "e", "a", "c", "f", "d", "g"]);
    holder.release();
    for j in &mut jobs {
        j.assert_clean_exit(0);
    }
    assert_eq!(read_lines(&log), listed, "run order = status order");
    c.assert_idle(1);
}

/// `-l a -l b`, `-l b -l a`, `-l a`, `-l b` from 3 hosts at once: all
/// finish (no deadlock), never two holders of one resource at once.
#[test]
fn crossed_multi_resource_orders_cannot_deadlock() {
    let c = cluster!("crossed");
    let log = c.path("log");
    let orders: [&[&str]; 4] = [
        &["-l", "a", "-l", "b"],
        &["-l", "b", "-l", "a"],
        &["-l", "a"],
        &["-l", "b"],
    ];
    let mut jobs = Vec::new();
    for i in 0..8 {
        for h in 0..HOSTS {
            let tag = format!("h{h}j{i}");
            let args = orders[(i + h) % 4];
            let names: Vec<&str> = args.iter().copied().filter(|a| *a != "-l").collect();
            let enter: String = names
                .iter()
                .map(|r| {
                    format!(
                        "mkdir {g} 2>/dev/null || echo OVERLAP {r} {tag} >> {l}; ",
                        g = c.path(&format!("guard.{r}")).display(),
                        l = log.display()
                    )
                })
                .collect();
            let leave: String = names
                .iter()
                .map(|r| {
                    format!(
                        "; rmdir {g} 2>/dev/null || echo OVERLAP-END {r} {tag} >> {l}",
                        g = c.path(&format!("guard.{r}")).display(),
                        l = log.display()
                    )
                })
                .collect();
            let script = format!(
                "{enter}echo {tag} >> {d}; sleep 0.02{leave}",
                d = c.path("done").display()
            );
            let mut all = vec!["-q"];
            all.extend_from_slice(args);
            jobs.push(c.spawn_sh(h, &tag, &all, &script));
        }
    }
    assert_all_exit(&mut jobs, 0, Duration::from_secs(60));
    assert_eq!(read_lines(&log), Vec::<String>::new(), "overlaps");
    assert_eq!(read_lines(&c.path("done")).len(), 24);
    c.assert_idle(2);
}

/// `--slots api=2` from 3 hosts: never more than 2 at once, and 2 do run
/// together.
#[test]
fn slots_across_hosts_never_exceed_n() {
    let c = cluster!("slots");
    let d = c.path("running");
    std::fs::create_dir(&d).expect("mkdir");
    let counts = c.path("counts");
    let script = format!(
        "touch {d}/$$; ls {d} | wc -l >> {l}; sleep 0.3; ls {d} | wc -l >> {l}; rm {d}/$$",
        d = d.display(),
        l = counts.display()
    );
    let mut jobs = Vec::new();
    for i in 0..4 {
        for h in 0..HOSTS {
            let tag = format!("h{h}j{i}");
            jobs.push(c.spawn_sh(h, &tag, &["-q", "--slots", "api=2"], &script));
        }
    }
    assert_all_exit(&mut jobs, 0, Duration::from_secs(60));
    let seen: Vec<u32> = read_lines(&counts)
        .iter()
        .map(|l| l.trim().parse().expect("count"))
        .collect();
    assert_eq!(seen.len(), 24);
    assert!(
        seen.iter().all(|n| *n <= 2),
        "more than 2 slots held: {seen:?}"
    );
    assert!(
        seen.contains(&2),
        "two slot holders never ran together: {seen:?}"
    );
    c.assert_idle(0);
}

/// `-s` readers of 3 hosts run together (each waits for the other two);
/// mixed with `-l` writers from 3 hosts, a writer never runs beside a
/// reader or another writer.
#[test]
fn shared_readers_together_never_with_a_writer() {
    let c = cluster!("shared");
    let dir = c.tmp.path().display().to_string();
    // Together: a writer holds; three readers (one per host) queue; on the
    // release all three must be in at once to pass their barrier.
    let writer = c.hold(0, "w0", &["-l", "db"]);
    let barrier = format!(
        "touch {dir}/in.$R; until [ -e {dir}/in.0 ] && [ -e {dir}/in.1 ] && [ -e {dir}/in.2 ]; \
         do sleep 0.01; done"
    );
    let mut readers = Vec::new();
    for h in 0..HOSTS {
        let script = format!("R={h}; {barrier}");
        let tag = format!("r{h}");
        readers.push(c.spawn_sh(h, &tag, &["-q", "-s", "db", "--timeout", "20s"], &script));
        c.await_waiters(0, "db", h + 1);
    }
    writer.release();
    for r in &mut readers {
        r.assert_clean_exit(0);
    }

    // Mixed burst: readers mark themselves in r/, writers in w/; each
    // checks at its start and end that no one conflicting is in.
    let log = c.path("log");
    for sub in ["r", "w"] {
        std::fs::create_dir(c.path(sub)).expect("mkdir");
    }
    let reader = format!(
        "touch {dir}/r/$$; [ -z \"$(ls {dir}/w)\" ] || echo WRITER-BESIDE-READER >> {l}; \
         sleep 0.05; [ -z \"$(ls {dir}/w)\" ] || echo WRITER-BESIDE-READER >> {l}; rm {dir}/r/$$",
        l = log.display()
    );
    let writer = format!(
        "touch {dir}/w/$$; [ -z \"$(ls {dir}/r)\" ] || echo READER-BESIDE-WRITER >> {l}; \
         [ \"$(ls {dir}/w | wc -l)\" = 1 ] || echo TWO-WRITERS >> {l}; sleep 0.05; \
         [ -z \"$(ls {dir}/r)\" ] || echo READER-BESIDE-WRITER >> {l}; \
         [ \"$(ls {dir}/w | wc -l)\" = 1 ] || echo TWO-WRITERS >> {l}; rm {dir}/w/$$; \
         echo w >> {dir}/writes",
        l = log.display()
    );
    let mut jobs = Vec::new();
    for i in 0..6 {
        for h in 0..HOSTS {
            let tag = format!("h{h}j{i}");
            let (mode, script) = if (i + h) % 3 == 0 {
                ("-l", &writer)
            } else {
                ("-s", &reader)
            };
            jobs.push(c.spawn_sh(h, &tag, &["-q", mode, "db"], script));
        }
    }
    assert_all_exit(&mut jobs, 0, Duration::from_secs(60));
    assert_eq!(read_lines(&log), Vec::<String>::new(), "conflicts");
    assert_eq!(read_lines(&c.path("writes")).len(), 6);
    c.assert_idle(1);
}
