//! The markdown table of gossip-scale figures, and the percentile it uses.

use std::fmt::Write as _;
use std::time::Duration;

use super::GossipFigures;

/// A markdown table, one row per run: nodes, crashed nodes, gossip round,
/// convergence, false suspicions during the warm-up, detection p50 and max,
/// heal (if the partition phase ran), messages, simulated span and wall
/// time. Durations in seconds; all simulated except the wall time.
pub fn report_table(figures: &[GossipFigures]) -> String {
    let mut table = String::from(
        "| nodes | crashed | round | convergence | false suspicions | detection p50 | detection max | heal | messages | simulated | wall time |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for run in figures {
        let heal = run
            .partition
            .as_ref()
            .map_or_else(|| "–".to_owned(), |partition| seconds(partition.heal));
        // Writing to a String cannot fail.
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            run.nodes,
            run.crashed_nodes.len(),
            seconds(run.gossip_interval),
            seconds(run.convergence),
            run.false_suspicions,
            seconds(run.detection_p50),
            seconds(run.detection_max),
            heal,
            run.messages_total,
            seconds(run.simulated_total),
            seconds(run.wall_time),
        );
    }
    table
}

/// The nearest-rank percentile of `sorted` (ascending): the smallest value
/// with at least `percent` % of the values at or below it. Zero if empty.
pub(crate) fn nearest_rank(sorted: &[Duration], percent: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

fn seconds(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(values: &[u64]) -> Vec<Duration> {
        values.iter().copied().map(Duration::from_millis).collect()
    }

    /// Proves the median is the nearest rank, for odd, even and tiny inputs.
    #[test]
    fn nearest_rank_median() {
        assert_eq!(
            nearest_rank(&millis(&[1, 2, 3]), 50),
            Duration::from_millis(2)
        );
        assert_eq!(
            nearest_rank(&millis(&[1, 2, 3, 4]), 50),
            Duration::from_millis(2)
        );
        assert_eq!(nearest_rank(&millis(&[5]), 50), Duration::from_millis(5));
        assert_eq!(
            nearest_rank(&millis(&[1, 9]), 100),
            Duration::from_millis(9)
        );
        assert_eq!(nearest_rank(&[], 50), Duration::ZERO);
    }

    /// Proves one row per run, with the heal column filled only when the
    /// partition phase ran.
    #[test]
    fn table_has_one_row_per_run() {
        let run = GossipFigures {
            nodes: 10,
            seed: 1,
            gossip_interval: Duration::from_secs(1),
            convergence: Duration::from_millis(3_250),
            false_suspicions: 0,
            crashed_nodes: vec!["node-003".into(), "node-007".into()],
            detection_min: Duration::from_secs(9),
            detection_p50: Duration::from_secs(10),
            detection_max: Duration::from_secs(11),
            partition: None,
            messages_total: 1234,
            bytes_total: 99_999,
            simulated_total: Duration::from_secs(30),
            wall_time: Duration::from_millis(420),
        };
        let table = report_table(&[run]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[2],
            "| 10 | 2 | 1.00 s | 3.25 s | 0 | 10.00 s | 11.00 s | – | 1234 | 30.00 s | 0.42 s |"
        );
    }
}
