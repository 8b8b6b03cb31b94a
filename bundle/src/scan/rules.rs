//! The built-in rules: their ids, their patterns and how a regex match becomes the byte range
//! of a secret.
//!
//! Every pattern runs on raw bytes (`regex::bytes`) with Unicode off (`(?-u)`), so binary
//! files are scanned and the fast DFA engines stay usable on non-UTF-8 input.

use super::generic;
use super::placeholder::is_sample_token;
use regex::bytes::{Captures, Regex};
use std::ops::Range;

/// Id of the PEM private key rule.
const PRIVATE_KEY_PEM: &str = "private-key-pem";
/// Id of the AWS access key id rule.
const AWS_ACCESS_KEY_ID: &str = "aws-access-key-id";
/// Id of the AWS secret access key rule.
const AWS_SECRET_ACCESS_KEY: &str = "aws-secret-access-key";
/// Id of the GitHub token rule.
const GITHUB_TOKEN: &str = "github-token";
/// Id of the GitLab token rule.
const GITLAB_TOKEN: &str = "gitlab-token";
/// Id of the Slack token and webhook rule.
const SLACK_TOKEN: &str = "slack-token";
/// Id of the JSON Web Token rule.
const JWT: &str = "jwt";
/// Id of the generic `password = …` rule.
const GENERIC_SECRET_ASSIGNMENT: &str = "generic-secret-assignment";

/// The rule ids, in a stable order: the order rules run in and findings at the same offset
/// are listed in.
pub const RULES: &[&str] = &[
    PRIVATE_KEY_PEM,
    AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY,
    GITHUB_TOKEN,
    GITLAB_TOKEN,
    SLACK_TOKEN,
    JWT,
    GENERIC_SECRET_ASSIGNMENT,
];

/// How far past a PEM header the matching `-----END …-----` line is looked for. Keys are a
/// few KiB at most (RSA 8192 ≈ 6.5 KiB); the bound keeps a stray header from costing a scan
/// of the rest of a large file.
const PEM_BODY_MAX: usize = 16 * 1024;

/// How a match of a rule's regex turns into the secret's byte range.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// The PEM header, extended over the key body when its END line follows: the body is
    /// fingerprinted so that allowing one key never allows every key of the same type.
    PemBlock,
    /// The whole match is the token.
    Token,
    /// Capture 1 is the token, the rest of the match is its key and separator.
    AssignedToken,
    /// Decided by [`generic::secret_value`].
    Generic,
}

struct RuleDef {
    id: &'static str,
    pattern: String,
    shape: Shape,
}

fn rule_defs() -> Vec<RuleDef> {
    let def = |id, pattern: &str, shape| RuleDef {
        id,
        pattern: pattern.to_owned(),
        shape,
    };
    vec![
        def(
            PRIVATE_KEY_PEM,
            r"(?-u)-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----",
            Shape::PemBlock,
        ),
        def(
            AWS_ACCESS_KEY_ID,
            r"(?-u)\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b",
            Shape::Token,
        ),
        // The trailing class (or end of input) stops a longer base64 run from matching its
        // first 40 bytes.
        def(
            AWS_SECRET_ACCESS_KEY,
            r#"(?i-u)(?:aws[_.-]?)?secret[_.-]?access[_.-]?key["']?[ \t]*(?::=|=>|=|:)[ \t]*["']?([a-z0-9/+=]{40})(?:[^a-z0-9/+=]|$)"#,
            Shape::AssignedToken,
        ),
        def(
            GITHUB_TOKEN,
            r"(?-u)\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
            Shape::Token,
        ),
        def(
            GITLAB_TOKEN,
            r"(?-u)\bglpat-[A-Za-z0-9_-]{20,}",
            Shape::Token,
        ),
        def(
            SLACK_TOKEN,
            r"(?-u)\bxox[abposr]-[A-Za-z0-9-]{10,}|https://hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+",
            Shape::Token,
        ),
        def(
            JWT,
            r"(?-u)\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
            Shape::Token,
        ),
        def(
            GENERIC_SECRET_ASSIGNMENT,
            &generic::pattern(),
            Shape::Generic,
        ),
    ]
}

/// One rule, compiled.
#[derive(Debug)]
pub(super) struct Rule {
    /// The rule id, one of [`RULES`].
    pub(super) id: &'static str,
    regex: Regex,
    shape: Shape,
}

