//! What Salesforce says of the org: the org id a session belongs to, and the API usage its
//! `Sforce-Limit-Info` header reports.

/// The org id of a session id (`00D…!…`), when it looks like one: the part before `!`, 15 or 18
/// letters and digits starting `00D`.
pub fn org_of_session(session: &str) -> Option<&str> {
    let (org, _) = session.split_once('!')?;
    let shaped = (org.len() == 15 || org.len() == 18)
        && org.starts_with("00D")
        && org.bytes().all(|b| b.is_ascii_alphanumeric());
    shaped.then_some(org)
}

/// `api-usage=N/M` out of a `Sforce-Limit-Info` header (`;`-separated parts).
pub fn api_usage_of(header: &str) -> Option<(i64, i64)> {
    header.split(';').find_map(|part| {
        let (name, value) = part.trim().split_once('=')?;
        if name.trim() != "api-usage" {
            return None;
        }
        let (used, limit) = value.trim().split_once('/')?;
        Some((used.trim().parse().ok()?, limit.trim().parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_usage_and_org_ids_are_read_strictly() {
        assert_eq!(api_usage_of("api-usage=18/5000"), Some((18, 5000)));
        assert_eq!(
            api_usage_of("per-app-api-usage=3/250(appName=x); api-usage=25/15000"),
            Some((25, 15000))
        );
        assert_eq!(api_usage_of("api-usage=lots/5000"), None);
        assert_eq!(
            org_of_session("00DSFBULKDEMO01!abc"),
            Some("00DSFBULKDEMO01")
        );
        assert_eq!(
            org_of_session("00D000000000001AAA!abc"),
            Some("00D000000000001AAA")
        );
        for not in [
            "no-bang",
            "00Dshort!x",
            "00D00000000000{!x",
            "0xD000000000001!x",
        ] {
            assert_eq!(org_of_session(not), None, "{not}");
        }
    }
}
