//! Reads the service's configuration from its environment.
//!
//! Everything here is parsed up front so that a bad value ends the process
//! with a clear message and exit code 2 instead of failing later mid-request.

use std::env;
use std::fmt;
use std::net::IpAddr;

/// Variable that may name the port variable (for bundles whose platform
/// contract uses another name than `PORT`).
pub const PORT_ENV_VAR: &str = "PORT_ENV";
/// Port variable used when `PORT_ENV` is not set.
pub const DEFAULT_PORT_VAR: &str = "PORT";
/// Variable naming the address to listen on (the platform sets it).
pub const HOST_VAR: &str = "HOST";
/// Address listened on when `HOST` is not set.
const DEFAULT_HOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
/// Variable naming the revision this process serves.
pub const REVISION_VAR: &str = "GREENTIC_REVISION";
/// Variable naming the instance number within the revision.
pub const INSTANCE_VAR: &str = "GREENTIC_INSTANCE";
/// Variable selecting a failure mode for tests.
pub const MODE_VAR: &str = "DEMO_MODE";
/// Variable making the service answer 500 to this percentage (0-100) of
/// its requests (not `/healthz`): a bad candidate for rollout analysis.
pub const FAIL_PERCENT_VAR: &str = "DEMO_FAIL_PERCENT";
/// Revision reported when `GREENTIC_REVISION` is unset.
const UNKNOWN_REVISION: &str = "unknown";
/// Instance reported when `GREENTIC_INSTANCE` is unset.
const DEFAULT_INSTANCE: &str = "0";

/// How the service misbehaves, so tests can exercise every start/stop path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Serve normally.
    Normal,
    /// Exit with code 3 before doing anything else.
    ExitImmediately,
    /// Print a line and sleep forever without binding a port.
    NeverListen,
    /// Listen, but answer `/healthz` with 503.
    Unhealthy,
    /// Serve normally, then exit with code 4 after this many milliseconds.
    CrashAfterMs(u64),
    /// Wait this many milliseconds before binding, then serve normally: a
    /// slow cold start.
    SlowStartMs(u64),
}

/// A configuration problem; printed once, then the process exits with code 2.
#[derive(Debug)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a request handler needs to know about this process.
#[derive(Debug)]
pub struct Identity {
    /// Value of `GREENTIC_REVISION`, or `unknown`.
    pub revision: String,
    /// Value of `GREENTIC_INSTANCE`, or `0`.
    pub instance: String,
    /// Whether `/healthz` must fail (mode `unhealthy`).
    pub unhealthy: bool,
    /// Requests answered 500, per hundred (`DEMO_FAIL_PERCENT`): every
    /// request whose sequence number modulo 100 is below it, so the share
    /// is exact over every hundred requests.
    pub fail_percent: u64,
    /// Requests seen, for `fail_percent`.
    pub seen: std::sync::atomic::AtomicU64,
    /// The pack configs of `GTC_CONFIG_DIR`, reloaded on SIGHUP.
    pub pack_configs: crate::pack_config::PackConfigs,
}

/// Parses `DEMO_MODE`; an unset or empty variable means [`Mode::Normal`].
pub fn mode_from_env() -> Result<Mode, ConfigError> {
    match env::var(MODE_VAR) {
        Err(env::VarError::NotPresent) => Ok(Mode::Normal),
        Err(env::VarError::NotUnicode(_)) => {
            Err(ConfigError(format!("{MODE_VAR} is not valid UTF-8")))
        }
        Ok(raw) => parse_mode(&raw),
    }
}

/// Parses one `DEMO_MODE` value.
pub fn parse_mode(raw: &str) -> Result<Mode, ConfigError> {
    let raw = raw.trim();
    if let Some(ms) = raw.strip_prefix("crash-after-ms=") {
        return ms.parse().map(Mode::CrashAfterMs).map_err(|_| {
            ConfigError(format!(
                "{MODE_VAR}=crash-after-ms=N needs a whole number of milliseconds, got {ms:?}"
            ))
        });
    }
    if let Some(ms) = raw.strip_prefix("slow-start-ms=") {
        return ms.parse().map(Mode::SlowStartMs).map_err(|_| {
            ConfigError(format!(
                "{MODE_VAR}=slow-start-ms=N needs a whole number of milliseconds, got {ms:?}"
            ))
        });
    }
    match raw {
        "" | "normal" => Ok(Mode::Normal),
        "exit-immediately" => Ok(Mode::ExitImmediately),
        "never-listen" => Ok(Mode::NeverListen),
        "unhealthy" => Ok(Mode::Unhealthy),
        other => Err(ConfigError(format!(
            "unknown {MODE_VAR} {other:?}; expected exit-immediately, never-listen, \
             unhealthy, crash-after-ms=N or slow-start-ms=N"
        ))),
    }
}

