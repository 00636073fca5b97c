//! MQTT topic names and filters (3.1.1 §4.7, 5.0 §4.7): `/`-separated levels, `+` one
//! level, `#` the rest (including none).

/// A topic name a client publishes to (§4.7.3): at least one character, no wildcards.
/// (Length and UTF-8 are the codec's.)
pub fn check_name(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() {
        return Err("empty topic name");
    }
    if topic.contains(['+', '#']) {
        return Err("wildcard in a topic name");
    }
    Ok(())
}

/// A topic filter (§4.7.1): `#` only as the whole last level, `+` only as a whole level.
pub fn check_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("empty topic filter");
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err("'#' must be the last level, alone");
        }
        if level.contains('+') && level != "+" {
            return Err("'+' must be a level alone");
        }
    }
    Ok(())
}

/// Whether `topic` matches `filter` (a valid one). §4.7.2: a filter starting with a
/// wildcard does not match a topic starting with `$`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_the_spec_says() {
        // 5.0 §4.7.1.2 and §4.7.1.3's examples.
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "a/b/c"));
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
    }

    #[test]
    fn filters_and_names_are_checked() {
        for ok in ["#", "+", "a/#", "+/b/+", "cmnd/kitchen/#", "/"] {
            assert_eq!(check_filter(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a+/b", "#/", "sport+"] {
            assert!(check_filter(bad).is_err(), "{bad}");
        }
        assert!(check_name("tele/x/SENSOR").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a/+").is_err());
        assert!(check_name("a/#").is_err());
    }
}