/// The compiled built-in rules.
#[derive(Debug)]
pub(super) struct RuleSet {
    rules: Vec<Rule>,
    /// Regexes of the specific rules, which own any text they match: the generic rule stays
    /// quiet there so one secret yields one finding, under its most precise rule.
    owners: Vec<Regex>,
    /// Rules whose pattern failed to compile, with the error. Always empty for the shipped
    /// patterns (a unit test checks it); kept so a bad edit shows up as a note on every scan
    /// instead of a panic or a silently missing rule.
    broken: Vec<(&'static str, String)>,
}

impl RuleSet {
    /// Compiles every built-in rule.
    pub(super) fn builtin() -> Self {
        let mut set = Self {
            rules: Vec::new(),
            owners: Vec::new(),
            broken: Vec::new(),
        };
        for def in rule_defs() {
            match Regex::new(&def.pattern) {
                Ok(regex) => {
                    if !matches!(def.shape, Shape::Generic) {
                        set.owners.push(regex.clone());
                    }
                    set.rules.push(Rule {
                        id: def.id,
                        regex,
                        shape: def.shape,
                    });
                }
                Err(err) => set.broken.push((def.id, err.to_string())),
            }
        }
        set
    }

    /// The compiled rules, in [`RULES`] order.
    pub(super) fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Rules that could not be compiled, with the reason.
    pub(super) fn broken(&self) -> &[(&'static str, String)] {
        &self.broken
    }

    /// Byte ranges of the secrets `rule` finds in `bytes`, in increasing offset order.
    pub(super) fn secrets<'a>(
        &'a self,
        rule: &'a Rule,
        bytes: &'a [u8],
    ) -> impl Iterator<Item = Range<usize>> + 'a {
        rule.regex
            .captures_iter(bytes)
            .filter_map(move |caps| self.secret_range(rule.shape, bytes, &caps))
    }

    fn secret_range(
        &self,
        shape: Shape,
        bytes: &[u8],
        caps: &Captures<'_>,
    ) -> Option<Range<usize>> {
        match shape {
            Shape::PemBlock => {
                let header = caps.get(0)?;
                let end = pem_block_end(bytes, header.end()).unwrap_or(header.end());
                Some(header.start()..end)
            }
            Shape::Token => caps
                .get(0)
                .filter(|m| !is_sample_token(m.as_bytes()))
                .map(|m| m.range()),
            Shape::AssignedToken => caps
                .get(1)
                .filter(|m| !is_sample_token(m.as_bytes()))
                .map(|m| m.range()),
            Shape::Generic => generic::secret_value(bytes, caps, &self.owners),
        }
    }
}

