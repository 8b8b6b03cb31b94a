//! Shannon entropy of a byte string, used to tell random-looking secret values from words,
//! identifiers and placeholders.

/// Returns the Shannon entropy of `bytes` in bits per byte (0.0 for an empty slice).
///
/// The value is `-Σ p·log2(p)` over the byte frequencies, so it is at most `log2(len)` and at
/// most 8. A short string can therefore never score high: that is why the generic rule pairs
/// its entropy threshold with a minimum length.
pub(super) fn shannon_entropy(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0usize; 256];
    for &byte in bytes {
        counts[usize::from(byte)] += 1;
    }
    let len = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&count| count > 0)
        .map(|&count| {
            let p = count as f64 / len;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::shannon_entropy;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn empty_and_uniform_strings_have_zero_entropy() {
        assert!(close(shannon_entropy(b""), 0.0));
        assert!(close(shannon_entropy(b"a"), 0.0));
        assert!(close(shannon_entropy(b"aaaaaaaaaaaa"), 0.0));
    }

    #[test]
    fn distinct_symbols_reach_log2_of_the_length() {
        assert!(close(shannon_entropy(b"ab"), 1.0));
        assert!(close(shannon_entropy(b"abcd"), 2.0));
        assert!(close(shannon_entropy(b"0123456789abcdef"), 4.0));
        let all: Vec<u8> = (0..=255).collect();
        assert!(close(shannon_entropy(&all), 8.0));
    }

    #[test]
    fn repeated_pattern_scores_like_its_alphabet() {
        // "abab…" uses two equally frequent symbols: exactly one bit per byte.
        assert!(close(shannon_entropy(b"abababababab"), 1.0));
        // Skewed frequencies score lower than uniform ones.
        assert!(shannon_entropy(b"aaaaaaab") < 1.0);
    }

    #[test]
    fn words_score_below_random_tokens() {
        let word = shannon_entropy(b"supersecretpassword");
        let token = shannon_entropy(b"Zq8vN2rLx7Tb4KpW9mYc");
        assert!(word < 3.5, "word scored {word}");
        assert!(token > 3.5, "token scored {token}");
    }
}
