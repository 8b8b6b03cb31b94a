//! Issue 20's class "no command panics when its output is closed early":
//! every way `gtc` prints is driven with its stdout (then its stderr)
//! connected to a pipe whose reader has already gone, as in
//! `gtc completions bash | head -1`.

mod common;

use std::process::Stdio;

use common::Home;

/// What a run with a closed stream ended with.
struct Ended {
    code: Option<i32>,
    /// The other stream's bytes (the closed one printed nowhere).
    other: String,
}

/// Runs `gtc args` with stdout (or stderr, when `close_stderr`) writing
/// into a pipe whose read end is closed before the child starts.
fn run_closed(home: &Home, args: &[&str], close_stderr: bool) -> Ended {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut command = home.command();
    command.args(args).stdin(Stdio::null());
    let child = if close_stderr {
        command.stdout(Stdio::piped()).stderr(writer)
    } else {
        command.stdout(writer).stderr(Stdio::piped())
    }
    .spawn()
    .expect("spawn gtc");
    // `command` still holds the write end; drop it so only the child has it.
    drop(command);
    let output = child.wait_with_output().expect("wait");
    let other = if close_stderr {
        &output.stdout
    } else {
        &output.stderr
    };
    Ended {
        code: output.status.code(),
        other: String::from_utf8_lossy(other).into_owned(),
    }
}

#[test]
fn no_command_panics_when_its_output_is_closed_early() {
    let home = Home::new();
    let source = home.dir.path().join("src");
    std::fs::create_dir_all(source.join("packs")).expect("mkdir");
    std::fs::write(
        source.join("bundle.yaml"),
        "schema_version: 1\nbundle_id: piped\n",
    )
    .expect("manifest");
    let bundle = home.dir.path().join("piped.gtbundle");
    let bundle_arg = bundle.to_str().expect("utf8");
    let source_arg = source.to_str().expect("utf8");
    // (args, exit code with every stream open): each printing path once —
    // clap's help, version and usage errors, completions, schemas, JSON and
    // table reports, error reports, and the build's stderr warnings.
    let commands: Vec<(Vec<&str>, i32)> = vec![
        (vec!["completions", "bash"], 0),
        (vec!["completions", "zsh"], 0),
        (vec!["completions", "fish"], 0),
        (vec!["completions", "powershell"], 0),
        (vec!["completions", "elvish"], 0),
        (vec!["--help"], 0),
        (vec!["--version"], 0),
        (vec!["op", "revisions", "stage", "--schema"], 0),
        (vec!["op", "env", "init"], 0),
        (vec!["op", "env", "list"], 0),
        (vec!["op", "env", "list", "--output", "table"], 0),
        (vec!["op", "env", "show", "nowhere"], 1),
        (vec!["op", "env", "show", "nowhere", "--output", "table"], 1),
        (vec!["bundle", "build", source_arg, "-o", bundle_arg], 0),
        (vec!["bundle", "inspect", bundle_arg], 0),
        (vec!["bundle", "doctor", bundle_arg], 1),
        (vec!["no-such-verb"], 2),
    ];
    for (args, open_code) in &commands {
        for close_stderr in [false, true] {
            let ended = run_closed(&home, args, close_stderr);
            let which = if close_stderr { "stderr" } else { "stdout" };
            assert!(
                !ended.other.contains("panicked"),
                "{args:?} with {which} closed panicked: {}",
                ended.other
            );
            assert_ne!(
                ended.code,
                Some(101),
                "{args:?} with {which} closed exited 101 (a panic): {}",
                ended.other
            );
            // A failure keeps its own code; a success whose output was lost
            // ends with SIGPIPE's conventional 141, or 0 when it printed
            // nothing on the closed stream.
            let allowed: &[i32] = if *open_code == 0 {
                &[0, 141]
            } else {
                &[*open_code]
            };
            assert!(
                ended.code.is_some_and(|code| allowed.contains(&code)),
                "{args:?} with {which} closed exited {:?}, expected one of {allowed:?}: {}",
                ended.code,
                ended.other
            );
        }
    }
    // The closed stream is the only thing that changed: with stdout closed,
    // a success says nothing on stderr.
    let quiet = run_closed(&home, &["completions", "bash"], false);
    assert_eq!(quiet.code, Some(141));
    assert_eq!(quiet.other, "", "a closed pipe ends quietly");
}