/// The end of the `-----END …-----` line closing a PEM block whose header ends at
/// `body_start`, when the text in between is a plausible PEM body (printable ASCII and
/// whitespace, no other armour line) within [`PEM_BODY_MAX`] bytes.
fn pem_block_end(bytes: &[u8], body_start: usize) -> Option<usize> {
    let window = bytes.get(body_start..)?;
    let window = &window[..window.len().min(PEM_BODY_MAX)];
    let end_marker = find(window, b"-----END ")?;
    let body = &window[..end_marker];
    let plausible = body
        .iter()
        .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace())
        && find(body, b"-----").is_none();
    if !plausible {
        return None;
    }
    let label_start = end_marker + b"-----END ".len();
    let label_len = find(window.get(label_start..)?, b"-----")?;
    // Labels are short ("OPENSSH PRIVATE KEY", "PGP PRIVATE KEY BLOCK").
    (label_len <= 40).then_some(body_start + label_start + label_len + b"-----".len())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rule ids whose findings `rule_set` reports in `text`, and the reported secrets.
    fn found(text: &str) -> Vec<(&'static str, String)> {
        let set = RuleSet::builtin();
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        for rule in set.rules() {
            for range in set.secrets(rule, bytes) {
                out.push((rule.id, text[range].to_owned()));
            }
        }
        out
    }

    fn assert_found(text: &str, rule: &str, secret: &str) {
        assert_eq!(found(text), vec![(rule, secret.to_owned())], "in {text:?}");
    }

    fn assert_quiet(text: &str) {
        assert_eq!(found(text), vec![], "in {text:?}");
    }

    #[test]
    fn every_rule_compiles_and_runs_in_rules_order() {
        let set = RuleSet::builtin();
        assert!(set.broken().is_empty(), "{:?}", set.broken());
        let ids: Vec<_> = set.rules().iter().map(|rule| rule.id).collect();
        assert_eq!(ids, RULES);
    }

    #[test]
    fn private_key_pem_header_alone_is_enough() {
        for header in [
            "-----BEGIN PRIVATE KEY-----",
            "-----BEGIN RSA PRIVATE KEY-----",
            "-----BEGIN EC PRIVATE KEY-----",
            "-----BEGIN DSA PRIVATE KEY-----",
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----",
            "-----BEGIN PGP PRIVATE KEY BLOCK-----",
        ] {
            assert_found(&format!("x\n{header}\n"), "private-key-pem", header);
        }
        assert_quiet("-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----");
        assert_quiet("-----BEGIN CERTIFICATE-----");
    }

    #[test]
    fn private_key_pem_covers_the_body_up_to_the_end_line() {
        let block =
            "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIFAKEFAKEFAKE\n-----END EC PRIVATE KEY-----";
        assert_found(&format!("{block}\ntrailer"), "private-key-pem", block);
        // An END line beyond another armour line is not this key's.
        let text = "-----BEGIN RSA PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----";
        assert_found(text, "private-key-pem", "-----BEGIN RSA PRIVATE KEY-----");
    }

    #[test]
    fn aws_access_key_id() {
        assert_found(
            "id = AKIAZ7Q4FAKE0TEST0K9\n",
            "aws-access-key-id",
            "AKIAZ7Q4FAKE0TEST0K9",
        );
        assert_found(
            "\"ASIAZ7Q4FAKE0TEST0K9\"",
            "aws-access-key-id",
            "ASIAZ7Q4FAKE0TEST0K9",
        );
        // Part of a longer word, lowercase, or the documented example: quiet.
        assert_quiet("XAKIAZ7Q4FAKE0TEST0K9");
        assert_quiet("AKIAZ7Q4FAKE0TEST0K9X");
        assert_quiet("akiaz7q4fake0test0k9");
        assert_quiet("AKIAIOSFODNN7EXAMPLE");
    }

    #[test]
    fn aws_secret_access_key() {
        let key = "Zx9FAKEq7Lr2FAKEt8Vn3FAKEw4Mb5FAKEy6Kc0P";
        for text in [
            format!("aws_secret_access_key = {key}"),
            format!("AWS_SECRET_ACCESS_KEY=\"{key}\""),
            format!("\"SecretAccessKey\": \"{key}\""),
            format!("secretAccessKey: '{key}'"),
        ] {
            assert_found(&text, "aws-secret-access-key", key);
        }
        // 42 bytes is no AWS key; the generic rule judges the assignment instead.
        assert_eq!(
            found(&format!("aws_secret_access_key = {key}AB")),
            vec![("generic-secret-assignment", format!("{key}AB"))]
        );
        assert_quiet("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
        assert_quiet("aws_secret_access_key = ${AWS_SECRET_ACCESS_KEY}");
    }

    #[test]
    fn github_token() {
        let classic = "ghp_FAKEfakeFAKEfake0123456789abcdefABCD";
        assert_found(&format!("token: {classic}"), "github-token", classic);
        let server = "ghs_FAKEfakeFAKEfake0123456789abcdefABCD";
        assert_found(server, "github-token", server);
        let fine_grained = "github_pat_11FAKEFAKE0123456789_abcdefghijFAKEfake";
        assert_found(fine_grained, "github-token", fine_grained);
        assert_quiet("ghp_short0123456789");
        assert_quiet("ghx_FAKEfakeFAKEfake0123456789abcdefABCD");
        assert_quiet("ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    }

    #[test]
    fn gitlab_token() {
        let token = "glpat-FAKE9fake8FAKE7fake6";
        assert_found(&format!("GITLAB_TOKEN={token}"), "gitlab-token", token);
        assert_quiet("glpat-short");
        assert_quiet("glpat-xxxxxxxxxxxxxxxxxxxx");
    }

    #[test]
    fn slack_token_and_webhook() {
        let bot = "xoxb-1234567890-FAKEfakeFAKE";
        assert_found(bot, "slack-token", bot);
        let hook = "https://hooks.slack.com/services/T0FAKE123/B0FAKE456/FAKEfake789FAKEfake";
        assert_found(&format!("url: {hook}\n"), "slack-token", hook);
        assert_quiet("xoxb-short");
        assert_quiet("xoxz-1234567890-FAKEfakeFAKE");
        assert_quiet("xoxb-your-token-here");
        assert_quiet(
            "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
        );
    }

    #[test]
    fn jwt() {
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJmYWtlIn0.RkFLRWZha2VGQUtFc2ln";
        assert_found(&format!("Authorization: Bearer {token}"), "jwt", token);
        assert_quiet("eyJhbGciOiJIUzI1NiJ9.notajwt.RkFLRWZha2VGQUtFc2ln");
        assert_quiet("eyJhbGci.eyJzdWIi.sig");
    }

    #[test]
    fn generic_secret_assignment_reports_the_value() {
        let value = "Zq8vN2rLx7Tb4KpW9mYc";
        for text in [
            format!("password = \"{value}\""),
            format!("DB_PASSWORD={value}"),
            format!("\"apiKey\": \"{value}\","),
            format!("client_secret: '{value}'"),
            format!("  token: {value}\n"),
            format!("$config['passwd'] => '{value}';"),
            format!("ACCESS_KEY := {value}"),
            format!("https://db.internal/login?user=bob&password={value}&x=1"),
            format!("const API_KEY: &str = \"{value}\";"),
            format!("static TOKEN: &'static str = \"{value}\";"),
            format!("let token: String = \"{value}\".into();"),
            format!("const apiKey: string = '{value}';"),
            format!("apiKey := \"{value}\""),
        ] {
            assert_found(&text, "generic-secret-assignment", value);
        }
    }

    #[test]
    fn generic_secret_assignment_stays_quiet_on_code_and_placeholders() {
        for text in [
            "let password = std::env::var(\"DB_PASSWORD\")?;",
            "const token = process.env.GITHUB_TOKEN_VALUE;",
            "password = os.environ[\"DB_PASSWORD\"]",
            "api_key: Option<SecretString>,",
            "fn login(password: &str, token: &str) -> bool",
            "token: ${TOKEN}",
            "password: \"{{ .Values.db.password }}\"",
            "GITHUB_TOKEN=<your-github-token>",
            "password = \"changeme-changeme\"",
            "secret: \"xxxxxxxxxxxxxxxxxxxx\"",
            "password: \"********************\"",
            "token = \"secret://prod/api/token\"",
            "token = env:GITHUB_TOKEN_VALUE",
            "\"password\": {\"type\": \"string\", \"minLength\": 12}",
            "\"password\": \"Password must be at least 12 characters\"",
            "secretName: my-app-db-credentials",
            "tokenizer = AutoTokenizerFast9",
            "password = \"aaaaaaaaaaaaaaaa\"",
            "token_url = https://auth.internal/oauth2/v1/token",
            "password = \"supersecretpassword\"",
        ] {
            assert_quiet(text);
        }
    }

    #[test]
    fn generic_rule_defers_to_specific_rules() {
        assert_found(
            "token = ghp_FAKEfakeFAKEfake0123456789abcdefABCD",
            "github-token",
            "ghp_FAKEfakeFAKEfake0123456789abcdefABCD",
        );
        assert_found(
            "AWS_SECRET_ACCESS_KEY=Zx9FAKEq7Lr2FAKEt8Vn3FAKEw4Mb5FAKEy6Kc0P",
            "aws-secret-access-key",
            "Zx9FAKEq7Lr2FAKEt8Vn3FAKEw4Mb5FAKEy6Kc0P",
        );
    }

    #[test]
    fn binary_input_is_scanned() {
        let mut bytes = vec![0u8, 159, 146, 150, 0xff];
        bytes.extend_from_slice(b"AKIAZ7Q4FAKE0TEST0K9");
        bytes.extend_from_slice(&[0, 0xfe]);
        let set = RuleSet::builtin();
        let rule = &set.rules()[1];
        assert_eq!(set.secrets(rule, &bytes).collect::<Vec<_>>(), vec![5..25]);
    }
}
