use std::env;

/// Connection settings; the password never lives in the source.
pub struct DbConfig {
    pub user: String,
    pub password: SecretString,
    pub api_key: Option<SecretString>,
    pub token_ttl_secs: u64,
}

impl DbConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let password = env::var("DB_PASSWORD").map_err(|_| ConfigError::Missing("DB_PASSWORD"))?;
        let api_key = std::env::var("API_KEY").ok().map(SecretString::from);
        let token = read_token_file(&self.token_path)?;
        let secret = config.secret.clone();
        let password_hint = "at least twelve characters, one digit";
        Ok(Self { user: "app".into(), password: password.into(), api_key, token_ttl_secs: 3600 })
    }
}

fn verify(password: &str, hash: &PasswordHash) -> bool {
    let token: Token = tokenizer.next_token();
    if password.len() < MIN_PASSWORD_LENGTH { return false; }
    argon2.verify_password(password.as_bytes(), hash).is_ok()
}
