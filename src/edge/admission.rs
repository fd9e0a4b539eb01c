//! Who gets in, and how many at once: the bearer tokens a caller must show
//! (`server.auth_tokens`), and the limits on requests in flight and on connections, beyond which
//! the proxy sheds load at once. Shedding is logged once per burst, with a count, never a line
//! per request: a flood must not become a flood of log lines too.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};

use crate::common::request_id::Team;
use crate::common::secret::Secret;
use crate::pipeline::connection::Scope;

/// How long a burst of shedding is counted before its one log line is written.
const BURST_WINDOW: Duration = Duration::from_secs(1);

/// A limit on how many of something are under way at once.
#[derive(Debug)]
pub struct Limit {
    /// The setting that sets it, for the log line.
    setting: &'static str,
    max: usize,
    current: AtomicUsize,
    shed: BurstLog,
}

impl Limit {
    pub fn new(setting: &'static str, max: usize) -> Limit {
        Limit {
            setting,
            max,
            current: AtomicUsize::new(0),
            shed: BurstLog::new(setting),
        }
    }

    /// A place under the limit, or `None` (and the refusal counted for the burst's log line).
    pub fn try_enter(&self) -> Option<Permit<'_>> {
        let entered = self
            .current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        if entered {
            Some(Permit(self))
        } else {
            self.shed.note();
            None
        }
    }

    /// The setting this limit comes from.
    pub fn setting(&self) -> &'static str {
        self.setting
    }
}

/// One place under a [`Limit`], given back when dropped.
#[derive(Debug)]
pub struct Permit<'a>(&'a Limit);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts refusals and writes one warning per burst: the first refusal starts a window, and
/// at its end the count is logged and reset.
#[derive(Debug)]
pub struct BurstLog {
    setting: &'static str,
    count: Arc<AtomicU64>,
}

impl BurstLog {
    pub fn new(setting: &'static str) -> BurstLog {
        BurstLog {
            setting,
            count: Arc::default(),
        }
    }

    /// Counts one refusal.
    pub fn note(&self) {
        if self.count.fetch_add(1, Ordering::AcqRel) != 0 {
            return;
        }
        let (count, setting) = (self.count.clone(), self.setting);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            tokio::time::sleep(BURST_WINDOW).await;
            let shed = count.swap(0, Ordering::AcqRel);
            tracing::warn!(
                target: "sfbulk_proxy::admission",
                shed,
                limit = setting,
                window_ms = BURST_WINDOW.as_millis() as u64,
                "shedding load: refused what came beyond the limit"
            );
        });
    }
}

/// Who a bearer token lets in: the connections it may use, and the team of `server.token_scopes`
/// its calls are charged to (`None`: a token of no team, or no token required).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub scope: Scope,
    pub team: Option<Team>,
}

/// The bearer tokens callers must show, each with the connections it may use; none means
/// every caller may call.
#[derive(Default)]
pub struct BearerTokens {
    /// SHA-256 of each token: comparing digests of equal length leaks neither a token's bytes nor
    /// its length through timing.
    digests: Vec<([u8; 32], Caller)>,
}

impl std::fmt::Debug for BearerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BearerTokens({} tokens)", self.digests.len())
    }
}

impl BearerTokens {
    /// `every`: tokens that may use every connection; `scoped`: tokens each limited to some
    /// connections, with their team, in the settings' order. A token given more than once gets
    /// the union of its scopes, and is charged to the first team it is given in.
    pub fn new(every: &[Secret], scoped: &[(Secret, Vec<String>, Team)]) -> BearerTokens {
        let mut digests: Vec<([u8; 32], Caller)> = Vec::new();
        let given = every
            .iter()
            .map(|t| {
                let caller = Caller {
                    scope: Scope::Every,
                    team: None,
                };
                (t, caller)
            })
            .chain(scoped.iter().map(|(t, names, team)| {
                let caller = Caller {
                    scope: Scope::Only(names.clone().into()),
                    team: Some(team.clone()),
                };
                (t, caller)
            }));
        for (token, caller) in given {
            let digest: [u8; 32] = Sha256::digest(token.expose().as_bytes()).into();
            match digests.iter_mut().find(|(d, _)| *d == digest) {
                None => digests.push((digest, caller)),
                Some((_, known)) => {
                    known.scope = union(&known.scope, &caller.scope);
                    known.team = known.team.take().or(caller.team);
                }
            }
        }
        BearerTokens { digests }
    }

    pub fn is_required(&self) -> bool {
        !self.digests.is_empty()
    }

    /// The caller the `Authorization: Bearer <token>` that `headers` carry lets in, `None` when
    /// it is none of the tokens (every caller is admitted to every connection, charged to no
    /// team, when no token is configured). Every token is compared, in constant time.
    pub fn admit(&self, headers: &HeaderMap) -> Option<Caller> {
        if !self.is_required() {
            return Some(Caller {
                scope: Scope::Every,
                team: None,
            });
        }
        self.caller_of(authorization(headers, "bearer")?)
    }

