//! The `key = "value"` files that the PKCS#11 module and `ferrohsm ha` read: one entry a
//! line, `#` comments, a value in double quotes (no escapes) or a bare word.

/// The value of a `key = value` line: a double-quoted string (no escapes) or a bare word, then
/// nothing but an optional `# comment`.
pub fn value(v: &str) -> Option<&str> {
    let v = v.trim();
    let (value, rest) = match v.strip_prefix('"') {
        Some(quoted) => quoted.split_once('"')?,
        None => match v.split_once('#') {
            Some((word, comment)) => (word.trim_end(), &v[v.len() - comment.len() - 1..]),
            None => (v, ""),
        },
    };
    let rest = rest.trim();
    (rest.is_empty() || rest.starts_with('#')).then_some(value)
}

/// One entry of a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Its line number (from 1), for messages.
    pub line: usize,
    /// The key.
    pub key: &'a str,
    /// The value.
    pub value: &'a str,
}

/// Every entry of `text` in order; `shown` names the file in the message of a line that is
/// not `key = value`.
pub fn entries<'a>(shown: &str, text: &'a str) -> Result<Vec<Entry<'a>>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("{shown} line {}: expected key = \"value\"", n + 1));
        };
        let value = value(v).ok_or_else(|| {
            format!(
                "{shown} line {}: a value is \"text\" or a number, then at most a # comment",
                n + 1
            )
        })?;
        out.push(Entry {
            line: n + 1,
            key: k.trim(),
            value,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{entries, value};

    #[test]
    fn values_take_quotes_words_and_trailing_comments() {
        assert_eq!(
            value(r#" "unix:/run/x.sock"   # the default; or: embedded = "/d""#),
            Some("unix:/run/x.sock")
        );
        assert_eq!(value(" 10000    # each call's deadline"), Some("10000"));
        assert_eq!(value(r#""a # not a comment""#), Some("a # not a comment"));
        assert_eq!(value(" 250"), Some("250"));
        // Anything after the value but a comment is refused, as is an unclosed quote.
        assert_eq!(value(r#" "a" b"#), None);
        assert_eq!(value(r#" "unclosed"#), None);
    }

    #[test]
    fn entries_keep_order_and_name_the_bad_line() {
        let e = entries("f", "# c\n a = \"1\"\n\nb = 2 # two\n").unwrap();
        assert_eq!(
            e.iter()
                .map(|e| (e.line, e.key, e.value))
                .collect::<Vec<_>>(),
            vec![(2, "a", "1"), (4, "b", "2")]
        );
        assert_eq!(
            entries("f", "a = 1\nnonsense\n").unwrap_err(),
            "f line 2: expected key = \"value\""
        );
    }
}
