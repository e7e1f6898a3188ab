//! Bearer-token authentication: the accepted tokens, compared in constant time, and the tower
//! layer that refuses a call without one of them before any service sees it.
//!
//! The layer wraps the whole server, so a service added later is closed by default; only the
//! health service, and reflection unless `--reflection-requires-auth`, are let through
//! without a token.

use std::{
    fmt,
    path::Path,
    str::FromStr,
    sync::{Arc, RwLock},
    task::{Context, Poll},
};

use futures::future::Either;
use http::header::AUTHORIZATION;
use subtle::{Choice, ConstantTimeEq};
use tonic::Status;

use super::SecurityError;
use crate::error::{Refusal, ServiceError};
use crate::routes::Route;

/// A secret token, as configured. Its `Debug` never shows it, so a config printed or logged
/// does not leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The token itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl FromStr for Token {
    // Never fails: a parse error would print the value; tokens are checked by `AuthTokens`,
    // whose errors say where a bad token is without showing it.
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Token(text.to_string()))
    }
}

/// The tokens the server accepts, kept only as SHA-256 digests.
///
/// A presented token is hashed and its digest compared with every known digest in constant
/// time, all of them every time: how long a check takes depends neither on how much of a token
/// matches nor on the length of the secret tokens, nor on which of them matched.
#[derive(Clone, Default)]
pub struct AuthTokens {
    digests: Vec<[u8; 32]>,
}

impl AuthTokens {
    /// Adds a token; `origin` says where it came from in the error about an unusable one
    /// ("token 2 of ACTIVATIONS_AUTH_TOKENS"). Surrounding whitespace is ignored and empty
    /// tokens are skipped.
    pub fn add(
        &mut self,
        token: &Token,
        origin: impl FnOnce() -> String,
    ) -> Result<(), SecurityError> {
        let token = token.expose().trim();
        if token.is_empty() {
            return Ok(());
        }
        // What a client can send in a header after `Bearer `: visible ASCII, no spaces.
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SecurityError::InvalidToken { origin: origin() });
        }
        self.digests.push(sha256(token.as_bytes()));
        Ok(())
    }

    /// Adds the tokens of a file: one per line; blank lines and lines starting with `#` are
    /// ignored. A file without any token is an error, so a misplaced file does not leave the
    /// server open.
    pub fn add_file(&mut self, path: &Path) -> Result<(), SecurityError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecurityError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let before = self.digests.len();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            self.add(&Token(line.to_string()), || {
                format!("line {} of {}", number + 1, path.display())
            })?;
        }
        if self.digests.len() == before {
            return Err(SecurityError::NoTokens {
                path: path.to_path_buf(),
            });
        }
        Ok(())
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether no token is accepted (authentication is off).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `candidate` is one of the tokens, in constant time.
    pub fn accepts(&self, candidate: &[u8]) -> bool {
        let presented = sha256(candidate);
        let mut found = Choice::from(0);
        for known in &self.digests {
            found |= known.ct_eq(&presented);
        }
        found.into()
    }
}

impl fmt::Debug for AuthTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthTokens")
            .field("count", &self.digests.len())
            .finish()
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Which calls need a token, and which tokens are accepted. Clones share their tokens, which
/// [`AuthPolicy::replace_tokens`] swaps for every call after it (a reloaded token file).
#[derive(Debug, Clone)]
pub struct AuthPolicy {
    tokens: Arc<RwLock<Arc<AuthTokens>>>,
    reflection_requires_auth: bool,
}

impl AuthPolicy {
    /// Every call needs one of `tokens`, except health checks and, unless
    /// `reflection_requires_auth`, reflection.
    pub fn new(tokens: AuthTokens, reflection_requires_auth: bool) -> AuthPolicy {
        AuthPolicy {
            tokens: Arc::new(RwLock::new(Arc::new(tokens))),
            reflection_requires_auth,
        }
    }