    /// Whether `headers` carry one of the tokens as `Authorization: Bearer`, or as HTTP Basic's
    /// password (any user name: what a browser can send); always, when none is configured.
    pub fn admits_bearer_or_basic(&self, headers: &HeaderMap) -> bool {
        if self.admit(headers).is_some() {
            return true;
        }
        use base64::Engine as _;
        authorization(headers, "basic")
            .and_then(|encoded| {
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .ok()
            })
            .and_then(|decoded| String::from_utf8(decoded).ok())
            .and_then(|pair| Some(self.caller_of(pair.split_once(':')?.1).is_some()))
            .unwrap_or(false)
    }

    /// The caller the token `presented` lets in, `None` when it is none of them. Every token is
    /// compared, in constant time.
    fn caller_of(&self, presented: &str) -> Option<Caller> {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (digest, caller) in &self.digests {
            let differing = digest
                .iter()
                .zip(presented.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if differing == 0 {
                found = Some(caller);
            }
        }
        found.cloned()
    }
}

/// The longest token file read: a token file is a few lines.
const MAX_TOKEN_FILE_BYTES: u64 = 1024 * 1024;

/// The tokens of a token file: one a line, trimmed, blank lines and `#` comments skipped. The
/// error names the file, never its content.
pub fn read_token_file(path: &Path) -> Result<Vec<Secret>, String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| {
            file.take(MAX_TOKEN_FILE_BYTES + 1)
                .read_to_string(&mut text)
        })
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if text.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(format!(
            "{}: larger than {MAX_TOKEN_FILE_BYTES} bytes",
            path.display()
        ));
    }
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(Secret::new)
        .collect())
}

/// A token file, read at start and again on every reload, with the scope of its tokens.
#[derive(Debug, Clone)]
pub struct TokenFile {
    /// The setting that names it, for log lines (`server.auth_tokens_file`).
    pub setting: String,
    pub path: PathBuf,
    /// `None`: its tokens may use every connection; else only these (lower case).
    pub connections: Option<Vec<String>>,
    /// The team of `server.token_scopes` its tokens are charged to (a team's file alone).
    pub team: Option<Team>,
    /// Whether a file without a token is refused (a team's file must hold one).
    pub must_hold_a_token: bool,
    /// The tokens as last read well.
    pub tokens: Vec<Secret>,
}

/// What a reload of the token files did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TokensReloaded {
    /// The settings of the files read anew.
    pub reloaded: Vec<String>,
    /// The settings of the files that failed and kept their last good tokens.
    pub failed: Vec<String>,
    /// Whether the new set was refused as a whole: it would have let every caller in where
    /// tokens were required.
    pub refused: bool,
}

/// The bearer tokens callers must show, from `server.auth_tokens` and the token files, replaced
/// as a whole when the files are read again ([`GuardTokens::reload`]).
pub struct GuardTokens {
    inline: Vec<Secret>,
    files: Mutex<Vec<TokenFile>>,
    current: ArcSwap<BearerTokens>,
}

impl std::fmt::Debug for GuardTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GuardTokens({:?})", self.current.load())
    }
}

impl GuardTokens {
    /// `inline`: tokens given in the settings, for every connection; `files`: as read at start.
    pub fn new(inline: Vec<Secret>, files: Vec<TokenFile>) -> GuardTokens {
        let current = ArcSwap::from_pointee(compose(&inline, &files));
        GuardTokens {
            inline,
            files: Mutex::new(files),
            current,
        }
    }

    /// The tokens in force.
    pub fn current(&self) -> arc_swap::Guard<Arc<BearerTokens>> {
        self.current.load()
    }

