//! Password hashing and credential verification with a short-lived cache.
//!
//! Verifying an argon2 hash costs tens of milliseconds by design; a request must not
//! pay it each time. A verified `(user, password)` pair is remembered as a salted
//! SHA-256 digest for `ttl`, and every change to users clears the cache.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng};
use kalamdb_commons::{ErrorCode, KalamError, KalamResult};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::access::Caller;
use crate::catalog::Catalog;

pub fn hash_password(password: &str) -> KalamResult<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| KalamError::internal(format!("password hashing failed: {e}")))
}

/// [`hash_password`] on tokio's blocking pool: argon2 costs tens of milliseconds of
/// CPU by design and must not hold an async worker (or a lock) meanwhile.
pub async fn hash_password_off_workers(password: String) -> KalamResult<String> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| KalamError::internal(format!("password hashing task failed: {e}")))?
}

fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// One message whether the user is unknown or the password wrong.
fn denied() -> KalamError {
    KalamError::new(ErrorCode::Unauthorized, "invalid username or password")
}

struct CachedCredential {
    digest: [u8; 32],
    caller: Caller,
    verified_at: Instant,
}

/// The cache, and how many times it was invalidated.
#[derive(Default)]
struct CredentialCache {
    generation: u64,
    entries: HashMap<String, CachedCredential>,
}

/// Credentials verified against the catalog as it was at `generation`
/// ([`Authenticator::verify`]), to be remembered only if no user changed since.
pub struct Verified {
    pub caller: Caller,
    digest: [u8; 32],
    generation: u64,
}

pub struct Authenticator {
    ttl: Duration,
    salt: [u8; 16],
    cache: Mutex<CredentialCache>,
}

/// At most this many cached credentials; the cache is cleared when full.
const MAX_CACHED_CREDENTIALS: usize = 10_000;

impl Authenticator {
    pub fn new(ttl: Duration) -> Self {
        Authenticator {
            ttl,
            salt: *uuid::Uuid::new_v4().as_bytes(),
            cache: Mutex::new(CredentialCache::default()),
        }
    }

    fn digest(&self, password: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.salt);
        hasher.update(password.as_bytes());
        hasher.finalize().into()
    }

    /// The caller for credentials verified within the cache's lifetime, without
    /// hashing anything (`None`: they need [`Authenticator::verify`]).
    fn cached(&self, username: &str, password: &str) -> Option<Caller> {
        let digest = self.digest(password);
        self.cache
            .lock()
            .entries
            .get(username)
            .filter(|cached| cached.digest == digest && cached.verified_at.elapsed() < self.ttl)
            .map(|cached| cached.caller.clone())
    }

    /// Verifies a password against the catalog (argon2: tens of milliseconds),
    /// noting which generation of the cache the catalog was read in.
    pub fn verify(&self, catalog: &Catalog, username: &str, password: &str) -> KalamResult<Verified> {
        // Read before the catalog: a change of users after this point bumps the
        // generation, so what is verified here cannot be remembered past it.
        let generation = self.cache.lock().generation;
        let user = catalog.user(username).ok_or_else(denied)?;
        if !verify_password(&user.password_hash, password) {
            return Err(denied());
        }
        Ok(Verified {
            caller: Caller::from(&user),
            digest: self.digest(password),
            generation,
        })
    }

    /// Remembers verified credentials, unless a user changed since they were read
    /// (an `ALTER USER` or `DROP USER` while the password was being verified must
    /// not be undone by this entry).
    pub fn remember(&self, username: &str, verified: &Verified) {
        let mut cache = self.cache.lock();
        if cache.generation != verified.generation {
            return;
        }
        if cache.entries.len() >= MAX_CACHED_CREDENTIALS {
            cache.entries.clear();
        }
        cache.entries.insert(
            username.to_string(),
            CachedCredential {
                digest: verified.digest,
                caller: verified.caller.clone(),
                verified_at: Instant::now(),
            },
        );
    }

    /// The answer to credentials when it needs no password hash verified
    /// (microseconds, no blocking): credentials in the cache, an unknown user, a
    /// user without a password (accepted only with an empty password when
    /// `passwordless_ok`: a loopback client, no browser; see `kalamdb-api`). `None`:
    /// a hash must be verified ([`Authenticator::verify`], then
    /// [`Authenticator::remember`]).
    pub fn without_hashing(
        &self,
        catalog: &Catalog,
        username: &str,
        password: &str,
        passwordless_ok: bool,
    ) -> Option<KalamResult<Caller>> {
        if let Some(caller) = self.cached(username, password) {
            return Some(Ok(caller));
        }
        let Some(user) = catalog.user(username) else {
            return Some(Err(denied()));
        };
        if user.password_hash.is_empty() {
            // Not cached: the conditions are checked on every request.
            return Some(if password.is_empty() && passwordless_ok {
                Ok(Caller::from(&user))
            } else {
                Err(denied())
            });
        }
        None
    }

    /// Forgets every verified credential (a user's password or role changed, or the
    /// user was dropped); credentials being verified meanwhile are not remembered.
    pub fn invalidate(&self) {
        let mut cache = self.cache.lock();
        cache.generation += 1;
        cache.entries.clear();
    }
}

/// Signed bearer tokens (JWT, HS256) for `POST /auth/login`.
///
/// A token names the user by name and stable id and carries a fingerprint of the
/// user's password hash: it stops working when the user is dropped (or re-created,
/// with a new id), when the password changes, and when it expires. The role is not
/// in the token: it is read from the catalog on every request.
pub struct TokenService {
    encoding: jsonwebtoken::EncodingKey,
    decoding: jsonwebtoken::DecodingKey,
    ttl: Duration,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    sub: String,
    uid: String,
    /// Fingerprint of the password hash the token was issued against.
    pwf: String,
    iat: i64,
    exp: i64,
}

fn password_fingerprint(hash: &str) -> String {
    let digest = Sha256::digest(hash.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl TokenService {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        TokenService {
            encoding: jsonwebtoken::EncodingKey::from_secret(secret),
            decoding: jsonwebtoken::DecodingKey::from_secret(secret),
            ttl,
        }
    }

    /// A token for `user`, valid for the configured time; returns it and its expiry
    /// (seconds since the epoch).
    pub fn issue(&self, user: &crate::catalog::UserRecord) -> KalamResult<(String, i64)> {
        let now = crate::base::now_micros() / 1_000_000;
        let exp = now + self.ttl.as_secs() as i64;
        let claims = Claims {
            sub: user.username.clone(),
            uid: user.user_id.to_string(),
            pwf: password_fingerprint(&user.password_hash),
            iat: now,
            exp,
        };
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &self.encoding,
        )
        .map_err(|e| KalamError::internal(format!("cannot sign a token: {e}")))?;
        Ok((token, exp))
    }

    /// The caller a token stands for, or `UNAUTHORIZED`.
    pub fn verify(&self, catalog: &Catalog, token: &str) -> KalamResult<Caller> {
        let denied = |why: &str| KalamError::new(ErrorCode::Unauthorized, format!("invalid token: {why}"));
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => denied("it has expired"),
            jsonwebtoken::errors::ErrorKind::InvalidSignature => denied("bad signature"),
            _ => denied("malformed"),
        })?;
        let claims = data.claims;
        let user = catalog
            .user(&claims.sub)
            .filter(|u| u.user_id.as_str() == claims.uid)
            .ok_or_else(|| denied("the user no longer exists"))?;
        if password_fingerprint(&user.password_hash) != claims.pwf {
            return Err(denied("the password changed since it was issued"));
        }
        Ok(Caller::from(&user))
    }
}