    fn tokens(&self) -> Arc<AuthTokens> {
        self.tokens
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Accepts `tokens` instead, from the next call on.
    pub fn replace_tokens(&self, tokens: AuthTokens) {
        *self
            .tokens
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(tokens);
    }

    /// How many tokens are accepted.
    pub fn token_count(&self) -> usize {
        self.tokens().len()
    }

    /// Whether reflection needs a token too.
    pub fn reflection_requires_auth(&self) -> bool {
        self.reflection_requires_auth
    }

    /// Whether a call to `path` (`/package.Service/Method`) with these headers may proceed.
    pub fn check(&self, path: &str, headers: &http::HeaderMap) -> Result<(), Refusal> {
        // Health is always open: load balancers and orchestrators probe it without
        // credentials. Reflection is open unless `--reflection-requires-auth`.
        match Route::of(path) {
            Route::Health => return Ok(()),
            Route::Reflection if !self.reflection_requires_auth => return Ok(()),
            _ => {}
        }
        let value = headers.get(AUTHORIZATION).ok_or(Refusal::Missing)?;
        let token = bearer_token(value.as_bytes()).ok_or(Refusal::Malformed)?;
        // Checked under the read lock, without cloning the set: every call passes here.
        let accepted = self
            .tokens
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .accepts(token);
        if accepted {
            Ok(())
        } else {
            Err(Refusal::UnknownToken)
        }
    }
}

/// The token of `Bearer <token>` (the scheme in any case, RFC 6750).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// The tower layer that applies an [`AuthPolicy`] to every call; without a policy it lets
/// everything through.
#[derive(Debug, Clone, Default)]
pub struct AuthLayer {
    policy: Option<Arc<AuthPolicy>>,
}

impl AuthLayer {
    /// Applies `policy`, or nothing for `None`.
    pub fn new(policy: Option<AuthPolicy>) -> AuthLayer {
        AuthLayer {
            policy: policy.map(Arc::new),
        }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = RequireBearer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireBearer {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the server's routes.
#[derive(Debug, Clone)]
pub struct RequireBearer<S> {
    inner: S,
    policy: Option<Arc<AuthPolicy>>,
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for RequireBearer<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<std::future::Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let Some(policy) = &self.policy else {
            return Either::Right(self.inner.call(request));
        };
        match policy.check(request.uri().path(), request.headers()) {
            Ok(()) => {
                // The handlers have no use for the token; it goes no further.
                request.headers_mut().remove(AUTHORIZATION);
                Either::Right(self.inner.call(request))
            }
            Err(refusal) => {
                let status = Status::from(ServiceError::Unauthenticated(refusal));
                Either::Left(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(list: &[&str]) -> AuthTokens {
        let mut tokens = AuthTokens::default();
        for token in list {
            tokens.add(&token.parse().unwrap(), String::new).unwrap();
        }
        tokens
    }

    fn headers(authorization: Option<&str>) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(AUTHORIZATION, value.parse().unwrap());
        }
        headers
    }

    const CALL: &str = "/neuron_explainer.activations.v1.ActivationService/ListLayers";

    #[test]
    fn only_a_listed_token_is_accepted() {
        let tokens = tokens(&["alpha-1", "beta-2"]);
        assert!(tokens.accepts(b"alpha-1"));
        assert!(tokens.accepts(b"beta-2"));
        for wrong in [&b"alpha-"[..], b"alpha-12", b"ALPHA-1", b"", b"beta-2 "] {
            assert!(
                !tokens.accepts(wrong),
                "{:?}",
                String::from_utf8_lossy(wrong)
            );
        }
        assert!(!AuthTokens::default().accepts(b""));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_needs_a_token() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"abc"), None);
    }

    #[test]
    fn calls_need_a_valid_token_but_health_stays_open() {
        let policy = AuthPolicy::new(tokens(&["s3cret"]), false);
        assert_eq!(policy.check(CALL, &headers(None)), Err(Refusal::Missing));
        assert_eq!(
            policy.check(CALL, &headers(Some("Token s3cret"))),
            Err(Refusal::Malformed)
        );
        assert_eq!(
            policy.check(CALL, &headers(Some("Bearer wrong"))),
            Err(Refusal::UnknownToken)
        );
        assert_eq!(policy.check(CALL, &headers(Some("Bearer s3cret"))), Ok(()));
        assert_eq!(
            policy.check("/grpc.health.v1.Health/Check", &headers(None)),
            Ok(())
        );
    }

    #[test]
    fn reflection_is_open_unless_the_flag_closes_it() {
        let path = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
        let open = AuthPolicy::new(tokens(&["t"]), false);
        assert_eq!(open.check(path, &headers(None)), Ok(()));
        let closed = AuthPolicy::new(tokens(&["t"]), true);
        assert_eq!(closed.check(path, &headers(None)), Err(Refusal::Missing));
        assert_eq!(closed.check(path, &headers(Some("Bearer t"))), Ok(()));
    }

    #[test]
    fn token_files_skip_comments_and_blank_lines_and_must_hold_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(
            &file,
            "# ops team\n\n  first-token  \n#second-commented\nsecond\n",
        )
        .unwrap();
        let mut tokens = AuthTokens::default();
        tokens.add_file(&file).unwrap();
        assert_eq!(tokens.len(), 2);
        assert!(tokens.accepts(b"first-token") && tokens.accepts(b"second"));
        assert!(!tokens.accepts(b"#second-commented"));

        std::fs::write(&file, "# nothing yet\n\n").unwrap();
        let error = AuthTokens::default().add_file(&file).unwrap_err();
        assert!(matches!(error, SecurityError::NoTokens { .. }), "{error}");
    }

    #[test]
    fn an_unsendable_token_is_refused_without_showing_it() {
        let error = AuthTokens::default()
            .add(&"two words".parse().unwrap(), || "token 1 of X".to_string())
            .unwrap_err();
        let text = error.to_string();
        assert!(text.contains("token 1 of X"), "{text}");
        assert!(!text.contains("two words"), "{text}");
    }

    #[test]
    fn debug_output_never_shows_tokens() {
        let token: Token = "hunter2-token".parse().unwrap();
        let policy = AuthPolicy::new(tokens(&["hunter2-token"]), true);
        let printed = format!(
            "{token:?} {policy:?} {:?}",
            AuthLayer::new(Some(policy.clone()))
        );
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("count: 1"), "{printed}");
    }
}
