//! Issue 20's class "one table of exit codes": the README's table is the
//! reference, and every verb's usage errors are held to it with the real
//! binary. The verbs are found by walking `--help`, so a verb added later
//! is checked without touching this file.

mod common;

use std::collections::BTreeMap;

use common::Home;
use serde_json::json;

/// The README's exit-code table: code → meaning.
fn readme_table() -> BTreeMap<i32, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).expect("README.md");
    let section = readme
        .split_once("### Exit codes")
        .map(|(_, rest)| rest)
        .expect("README.md has an \"### Exit codes\" section");
    let mut table = BTreeMap::new();
    for line in section.lines().skip_while(|l| !l.starts_with('|')) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line
            .split(" | ")
            .map(|c| c.trim_matches('|').trim())
            .collect();
        if let (Some(code), Some(meaning)) = (cells.first(), cells.get(1))
            && let Ok(code) = code.parse::<i32>()
        {
            table.insert(code, meaning.to_string());
        }
    }
    table
}

/// The code whose meaning starts with `what`.
fn code_for(table: &BTreeMap<i32, String>, what: &str) -> i32 {
    let found: Vec<i32> = table
        .iter()
        .filter(|(_, meaning)| meaning.to_lowercase().starts_with(what))
        .map(|(code, _)| *code)
        .collect();
    assert_eq!(found.len(), 1, "one README row for {what:?}: {table:?}");
    found[0]
}

/// The sub-commands `gtc <path> --help` lists (without `help`).
fn subcommands(home: &Home, path: &[String]) -> (Vec<String>, String) {
    let mut args = path.to_vec();
    args.push("--help".to_owned());
    let output = home.command().args(&args).output().expect("run gtc");
    assert_eq!(output.status.code(), Some(0), "{args:?} --help");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let names = text
        .split_once("\nCommands:\n")
        .map(|(_, rest)| {
            rest.lines()
                .take_while(|line| line.starts_with("  "))
                // A wrapped description continues further indented.
                .filter(|line| !line[2..].starts_with(' '))
                .filter_map(|line| line.split_whitespace().next())
                .filter(|name| *name != "help")
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    (names, text)
}

/// Every leaf verb with its `--help` text.
fn leaf_verbs(home: &Home) -> Vec<(Vec<String>, String)> {
    let mut leaves = Vec::new();
    let mut pending = vec![Vec::new()];
    while let Some(path) = pending.pop() {
        let (names, text) = subcommands(home, &path);
        if names.is_empty() {
            leaves.push((path, text));
            continue;
        }
        for name in names {
            let mut child = path.clone();
            child.push(name);
            pending.push(child);
        }
    }
    leaves.sort();
    leaves
}

/// Whether the help's usage line has a required argument or flag (a
/// `<…>` outside every `[…]`).
fn needs_arguments(help: &str) -> bool {
    let usage = help
        .lines()
        .find_map(|line| line.strip_prefix("Usage: "))
        .expect("usage line");
    let mut depth = 0;
    let mut outside = String::new();
    for c in usage.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            c if depth == 0 => outside.push(c),
            _ => {}
        }
    }
    outside.contains('<')
}

fn code(home: &Home, args: &[&str]) -> (i32, String) {
    let output = home.command().args(args).output().expect("run gtc");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn usage_errors_of_every_verb_exit_with_the_readme_code() {
    let table = readme_table();
    // The codes the binary uses (node/src/error.rs, output.rs), each
    // documented once.
    assert_eq!(
        table.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2, 3, 141],
        "README exit-code table: {table:?}"
    );
    // 3 is `node::error::EXIT_INTEGRITY` (a corrupted secret), held by
    // tests/secrets.rs `a_corrupted_ciphertext_is_detected_and_never_returned`.
    assert_eq!(
        code_for(&table, "stored data failed its integrity check"),
        3
    );
    let success = code_for(&table, "success");
    let failure = code_for(&table, "the verb failed");
    let usage = code_for(&table, "usage error");

    let home = Home::new();
    let leaves = leaf_verbs(&home);
    assert!(leaves.len() > 40, "found only {} verbs", leaves.len());
    for (path, help) in &leaves {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--no-such-flag");
        let (got, stderr) = code(&home, &args);
        assert_eq!(got, usage, "{args:?}: {stderr}");
        if needs_arguments(help) {
            let args: Vec<&str> = path.iter().map(String::as_str).collect();
            let (got, stderr) = code(&home, &args);
            assert_eq!(got, usage, "{args:?} without its arguments: {stderr}");
        }
    }
    assert!(!home.root().exists(), "no usage error touched the store");

    // Usage errors the verbs themselves find.
    assert_eq!(code(&home, &["op", "env", "init"]).0, success);
    let target = home.write(
        "target.json",
        &json!({"environment_id": "local"}).to_string(),
    );
    let target = target.to_str().expect("utf8");
    for (args, why) in [
        (
            vec!["op", "env", "destroy", "--answers", target],
            "destroy without --confirm",
        ),
        (
            vec!["op", "env", "destroy", "local"],
            "destroy ENV without --confirm",
        ),
        (
            vec!["op", "env", "migrate-dev", "--answers", target],
            "neither --check nor --apply",
        ),
        (
            vec!["op", "env", "migrate-dev", "local", "--check", "--apply"],
            "both --check and --apply",
        ),
        (
            vec![
                "op",
                "env",
                "migrate-dev",
                "local",
                "--answers",
                target,
                "--check",
            ],
            "both ENV and --answers",
        ),
        (
            vec!["op", "env", "migrate-state", "--check"],
            "neither ENV nor --answers",
        ),
    ] {
        let (got, stderr) = code(&home, &args);
        assert_eq!(got, usage, "{why}: {args:?}: {stderr}");
    }
    assert!(
        home.root().join("local/environment.json").exists(),
        "the refused destroy changed nothing"
    );

    // The status page's form is accepted; a check that finds blockers
    // fails like any check that finds a problem.
    let (got, stderr) = code(&home, &["op", "env", "migrate-dev", "local", "--check"]);
    assert_eq!(got, success, "{stderr}");
    let (got, stderr) = code(&home, &["op", "env", "migrate-state", "local", "--check"]);
    assert_eq!(got, success, "{stderr}");
    std::fs::write(
        home.root().join("policy.json"),
        json!({"schema": "greentic.policy.v1", "grants": [{"environment_id": "dev", "users": ["tester"]}]}).to_string(),
    )
    .expect("policy");
    home.ok(
        "env",
        "create",
        json!({"environment_id": "dev", "name": "legacy dev"}),
    );
    home.ok(
        "bundles",
        "add",
        json!({"environment_id": "dev", "bundle_id": "shop", "customer_id": "acme", "route_binding": {"path_prefixes": ["/shop"]}}),
    );
    let blocked = home.gtc(&["op", "env", "migrate-dev", "local", "--check"]);
    assert_eq!(blocked.code, failure, "{}", blocked.stdout);
    assert_eq!(
        blocked.stdout["result"]["clean"], false,
        "{}",
        blocked.stdout
    );
}
