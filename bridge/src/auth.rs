//! JWT verification. The token's claims become the transaction's `request.jwt.claims`,
//! and its `role` claim (or the configured default) the role the bridge switches to.

use crate::config::{Config, JwtAlgorithm};
use crate::errors::{self, Error};
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// The user id (`sub`), if any.
    pub sub: Option<String>,
    pub role: String,
    /// Expiry, seconds since the epoch; `None` only for anonymous connections.
    pub exp: Option<u64>,
    /// All claims as JSON text, as policies read them (request.jwt.claims). Text, not a
    /// parsed map: every connection keeps its claims, and only SQL reads them.
    pub raw: Box<str>,
}

impl Claims {
    /// The claims that decide access: all but those that change with every refreshed
    /// token.
    pub fn stable(&self) -> Option<serde_json::Map<String, Value>> {
        let mut claims = serde_json::from_str::<Value>(&self.raw)
            .ok()?
            .as_object()?
            .clone();
        for volatile in VOLATILE_CLAIMS {
            claims.remove(volatile);
        }
        Some(claims)
    }

    /// Who policies see this connection as, for the feed's per-identity checks.
    pub fn identity(&self) -> Identity {
        Identity {
            role: self.role.clone(),
            // Keys sorted (serde_json's map is ordered): equal claims, equal text.
            claims: self
                .stable()
                .map(|c| Value::Object(c).to_string())
                .unwrap_or_default(),
        }
    }
}

/// Claims that change with every refreshed token and say nothing about access. Policies
/// that read them see them absent in the feed's checks, and fail closed.
const VOLATILE_CLAIMS: [&str; 4] = ["exp", "iat", "nbf", "jti"];

/// A role with its stable claims: every connection of one identity (tabs, devices) sees
/// the same rows, so the feed checks each identity once per batch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub role: String,
    /// The stable claims as JSON text, keys sorted.
    pub claims: String,
}

pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    default_role: String,
    anon_role: Option<String>,
}

impl Verifier {
    pub fn new(config: &Config) -> Result<Verifier, String> {
        let (key, algorithm) = match config.jwt_algorithm {
            JwtAlgorithm::Hs256 => (
                DecodingKey::from_secret(config.jwt_secret.0.as_bytes()),
                Algorithm::HS256,
            ),
            JwtAlgorithm::Rs256 => (
                DecodingKey::from_rsa_pem(config.jwt_public_key.as_bytes())
                    .map_err(|e| format!("jwt_public_key: {e}"))?,
                Algorithm::RS256,
            ),
            JwtAlgorithm::Es256 => (
                DecodingKey::from_ec_pem(config.jwt_public_key.as_bytes())
                    .map_err(|e| format!("jwt_public_key: {e}"))?,
                Algorithm::ES256,
            ),
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        match &config.jwt_audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(Verifier {
            key,
            validation,
            default_role: config.default_role.clone(),
            anon_role: config.anon_role.clone(),
        })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, Error> {
        let data = decode::<Value>(token, &self.key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => {
                    Error::new(errors::TOKEN_EXPIRED, "the token has expired")
                }
                _ => Error::new(errors::UNAUTHORIZED, format!("invalid token: {e}")),
            }
        })?;
        let raw = data.claims;
        let role = match raw.get("role") {
            None => self.default_role.clone(),
            Some(Value::String(r)) if is_role_name(r) => r.clone(),
            Some(_) => {
                return Err(Error::new(
                    errors::UNAUTHORIZED,
                    "invalid token: bad role claim",
                ))
            }
        };
        Ok(Claims {
            sub: raw.get("sub").and_then(Value::as_str).map(str::to_string),
            role,
            exp: raw.get("exp").and_then(Value::as_u64),
            raw: raw.to_string().into(),
        })
    }

    /// Claims of a connection without a token, when anonymous access is configured.
    pub fn anonymous(&self) -> Option<Claims> {
        self.anon_role.as_ref().map(|role| Claims {
            sub: None,
            role: role.clone(),
            exp: None,
            raw: serde_json::json!({ "role": role }).to_string().into(),
        })
    }
}

fn is_role_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An HS256 token for `sub` with the configured default role, valid `ttl` seconds.
pub fn mint(config: &Config, sub: &str, ttl: u64) -> Result<String, String> {
    if config.jwt_algorithm != JwtAlgorithm::Hs256 {
        return Err("tokens can be minted only with an HS256 secret".into());
    }
    hs256_token(
        &config.jwt_secret.0,
        sub,
        &config.default_role,
        now() as i64 + ttl as i64,
    )
}

/// An HS256 token for `sub` and `role` expiring at `exp` (seconds since the epoch; in the
/// past for an expired one). What `mint`, the tests and the load generator sign with.
pub fn hs256_token(secret: &str, sub: &str, role: &str, exp: i64) -> Result<String, String> {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": sub, "role": role, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| e.to_string())
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