/// Reads the port from `$PORT` (or from the variable that `$PORT_ENV` names).
pub fn port_from_env() -> Result<u16, ConfigError> {
    let var = env::var(PORT_ENV_VAR)
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| DEFAULT_PORT_VAR.to_owned());
    let raw = env::var(&var)
        .map_err(|_| ConfigError(format!("{var} must be set to the port to listen on")))?;
    parse_port(&var, &raw)
}

/// Reads the address to listen on from `$HOST` (loopback when unset).
pub fn host_from_env() -> Result<IpAddr, ConfigError> {
    match env::var(HOST_VAR) {
        Err(_) => Ok(DEFAULT_HOST),
        Ok(raw) => parse_host(&raw),
    }
}

/// Parses an IP address to listen on.
pub fn parse_host(raw: &str) -> Result<IpAddr, ConfigError> {
    raw.trim().parse().map_err(|_| {
        ConfigError(format!(
            "{HOST_VAR}={raw:?} is not an IP address (e.g. 127.0.0.1 or 10.0.0.5)"
        ))
    })
}

/// Parses a port value; 0 is refused because the platform must know the port.
pub fn parse_port(var: &str, raw: &str) -> Result<u16, ConfigError> {
    match raw.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err(ConfigError(format!(
            "{var}={raw:?} is not a port number (1-65535)"
        ))),
        Ok(port) => Ok(port),
    }
}

/// Reads the identity labels the platform gives every instance.
pub fn identity_from_env(mode: Mode) -> Result<Identity, ConfigError> {
    let fail_percent = match env::var(FAIL_PERCENT_VAR) {
        Err(_) => 0,
        Ok(raw) => match raw.trim().parse::<u64>() {
            Ok(percent) if percent <= 100 => percent,
            _ => {
                return Err(ConfigError(format!(
                    "{FAIL_PERCENT_VAR}={raw:?} is not a whole percentage (0-100)"
                )));
            }
        },
    };
    Ok(Identity {
        revision: env::var(REVISION_VAR).unwrap_or_else(|_| UNKNOWN_REVISION.to_owned()),
        instance: env::var(INSTANCE_VAR).unwrap_or_else(|_| DEFAULT_INSTANCE.to_owned()),
        unhealthy: mode == Mode::Unhealthy,
        fail_percent,
        seen: std::sync::atomic::AtomicU64::new(0),
        pack_configs: crate::pack_config::PackConfigs::from_env(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_and_bad_ones_are_refused() {
        // Proves an IPv4 or IPv6 address is accepted and a name is refused.
        assert_eq!(
            parse_host("10.0.0.5").ok(),
            Some(IpAddr::from([10, 0, 0, 5]))
        );
        assert_eq!(parse_host(" ::1 ").ok(), "::1".parse().ok());
        assert!(parse_host("localhost").is_err());
        assert!(parse_host("").is_err());
    }

    #[test]
    fn modes_parse_and_bad_ones_are_refused() {
        // Proves every documented mode parses and a typo is an error, not Normal.
        assert_eq!(parse_mode("").ok(), Some(Mode::Normal));
        assert_eq!(
            parse_mode("exit-immediately").ok(),
            Some(Mode::ExitImmediately)
        );
        assert_eq!(parse_mode("never-listen").ok(), Some(Mode::NeverListen));
        assert_eq!(parse_mode("unhealthy").ok(), Some(Mode::Unhealthy));
        assert_eq!(
            parse_mode("crash-after-ms=250").ok(),
            Some(Mode::CrashAfterMs(250))
        );
        assert!(parse_mode("crash-after-ms=soon").is_err());
        assert_eq!(
            parse_mode("slow-start-ms=1500").ok(),
            Some(Mode::SlowStartMs(1500))
        );
        assert!(parse_mode("slow-start-ms=").is_err());
        assert!(parse_mode("unhealty").is_err());
    }

    #[test]
    fn ports_must_be_real_port_numbers() {
        // Proves a bad PORT is an error (the process then exits 2) rather than a panic.
        assert_eq!(parse_port("PORT", "8080").ok(), Some(8080));
        assert!(parse_port("PORT", "0").is_err());
        assert!(parse_port("PORT", "70000").is_err());
        assert!(parse_port("PORT", "http").is_err());
    }
}
