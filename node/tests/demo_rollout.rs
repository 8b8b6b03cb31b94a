//! `gtc demo --rollout` end to end: the real binary, a real node and the
//! real example service. The assertions read the demo's own output, so a
//! regression anywhere on the way (the controller, the analysis, the
//! router's counts or split, the demo) fails here.

mod common;

use common::Home;

/// The whole numbers among the whitespace-separated words of `text`, in
/// order, punctuation around them aside (`(412` and `412,` count; `10.01`
/// and `v2` do not).
fn numbers(text: &str) -> Vec<u64> {
    text.split_whitespace()
        .filter_map(|word| word.trim_matches(|c| "(),;:".contains(c)).parse().ok())
        .collect()
}

/// The lines of `section` that start with `prefix` once trimmed.
fn lines<'a>(section: &'a str, prefix: &str) -> Vec<&'a str> {
    section
        .lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with(prefix))
        .collect()
}

/// The percentage printed right after `label ` in `line` (`v2 10.01 %`).
fn share_of(line: &str, label: &str) -> Option<f64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(3)
        .find(|w| w[0] == label && w[2].starts_with('%'))
        .and_then(|w| w[1].parse().ok())
}

/// Checks one rollout's section: its steps were measured at their weights
/// from real answers, each step's analysis counted real requests, and the
/// section says how the rollout ended and where traffic went afterwards.
fn check_section(section: &str, candidate: &str, steps: &[f64], verdicts: &[&str], end: &str) {
    let step_lines = lines(section, "step ");
    assert_eq!(
        step_lines.len(),
        steps.len(),
        "one line per step:\n{section}"
    );
    for (line, weight) in step_lines.iter().zip(steps) {
        let answers = line
            .split("): ")
            .nth(1)
            .map(numbers)
            .and_then(|n| n.first().copied())
            .unwrap_or(0);
        assert!(answers > 0, "the step was measured: {line}");
        let observed = share_of(line, candidate).unwrap_or(-1.0);
        assert!(
            (observed - weight).abs() <= 1.0,
            "{candidate} got {observed} % at a {weight} % step: {line}"
        );
    }
    // Each analysis line is followed by its verdict; a hold (too few
    // requests on a busy machine) is not a step's end, so it is left out.
    let analyses = lines(section, "analysis of step");
    let verdict_lines = lines(section, "verdict: ");
    assert_eq!(analyses.len(), verdict_lines.len(), "{section}");
    let judged: Vec<(&str, &str)> = analyses
        .into_iter()
        .zip(verdict_lines)
        .filter(|(_, verdict)| !verdict.starts_with("verdict: hold"))
        .collect();
    assert_eq!(judged.len(), verdicts.len(), "{section}");
    for ((analysis, verdict), expected) in judged.iter().zip(verdicts) {
        let figures = numbers(analysis.split("window): ").nth(1).unwrap_or(""));
        // The candidate's requests and errors come first, then the stable's.
        assert!(
            figures.first().is_some_and(|requests| *requests > 0),
            "the window counted the candidate's requests: {analysis}"
        );
        assert!(verdict.starts_with(expected), "{expected}: {verdict}");
    }
    assert!(
        lines(section, &format!("{end} after ")).len() == 1,
        "the rollout ended {end}:\n{section}"
    );
    let after = lines(section, "afterwards: ");
    let figures = after.first().map(|line| numbers(line)).unwrap_or_default();
    let (total, to_candidate, failed) = match figures.as_slice() {
        [total, to_candidate, failed] => (*total, *to_candidate, *failed),
        _ => panic!("an afterwards line with its figures:\n{section}"),
    };
    assert!(total > 0, "traffic measured after the end: {after:?}");
    let expected = if end == "promoted" { total } else { 0 };
    assert_eq!(to_candidate, expected, "{after:?}");
    assert_eq!(failed, 0, "{after:?}");
}

#[test]
fn the_rollout_demo_promotes_the_good_candidate_and_rolls_back_the_bad_one() {
    // Proves `gtc demo --rollout` promotes v2 through 10 % and 50 % on
    // passing windows and rolls v3 back on its 5xx answers, with measured
    // splits, counted windows and traffic where it belongs afterwards.
    common::demo_service();
    let home = Home::new();
    let demo = home.gtc(&["demo", "--rollout"]);
    let text = String::from_utf8_lossy(&demo.raw.stdout).into_owned();
    assert_eq!(
        demo.code,
        0,
        "{text}\n{}",
        String::from_utf8_lossy(&demo.raw.stderr)
    );
    assert!(text.contains("\ndemo OK"), "{text}");
    let (good, bad) = text
        .split_once("\nrollout 2:")
        .expect("two rollouts in the output");
    let good = good.split_once("\nrollout 1:").map_or("", |(_, g)| g);
    check_section(
        good,
        "v2",
        &[10.0, 50.0],
        &["verdict: pass → advanced", "verdict: pass → advanced"],
        "promoted",
    );
    check_section(
        bad,
        "v3",
        &[10.0],
        &["verdict: fail (error rate"],
        "rolled-back",
    );
    // The bad candidate's window holds the errors it was rolled back for.
    let bad_window = lines(bad, "analysis of step 1");
    let errors = bad_window
        .first()
        .map(|line| numbers(line.split("window): ").nth(1).unwrap_or("")))
        .and_then(|figures| figures.get(1).copied())
        .unwrap_or(0);
    assert!(errors > 0, "{bad_window:?}");
    assert!(
        lines(bad, "step 1 of 2")
            .iter()
            .any(|l| l.contains("5xx answers: v3 ")),
        "the load saw v3's 5xx answers:\n{bad}"
    );
}

#[test]
fn the_rollout_demo_refuses_a_request_count_it_would_not_use() {
    // Proves `--requests` (the split demo's) is refused with `--rollout`
    // before anything starts.
    let home = Home::new();
    let demo = home.gtc(&["demo", "--rollout", "--requests", "500"]);
    assert_eq!(demo.code, 2, "{:?}", demo.raw);
    let stderr = String::from_utf8_lossy(&demo.raw.stderr);
    assert!(stderr.contains("--requests"), "{stderr}");
}
