//! `userctl dashboard` in a real terminal: tmux runs it in a pane of a fixed size against a
//! local stack, the test types keys and reads the screen, as a user would. Every wait polls
//! the screen; none is a fixed delay.

use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use userctl_tests::{
    cli::{Userctl, binary},
    e2e::{self, Teardown},
    eventually,
};

const UP: &[&str] = e2e::LOCAL_UP;
const PASSWORD: &str = "correct horse battery staple\n";
/// Generous: a cold debug build, and another test suite may share the two cores.
const SCREEN_TIMEOUT: Duration = Duration::from_secs(30);

/// A tmux server of the test's own (its own socket, so tests run side by side), with one
/// window running a plain shell in `userctl`'s environment. Dropping it kills the server and
/// whatever still runs in it.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(userctl: &Userctl, width: u16, height: u16) -> Self {
        let tmux = Self {
            socket: format!("userctl-dashboard-{}", rand::random::<u64>()),
        };
        let env = [
            format!("USERCTL_HOME={}", userctl.home.display()),
            format!("USERCTL_PROJECT={}", userctl.project),
            "NO_COLOR=1".to_owned(),
            "PS1=shell$ ".to_owned(),
        ];
        let mut args: Vec<String> = ["new-session", "-d", "-x", &width.to_string()]
            .into_iter()
            .map(str::to_owned)
            .chain(["-y".to_owned(), height.to_string()])
            .collect();
        for var in env {
            args.push("-e".into());
            args.push(var);
        }
        args.extend(["bash", "--norc", "--noprofile"].map(str::to_owned));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        tmux.run(&refs);
        tmux
    }

    /// Runs a tmux command against this server; panics with its stderr if it fails.
    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux runs (scripts/test installs it)");
        assert!(
            output.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn type_line(&self, line: &str) {
        self.run(&["send-keys", "-l", line]);
        self.run(&["send-keys", "Enter"]);
    }

    fn key(&self, key: &str) {
        self.run(&["send-keys", key]);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p"])
    }

    /// A pane variable, e.g. `alternate_on`.
    fn pane(&self, variable: &str) -> String {
        self.run(&["display-message", "-p", &format!("#{{{variable}}}")])
            .trim()
            .to_owned()
    }

    /// Polls the screen until `ready` accepts it; panics with the last screen otherwise.
    async fn wait_for<T>(&self, what: &str, ready: impl Fn(&str) -> Option<T>) -> T {
        eventually(SCREEN_TIMEOUT, || async {
            let screen = self.screen();
            ready(&screen).ok_or(screen)
        })
        .await
        .unwrap_or_else(|screen| panic!("waiting for {what}; the screen:\n{screen}"))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// The cache panel's "Totals  hits N" and "since start R%".
fn cache_figures(screen: &str) -> Option<(u64, String)> {
    let totals = screen.lines().find(|line| line.contains("Totals"))?;
    let hits = totals
        .split("hits ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let ratio_line = screen.lines().find(|line| line.contains("since start"))?;
    let ratio = ratio_line
        .split("since start ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .to_owned();
    Some((hits, ratio))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_hits_moving_and_quits_cleanly_with_q() {
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let _teardown = Teardown(userctl.clone());
    userctl.run(UP).await.ok();
    userctl
        .run_with_stdin(
            &[
                "register",
                "--email",
                "dee@example.com",
                "--name",
                "Dee",
                "--password-stdin",
            ],
            PASSWORD,
        )
        .await
        .ok();
    e2e::login(&userctl, "dee@example.com").await.ok();

    let tmux = Tmux::start(&userctl, 100, 30);
    // tmux gives the pane its client's PATH, so name the binary in full.
    let userctl_bin = binary("userctl");
    tmux.type_line(&format!(
        r#"'{}' dashboard; echo "exit=$?""#,
        userctl_bin.display()
    ));
    let (hits_before, ratio_before) = tmux
        .wait_for(
            "the live dashboard with every usersvc service serving",
            |screen| {
                let ready = screen.contains("Cache · live")
                    && screen.matches("● serving").count() == 3
                    && screen.contains("running");
                ready.then(|| cache_figures(screen)).flatten()
            },
        )
        .await;
    assert_eq!(
        tmux.pane("alternate_on"),
        "1",
        "the dashboard owns the screen"
    );

    for _ in 0..5 {
        userctl.run(&["whoami"]).await.ok();
    }
    let (hits_after, ratio_after) = tmux
        .wait_for("the hits counter to move after whoami", |screen| {
            cache_figures(screen).filter(|(hits, _)| *hits >= hits_before + 4)
        })
        .await;
    assert!(
        hits_after > hits_before && ratio_after != ratio_before,
        "hits {hits_before} → {hits_after}, ratio {ratio_before} → {ratio_after}"
    );

    tmux.key("q");
    let screen = tmux
        .wait_for("the shell to report the dashboard's exit", |screen| {
            screen.contains("exit=0").then(|| screen.to_owned())
        })
        .await;
    assert_eq!(tmux.pane("alternate_on"), "0", "back on the normal screen");
    assert_eq!(tmux.pane("pane_current_command"), "bash", "{screen}");
    assert!(screen.contains("shell$ "), "the prompt is back:\n{screen}");

    // Raw mode is off again: the terminal is canonical and echoes.
    tmux.type_line(r#"echo "mode=$(stty -a | grep -o -- '-\?icanon' | head -n 1)""#);
    tmux.wait_for("stty's report", |screen| {
        screen.contains("mode=icanon").then_some(())
    })
    .await;
    userctl.run(&["down", "--volumes"]).await.ok();
}

/// `userctl stats --output json`: each cache replica's hits, and the stack's total.
async fn cache_hits(userctl: &Userctl) -> (Vec<u64>, u64) {
    let run = userctl.run(&["stats", "--output", "json"]).await.ok();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).expect("stats JSON");
    let hits = |row: &serde_json::Value| row["hits"].as_u64().expect("hits");
    let replicas = rows
        .iter()
        .filter(|row| row["service"] == "cache")
        .map(hits)
        .collect();
    let total = rows
        .iter()
        .find(|row| row["service"] == "total")
        .map(hits)
        .expect("a total row");
    (replicas, total)
}

/// Two gateways behind the proxy and two cache replicas on the local runtime: a row each, every
/// `usersvc` replica's health watched at its own address, and the cache panel's hits the sum
/// `userctl stats` gives, once both replicas have served reads.
#[tokio::test(flavor = "multi_thread")]
async fn with_replicas_each_has_a_row_and_the_cache_panel_sums_them() {
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let _teardown = Teardown(userctl.clone());
    let mut up = UP.to_vec();
    up.extend(["--replicas", "gateway=2,cache=2,store=1"]);
    userctl.run(&up).await.ok();
    userctl
        .run_with_stdin(
            &[
                "register",
                "--email",
                "rey@example.com",
                "--name",
                "Rey",
                "--password-stdin",
            ],
            PASSWORD,
        )
        .await
        .ok();
    e2e::login(&userctl, "rey@example.com").await.ok();

    let tmux = Tmux::start(&userctl, 100, 30);
    let userctl_bin = binary("userctl");
    tmux.type_line(&format!(
        r#"'{}' dashboard; echo "exit=$?""#,
        userctl_bin.display()
    ));
    let rows = [
        "proxy",
        "gateway.1",
        "gateway.2",
        "cache.1",
        "cache.2",
        "store ",
    ];
    tmux.wait_for(
        "a row per replica, each usersvc replica serving, both caches streaming",
        |screen| {
            // Between the selection marker (or its blank) and the next column.
            let ready = rows.iter().all(|row| screen.contains(&format!(" {row} ")))
                && screen.matches("● serving").count() == 5
                && screen.contains("Cache · live · 2 replicas");
            ready.then_some(())
        },
    )
    .await;

    // Reads until both cache replicas have served some: then the panel's total is a sum.
    let mut calls = 0;
    let (replicas, total) = loop {
        for _ in 0..10 {
            userctl.run(&["whoami"]).await.ok();
        }
        calls += 10;
        let (replicas, total) = cache_hits(&userctl).await;
        let both = replicas.len() == 2 && replicas.iter().all(|hits| *hits > 0);
        if both || calls >= 100 {
            break (replicas, total);
        }
    };
    assert!(
        replicas.len() == 2 && replicas.iter().all(|hits| *hits > 0),
        "after {calls} whoami calls, hits per cache replica: {replicas:?}"
    );
    // Nothing reads any more, so the counters stand still and the panel catches up to them.
    tmux.wait_for(
        "the panel's total hits to be userctl stats' total",
        |screen| cache_figures(screen).filter(|(hits, _)| *hits == total),
    )
    .await;

    tmux.key("q");
    tmux.wait_for("the shell to report the dashboard's exit", |screen| {
        screen.contains("exit=0").then_some(())
    })
    .await;
    userctl.run(&["down", "--volumes"]).await.ok();
}

/// The logs pane's lines on screen: the segments of the screen's rows that start with a
/// `HH:MM:SS.mmm` time.
fn log_lines(screen: &str) -> Vec<String> {
    let timed = |text: &str| {
        let bytes = text.as_bytes();
        bytes.len() > 13
            && bytes[..12].iter().enumerate().all(|(i, byte)| match i {
                2 | 5 => *byte == b':',
                8 => *byte == b'.',
                _ => byte.is_ascii_digit(),
            })
    };
    screen
        .lines()
        .flat_map(|row| row.split('│'))
        .filter(|segment| timed(segment))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_logs_pane_merges_and_filters_and_requests_per_hop_move_under_load() {
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let _teardown = Teardown(userctl.clone());
    userctl.run(UP).await.ok();
    userctl
        .run_with_stdin(
            &[
                "register",
                "--email",
                "lou@example.com",
                "--name",
                "Lou",
                "--password-stdin",
            ],
            PASSWORD,
        )
        .await
        .ok();
    e2e::login(&userctl, "lou@example.com").await.ok();
    for _ in 0..3 {
        userctl.run(&["whoami"]).await.ok();
    }

    let tmux = Tmux::start(&userctl, 140, 40);
    let userctl_bin = binary("userctl");
    tmux.type_line(&format!(
        r#"'{}' dashboard; echo "exit=$?""#,
        userctl_bin.display()
    ));
    tmux.wait_for("every usersvc service serving", |screen| {
        (screen.matches("● serving").count() == 3).then_some(())
    })
    .await;

    // Enter opens the selected service's logs, `a` the whole stack's, merged in time order.
    tmux.key("Enter");
    tmux.key("a");
    let merged = tmux
        .wait_for(
            "the whole stack's lines from gateway, cache and store",
            |screen| {
                let lines = log_lines(screen);
                let from = |service: &str| {
                    lines
                        .iter()
                        .any(|line| line[13..].starts_with(&format!("{service} ")))
                };
                let ready = screen.contains("Logs · whole stack")
                    && ["gateway", "cache", "store"].iter().all(|s| from(s));
                ready.then_some(lines)
            },
        )
        .await;
    let times: Vec<&str> = merged.iter().map(|line| &line[..12]).collect();
    assert!(
        times.windows(2).all(|pair| pair[0] <= pair[1]),
        "in time order: {merged:#?}"
    );

    // A typed filter narrows the pane to the lines that match it: the one login.
    tmux.key("/");
    tmux.run(&["send-keys", "-l", "logged in"]);
    tmux.key("Enter");
    let filtered = tmux
        .wait_for("only the login's line under the filter", |screen| {
            let lines = log_lines(screen);
            let ready = screen.contains("/logged in 1 of")
                && lines.len() == 1
                && lines[0][13..].starts_with("gateway ")
                && lines[0].contains("logged in");
            ready.then_some(lines)
        })
        .await;
    assert!(filtered.len() < merged.len(), "{filtered:#?}");

    // Not a regex: said in the pane; the dashboard carries on.
    tmux.key("/");
    for _ in 0.."logged in".len() {
        tmux.key("BSpace");
    }
    tmux.run(&["send-keys", "-l", "answered("]);
    tmux.key("Enter");
    tmux.wait_for("the filter's error in the pane", |screen| {
        screen.contains("filter is not a regex").then_some(())
    })
    .await;

    // Per hop: under a whoami loop, the gateway's WhoAmI and the cache's reads have calls a
    // second, each from its own service's figures.
    tmux.key("Enter");
    tmux.key("r");
    let loading = Arc::new(AtomicBool::new(true));
    let load = tokio::spawn({
        let userctl = userctl.clone();
        let loading = loading.clone();
        async move {
            while loading.load(Ordering::Relaxed) {
                userctl.run(&["whoami"]).await.ok();
            }
        }
    });
    let busy = |screen: &str, service: &str, rpc: &str| {
        screen.lines().any(|line| {
            let words: Vec<&str> = line.trim_matches('│').split_whitespace().collect();
            words.len() >= 3
                && words[0] == service
                && words[1] == rpc
                && words[2].parse::<f64>().is_ok_and(|rate| rate > 0.0)
        })
    };
    tmux.wait_for("calls a second at the gateway and the cache", |screen| {
        let ready = screen.contains("Requests per hop")
            && busy(screen, "gateway", "Gateway/WhoAmI")
            && busy(screen, "cache", "UserStore/ReadUser");
        ready.then_some(())
    })
    .await;
    loading.store(false, Ordering::Relaxed);
    load.await.expect("whoami loop");

    tmux.key("q");
    tmux.wait_for("the shell to report the dashboard's exit", |screen| {
        screen.contains("exit=0").then_some(())
    })
    .await;
    userctl.run(&["down", "--volumes"]).await.ok();
}

#[tokio::test]
async fn without_a_terminal_the_dashboard_refuses_with_a_usage_error() {
    let home = tempfile::tempdir().expect("home");
    let userctl = Userctl::new(home.path());
    let run = userctl.run(&["dashboard"]).await.expect_code(2);
    assert!(
        run.stderr.contains("the dashboard needs a terminal"),
        "{run:?}"
    );
}
