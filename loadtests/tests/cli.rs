//! The `hhh-loadtest` binary's exit status: 1 when requests failed, 2 on bad flags or a failed
//! warm-up; the failure summary names the reason. Only loopback, nothing listening.

use std::process::Command;

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hhh-loadtest")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn failed_requests_exit_1_with_a_summary() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let (code, err) = run(&["--base-url", &url, "--model", "m", "--scenario", "random", "--num-requests", "3", "--warmup", "0", "--quiet", "--timeout", "5"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("3 of 3 requests failed") && err.contains("connect"), "{err}");
}

#[test]
fn bad_flags_and_failed_warmup_exit_2() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    for (args, want) in [
        (vec!["--scenario", "nope"], "unknown scenario"),
        (vec!["--scenario", "random", "--goodput", "ttft:-5"], "--goodput"),
        (vec!["--scenario", "random", "--max-concurrency", "1,2", "--request-rate", "1,2"], "not both"),
        (vec!["--scenario", "random", "--token-range", "9"], "--token-range"),
        (vec!["--scenario", "random", "--warmup", "1"], "warm-up request failed"),
    ] {
        let mut a = vec!["--base-url", url.as_str(), "--model", "m", "--num-requests", "1", "--quiet", "--timeout", "5"];
        a.extend(args.iter().copied());
        let (code, err) = run(&a);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
