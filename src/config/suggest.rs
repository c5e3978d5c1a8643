//! "Did you mean …?": the known name nearest to a mistyped one.
//!
//! Used for every unknown name a user can write: top-level keys, queue and handler keys,
//! Ruby-format flags, and queue names given to `--queues`, `--except-queues` or
//! `chore enqueue`.

/// The candidate nearest to `typed`, if it is near enough to be what was meant.
///
/// Case and `_`/`-` are ignored first (Ruby Chore's `queue_polling_size` is
/// `queue-polling-size`); then the Damerau-Levenshtein distance must be at most a third of
/// the candidate's length (at least 1), so that short names are not matched to noise.
pub fn nearest<'a>(typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('_', "-");
    let typed = norm(typed);
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&typed, &norm(c)), c))
        .filter(|&(d, c)| d <= (c.chars().count() / 3).max(1))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// ` (did you mean `X`?)`, or nothing.
pub fn hint<'a>(typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    nearest(typed, candidates)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_names_are_suggested_and_far_ones_are_not() {
        let keys = ["concurrency", "queues", "queue-polling-size", "timeout"];
        assert_eq!(nearest("concurency", keys), Some("concurrency"));
        assert_eq!(nearest("queue", keys), Some("queues"));
        assert_eq!(
            nearest("queue_polling_size", keys),
            Some("queue-polling-size")
        );
        assert_eq!(nearest("Timout", keys), Some("timeout"));
        assert_eq!(nearest("retries", keys), None);
        assert_eq!(nearest("frobnicate", keys), None);
        assert_eq!(nearest("ab", ["a", "xy"]), Some("a"));
        assert_eq!(hint("x", keys), "");
        assert_eq!(hint("timeot", keys), " (did you mean `timeout`?)");
    }
}
