//! Bearer tokens: issuing them ([`new_token`]), reading them from the `Authorization`
//! header ([`bearer`]) and hashing them for the directory ([`token_sha256`]).
//!
//! A token is 32 bytes from the operating system's random generator, written as 43
//! characters of unpadded base64url (RFC 4648 §5), so it fits a header, a URL and a shell
//! without quoting. The directory stores only its SHA-256.
//!
//! Why a plain SHA-256 and not a password hash (Argon2, bcrypt, PBKDF2): those are slow on
//! purpose so that guessing a *human-chosen* password from a stolen hash takes too long.
//! A token has 256 random bits; even at 10^12 SHA-256 guesses a second, finding one takes
//! around 10^58 years, so slowness adds nothing. It would cost a lot: every API request
//! authenticates, a KDF spends tens of milliseconds of CPU on each (an easy way to overload
//! the gateway), and a KDF's per-entry salt makes lookup by hash impossible, turning O(1)
//! into trying every officer.

use base64::Engine;
use sha2::{Digest, Sha256};

/// Length of a token made by [`new_token`]: 32 bytes in unpadded base64url.
pub const TOKEN_LEN: usize = 43;

/// Longest token accepted, in bytes. Tokens from [`new_token`] have 43; the margin admits
/// tokens made by other tools (`openssl rand -hex 32` gives 64) while keeping a client from
/// making the gateway hash megabytes per request.
const MAX_TOKEN_LEN: usize = 256;

/// Why a request is not authenticated. The messages are safe to return to the client:
/// none says which officers exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header (or an empty one).
    #[error("no bearer token; send `Authorization: Bearer <token>`")]
    Missing,
    /// The header is not `Bearer <token>`, or the token has characters a token cannot have.
    #[error("malformed authorization; send `Authorization: Bearer <token>`")]
    Malformed,
    /// A well-formed token that no officer holds.
    #[error("unknown token")]
    Unknown,
}

impl AuthError {
    /// The `WWW-Authenticate` header value to send with the refusal (RFC 6750 §3). RFC 6750
    /// answers [`AuthError::Malformed`] (`invalid_request`) with 400 and the others with 401.
    pub const fn challenge(self) -> &'static str {
        match self {
            AuthError::Missing => "Bearer realm=\"firegrid\"",
            AuthError::Malformed => "Bearer realm=\"firegrid\", error=\"invalid_request\"",
            AuthError::Unknown => "Bearer realm=\"firegrid\", error=\"invalid_token\"",
        }
    }
}

/// The token in an `Authorization` header value, `Bearer <token>` (RFC 6750 §2.1; the
/// scheme name is case-insensitive, RFC 9110 §11.1). `None` or a blank value is
/// [`AuthError::Missing`]; another scheme, no token or a token outside the RFC's
/// `b64token` characters is [`AuthError::Malformed`].
pub fn bearer(header: Option<&str>) -> Result<&str, AuthError> {
    let value = header.map(str::trim).filter(|v| !v.is_empty()).ok_or(AuthError::Missing)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    let token = token.trim_start_matches(' ');
    check_syntax(token)?;
    Ok(token)
}

/// Refuses what cannot be a token before it is hashed: RFC 6750's `b64token`, 1 to
/// [`MAX_TOKEN_LEN`] bytes of `A-Z a-z 0-9 - . _ ~ + /` followed by any `=`.
pub(super) fn check_syntax(token: &str) -> Result<(), AuthError> {
    let body = token.trim_end_matches('=');
    let ok = !body.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/'));
    if ok { Ok(()) } else { Err(AuthError::Malformed) }
}

/// SHA-256 of a token, as the directory indexes it.
pub fn token_sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// SHA-256 of a token in lower-case hex, as written in the directory's `token_sha256`.
pub fn token_sha256_hex(token: &str) -> String {
    hex::encode(token_sha256(token))
}

/// A new token and its SHA-256 in hex: `(token, token_sha256)`. What `firegrid
/// officer-token` prints: the token goes to the officer (once; it cannot be recovered),
/// the hash into their `[[officer]]` table.
///
/// # Panics
///
/// If the operating system's random generator fails, which on the supported systems means
/// the system is broken; a token from any weaker source would be worse than none.
pub fn new_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = token_sha256_hex(&token);
    (token, hash)
}
