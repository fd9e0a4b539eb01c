//! The known name nearest to one given, by edit distance: how a misspelled setting or operation
//! is answered with the one that was meant.

/// A name longer than this is compared with nothing: no misspelling is that long, and each
/// comparison costs the product of the two lengths.
const MAX_COMPARED_BYTES: usize = 128;

/// The name of `known` nearest to `given` (the first of equals), if it is within the distance
/// `within` allows for it; `None` as well when `given` is too long to be a misspelling.
pub fn nearest<'k>(
    given: &str,
    known: impl IntoIterator<Item = &'k str>,
    within: impl Fn(&str) -> usize,
) -> Option<&'k str> {
    if given.len() > MAX_COMPARED_BYTES {
        return None;
    }
    known
        .into_iter()
        .map(|k| (edit_distance(given, k), k))
        .filter(|(distance, k)| *distance <= within(k))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

/// Levenshtein distance over bytes, one row at a time.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(x != y));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_name_within_reach_is_found_and_the_first_of_equals_wins() {
        let known = ["getJob", "getJobInfo", "listBatches"];
        assert_eq!(nearest("getJobb", known, |_| 3), Some("getJob"));
        assert_eq!(nearest("getjobinfo", known, |_| 3), Some("getJobInfo"));
        assert_eq!(nearest("nope", known, |_| 3), None);
        assert_eq!(nearest("nope", known, |_| usize::MAX), Some("getJob"));
        assert_eq!(nearest(&"x".repeat(200), known, |_| usize::MAX), None);
    }

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
