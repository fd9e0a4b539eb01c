//! Which Bulk API 2.0 and REST calls are let in: the `vNN.N` of the path, then the session.

use axum::http::{header, HeaderMap, StatusCode};

use crate::v2_jobs::answers::Refusal;
use crate::Org;

/// The lowest API version with Bulk API 2.0 (its ingest jobs): below it, every call is 404
/// before its session is looked at.
pub(super) const MIN_BULK2_VERSION: f64 = 41.0;

/// `vNN.N` of the path, as a number.
fn version(raw: &str) -> Option<f64> {
    let number = raw.strip_prefix('v')?;
    let (major, minor) = number.split_once('.')?;
    if major.is_empty() || !major.bytes().all(|b| b.is_ascii_digit()) || minor != "0" {
        return None;
    }
    number.parse().ok()
}

/// The session check of the REST API: `Authorization: Bearer <token>`.
fn authorised(org: &Org, headers: &HeaderMap) -> Result<(), Refusal> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token {
        Some(token) if org.bearer_is_live(token.trim()) => Ok(()),
        _ => Err(Refusal {
            status: StatusCode::UNAUTHORIZED,
            code: "INVALID_SESSION_ID",
            message: "Session expired or invalid".into(),
        }),
    }
}

/// The checks every call makes first: a Bulk 2.0 version (404), a live session (401), then a
/// version that has this kind of job, from `min_version` (404). The version, once let in.
pub(super) fn admitted(
    org: &Org,
    raw_version: &str,
    headers: &HeaderMap,
    min_version: f64,
) -> Result<f64, Refusal> {
    let version = rest_admitted(org, raw_version, headers, MIN_BULK2_VERSION)?;
    if version < min_version {
        return Err(Refusal::NOT_FOUND);
    }
    Ok(version)
}

/// The checks of any REST resource under `/services/data/vNN.N/`: a version from `since` (404
/// before), then a live session (401). The version, once let in.
pub(crate) fn rest_admitted(
    org: &Org,
    raw_version: &str,
    headers: &HeaderMap,
    since: f64,
) -> Result<f64, Refusal> {
    let Some(version) = version(raw_version).filter(|v| *v >= since) else {
        return Err(Refusal::NOT_FOUND);
    };
    authorised(org, headers)?;
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::version;

    #[test]
    fn versions_are_vnn_point_0() {
        assert_eq!(version("v59.0"), Some(59.0));
        assert_eq!(version("v41.0"), Some(41.0));
        assert_eq!(version("59.0"), None);
        assert_eq!(version("v59.1"), None);
        assert_eq!(version("vx.0"), None);
    }
}