    /// Whether any token file is named (a reload has something to read).
    pub fn has_files(&self) -> bool {
        !self
            .files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Reads every token file again, each on its own: one that cannot be read (or a team's
    /// that holds no token) keeps its last good tokens and is logged at ERROR. A new set that
    /// holds no token where the old one required some is refused whole: an emptied file never
    /// opens the port to anyone.
    pub fn reload(&self) -> TokensReloaded {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = files.clone();
        let mut report = TokensReloaded::default();
        for file in &mut next {
            match read_token_file(&file.path) {
                Ok(tokens) if tokens.is_empty() && file.must_hold_a_token => {
                    tracing::error!(
                        target: "sfbulk_proxy::admission",
                        setting = %file.setting,
                        file = %file.path.display(),
                        "a token file holds no token; keeping its last good tokens"
                    );
                    report.failed.push(file.setting.clone());
                }
                Ok(tokens) => {
                    file.tokens = tokens;
                    report.reloaded.push(file.setting.clone());
                }
                Err(error) => {
                    tracing::error!(
                        target: "sfbulk_proxy::admission",
                        setting = %file.setting,
                        %error,
                        "a token file cannot be read; keeping its last good tokens"
                    );
                    report.failed.push(file.setting.clone());
                }
            }
        }
        let composed = compose(&self.inline, &next);
        if self.current.load().is_required() && !composed.is_required() {
            tracing::error!(
                target: "sfbulk_proxy::admission",
                files = %next.iter().map(|f| f.setting.as_str()).collect::<Vec<_>>().join(", "),
                "the token files now hold no token at all; the reload is refused and the tokens \
                 in force are kept (a listener that required a token never opens to anyone)"
            );
            report.refused = true;
            return report;
        }
        *files = next;
        self.current.store(Arc::new(composed));
        report
    }
}

/// The bearer tokens of `inline` and `files` together.
fn compose(inline: &[Secret], files: &[TokenFile]) -> BearerTokens {
    let every: Vec<Secret> = inline
        .iter()
        .chain(
            files
                .iter()
                .filter(|f| f.connections.is_none())
                .flat_map(|f| f.tokens.iter()),
        )
        .cloned()
        .collect();
    let scoped: Vec<(Secret, Vec<String>, Team)> = files
        .iter()
        .filter_map(|f| Some((f, f.connections.as_ref()?, f.team.as_ref()?)))
        .flat_map(|(f, names, team)| {
            f.tokens
                .iter()
                .map(|t| (t.clone(), names.clone(), team.clone()))
        })
        .collect();
    BearerTokens::new(&every, &scoped)
}

/// The credentials of `Authorization: <scheme> <credentials>`, for `scheme` in any case.
fn authorization<'h>(headers: &'h HeaderMap, scheme: &str) -> Option<&'h str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (given, credentials) = value.trim().split_once(' ')?;
    given
        .eq_ignore_ascii_case(scheme)
        .then(|| credentials.trim())
}

/// Both scopes' connections.
fn union(a: &Scope, b: &Scope) -> Scope {
    match (a, b) {
        (Scope::Only(a), Scope::Only(b)) => {
            let mut names: Vec<String> = a.iter().chain(b.iter()).cloned().collect();
            names.sort();
            names.dedup();
            Scope::Only(names.into())
        }
        _ => Scope::Every,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[tokio::test]
    async fn a_limit_admits_up_to_its_maximum_and_frees_places_on_drop() {
        let limit = Limit::new("server.max_in_flight", 2);
        let a = limit.try_enter().unwrap();
        let _b = limit.try_enter().unwrap();
        assert!(limit.try_enter().is_none());
        drop(a);
        assert!(limit.try_enter().is_some());
    }

    #[test]
    fn only_a_configured_bearer_token_is_admitted() {
        let tokens = BearerTokens::new(&[Secret::new("alpha"), Secret::new("beta")], &[]);
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            tokens.admit(&headers).is_some()
        };
        assert!(with("Bearer beta"));
        assert!(with("bearer alpha"));
        assert!(!with("Bearer gamma"));
        assert!(!with("Bearer alph"));
        assert!(!with("Basic YWxwaGE="));
        assert!(tokens.admit(&HeaderMap::new()).is_none());
        assert_eq!(
            BearerTokens::default().admit(&HeaderMap::new()),
            Some(Caller {
                scope: Scope::Every,
                team: None
            })
        );
    }

    #[test]
    fn a_scoped_token_covers_its_connections_and_a_token_given_twice_gets_both_scopes() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let team = |name: &str| Team {
            name: name.into(),
            api_share_percent: Some(10),
        };
        let tokens = BearerTokens::new(
            &[Secret::new("ops")],
            &[
                (Secret::new("sales-team"), names(&["sales"]), team("sales")),
                (Secret::new("both"), names(&["sales"]), team("sales")),
                (Secret::new("both"), names(&["finance"]), team("finance")),
                (Secret::new("ops"), names(&["sales"]), team("sales")),
            ],
        );
        let caller = |token: &str| {
            let mut headers = HeaderMap::new();
            let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
            headers.insert(header::AUTHORIZATION, value);
            tokens.admit(&headers).unwrap()
        };
        let scope = |token: &str| caller(token).scope;
        assert!(scope("sales-team").allows("sales"));
        assert!(!scope("sales-team").allows("finance"));
        assert!(scope("both").allows("sales") && scope("both").allows("finance"));
        assert_eq!(
            scope("ops"),
            Scope::Every,
            "auth_tokens may use every connection"
        );
        assert_eq!(
            caller("both").team,
            Some(team("sales")),
            "charged to its first team"
        );
        assert_eq!(caller("sales-team").team, Some(team("sales")));
    }
}
