//! `herdguard serve` with a bad setting: one line naming the field, exit code 2,
//! for flags, environment variables and the TOML file alike.

use std::process::Command;

fn serve(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herdguard"));
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0", "--origin", "http://127.0.0.1:9"])
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("herdguard runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_security_settings_name_their_field_and_exit_2() {
    let dir = std::env::temp_dir().join(format!("hg-serve-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "request_cache_control = \"sometimes\"\n").unwrap();
    let file_arg = file.to_string_lossy().into_owned();
    // (flags, environment, the field the error must name)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["--trusted-proxies", "10.0.0.0/8,not-an-ip"],
            vec![],
            "trusted_proxies",
        ),
        (
            vec![],
            vec![("HERDGUARD_CACHE_KEY", "host,query")],
            "cache_key",
        ),
        (
            vec!["--header-read-timeout-ms", "0"],
            vec![],
            "header_read_timeout_ms",
        ),
        (vec!["--max-connections", "0"], vec![], "max_connections"),
        (vec!["--config", &file_arg], vec![], "request_cache_control"),
    ];
    for (args, env, field) in cases {
        let (code, stderr) = serve(&args, &env);
        assert_eq!(code, Some(2), "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(field), "{field}: {stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
