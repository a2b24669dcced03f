//! Configuration errors: where (file, line, column, key path) and what.

use std::fmt;

/// A position in a configuration file: line and column, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, when the configuration came from one.
    pub file: Option<String>,
    pub pos: Pos,
    /// The key path, like `backends.api.servers.web2.address`; empty for file-level errors.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(pos: Pos, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: None,
            pos,
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Position 0:0 is the whole file (its size, a setting given outside it).
        match (&self.file, self.pos.line) {
            (Some(file), 0) => write!(f, "{file}: ")?,
            (Some(file), _) => write!(f, "{file}:{}: ", self.pos)?,
            (None, 0) => {}
            (None, _) => write!(f, "{}: ", self.pos)?,
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one configuration, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// Attaches the file name to every error and sorts them by position.
    pub fn in_file(mut self, file: &str) -> Self {
        for e in &mut self.0 {
            e.file = Some(file.to_owned());
        }
        self.0.sort_by_key(|e| e.pos);
        self
    }
}

/// The first [`crate::limits::MAX_ERRORS`] errors, one per line, and how many more there are.
impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = crate::limits::MAX_ERRORS;
        for (i, e) in self.0.iter().take(max).enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        if self.0.len() > max {
            write!(
                f,
                "\n... and {} more errors (the first {max} are shown)",
                self.0.len() - max
            )?;
        }
        Ok(())
    }
}

thread_local! {
    /// Candidates [`nearest`] may still compare for the configuration being loaded.
    static HINT_BUDGET: std::cell::Cell<usize> = const { std::cell::Cell::new(HINT_WORK) };
}

/// Comparisons spent on "did you mean" hints per load: a file full of misspellings gets
/// hints for its first ones and plain errors after, instead of taking long to report.
const HINT_WORK: usize = 100_000;

/// Gives the loading of a new configuration (on this thread) its budget of hints.
pub(crate) fn reset_hints() {
    HINT_BUDGET.with(|b| b.set(HINT_WORK));
}

/// The nearest of `candidates` to `word` by edit distance, if it is close enough to be a
/// plausible misspelling.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let n = word.chars().count();
    if n > 128 {
        return None;
    }
    let limit = (n / 3).clamp(1, 4);
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let left = HINT_BUDGET.with(|b| {
            let left = b.get().saturating_sub(1);
            b.set(left);
            left
        });
        if left == 0 {
            return None;
        }
        // The distance is at least the difference in characters, which is at least a
        // quarter of the difference in bytes.
        if c.len().abs_diff(word.len()) > limit * 4 {
            continue;
        }
        let d = edit_distance(word, c);
        if d <= limit && best.is_none_or(|(b, _)| d < b) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// Damerau-Levenshtein distance (optimal string alignment): insertions, deletions,
/// substitutions and transpositions of neighbours each cost 1.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, slot) in d.iter_mut().enumerate().take(w) {
        *slot = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_finds_misspelt_keys() {
        let keys = ["address", "weight", "backup", "disabled"];
        assert_eq!(nearest("adress", keys), Some("address"));
        assert_eq!(nearest("wieght", keys), Some("weight"));
        assert_eq!(nearest("colour", keys), None);
    }

    #[test]
    fn display_has_file_position_path_and_message() {
        let e = ConfigErrors(vec![ConfigError::new(
            Pos { line: 3, col: 7 },
            "a.b",
            "bad",
        )])
        .in_file("x.yaml");
        assert_eq!(e.to_string(), "x.yaml:3:7: a.b: bad");
    }

    #[test]
    fn hints_stop_when_a_load_has_spent_its_comparisons() {
        reset_hints();
        let names: Vec<String> = (0..1_000).map(|i| format!("backend{i}")).collect();
        let names = || names.iter().map(String::as_str);
        assert_eq!(nearest("backend7x", names()), Some("backend7"));
        // A file full of misspellings spends the budget...
        for _ in 0..HINT_WORK / 1_000 {
            nearest("backendxx", names());
        }
        // ...and gets plain errors after, until the next load.
        assert_eq!(nearest("backend7x", names()), None);
        reset_hints();
        assert_eq!(nearest("backend7x", names()), Some("backend7"));
    }

    #[test]
    fn display_shows_the_first_errors_and_counts_the_rest() {
        let one = |line| ConfigError::new(Pos { line, col: 1 }, "", "bad");
        let e = ConfigErrors((1..=250).map(one).collect());
        let text = e.to_string();
        assert_eq!(text.lines().count(), crate::limits::MAX_ERRORS + 1);
        assert!(text.lines().nth(99).unwrap().starts_with("100:1:"));
        assert!(
            text.ends_with("... and 150 more errors (the first 100 are shown)"),
            "{text}"
        );
    }
}
