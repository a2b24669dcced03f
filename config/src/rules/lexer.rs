//! Splits a rule line into words the way HAProxy's configuration parser does: words are
//! separated by blanks, `"..."` and `'...'` quote (single quotes take everything
//! literally), and outside single quotes a backslash escapes a blank, `#`, `\\`, a quote
//! or `$`; `\n`, `\r`, `\t` and `\xHH` mean newline, carriage return, tab and a byte;
//! before anything else the backslash stays (so `\1` and `\.` reach regexes intact).

/// One word of a rule and the character offset where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub text: String,
    pub offset: usize,
    /// Whether any part of the word was quoted (a quoted `{` is not a brace).
    pub quoted: bool,
}

/// An error at a character offset in the rule text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub offset: usize,
    pub message: String,
}

impl RuleError {
    pub fn new(offset: usize, message: impl Into<String>) -> Self {
        Self {
            offset,
            message: message.into(),
        }
    }
}

/// Splits `line` into words.
pub fn tokenize(line: &str) -> Result<Vec<Token>, RuleError> {
    let mut out = Vec::new();
    let mut chars = line.chars().enumerate().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut text = String::new();
        let mut quoted = false;
        while let Some(&(i, c)) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            match c {
                '\\' => match chars.next() {
                    Some((_, n)) => escape(n, &mut chars, &mut text, i)?,
                    None => {
                        return Err(RuleError::new(
                            i,
                            "a backslash at the end of the rule escapes nothing",
                        ));
                    }
                },
                '"' => {
                    quoted = true;
                    loop {
                        match chars.next() {
                            Some((_, '"')) => break,
                            Some((j, '\\')) => match chars.next() {
                                Some((_, n)) => escape(n, &mut chars, &mut text, j)?,
                                None => return Err(RuleError::new(i, "unterminated double quote")),
                            },
                            Some((_, n)) => text.push(n),
                            None => return Err(RuleError::new(i, "unterminated double quote")),
                        }
                    }
                }
                '\'' => {
                    quoted = true;
                    loop {
                        match chars.next() {
                            Some((_, '\'')) => break,
                            Some((_, n)) => text.push(n),
                            None => return Err(RuleError::new(i, "unterminated single quote")),
                        }
                    }
                }
                _ => text.push(c),
            }
        }
        out.push(Token {
            text,
            offset: start,
            quoted,
        });
    }
    Ok(out)
}

/// Appends the character a backslash escape stands for.
fn escape(
    c: char,
    chars: &mut std::iter::Peekable<std::iter::Enumerate<std::str::Chars<'_>>>,
    text: &mut String,
    at: usize,
) -> Result<(), RuleError> {
    match c {
        'n' => text.push('\n'),
        'r' => text.push('\r'),
        't' => text.push('\t'),
        'x' => {
            let hex: String = (0..2)
                .filter_map(|_| chars.next().map(|(_, h)| h))
                .collect();
            let b = u8::from_str_radix(&hex, 16)
                .ok()
                .filter(|_| hex.len() == 2)
                .ok_or_else(|| {
                    RuleError::new(
                        at,
                        format!("invalid escape \\x{hex}: expected two hex digits"),
                    )
                })?;
            text.push(char::from(b));
        }
        ' ' | '#' | '\\' | '\'' | '"' | '$' => text.push(c),
        // Anything else keeps its backslash, so `\1` and `\.` reach a regex intact.
        other => {
            text.push('\\');
            text.push(other);
        }
    }
    Ok(())
}

impl Iterator for Tokens {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        let t = self.toks.get(self.at).cloned();
        if t.is_some() {
            self.at += 1;
        }
        t
    }
}

/// A cursor over tokens, for the rule parsers.
pub struct Tokens {
    toks: Vec<Token>,
    at: usize,
    /// Offset reported for errors at the end of the rule.
    end: usize,
}

impl Tokens {
    pub fn new(line: &str) -> Result<Self, RuleError> {
        Ok(Self {
            toks: tokenize(line)?,
            at: 0,
            end: line.chars().count(),
        })
    }

    pub fn from_tokens(toks: Vec<Token>, end: usize) -> Self {
        Self { toks, at: 0, end }
    }

    pub fn peek(&self) -> Option<&Token> {
        self.toks.get(self.at)
    }

    /// The next word, if it is an unquoted `word`.
    pub fn peek_is(&self, word: &str) -> bool {
        self.peek().is_some_and(|t| !t.quoted && t.text == word)
    }

    /// Consumes the next word when it is an unquoted `word`.
    pub fn eat(&mut self, word: &str) -> bool {
        if self.peek_is(word) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// The next word, or an error naming what was `expected`.
    pub fn expect(&mut self, expected: &str) -> Result<Token, RuleError> {
        let end = self.end;
        self.next()
            .ok_or_else(|| RuleError::new(end, format!("missing {expected}")))
    }

    pub fn is_empty(&self) -> bool {
        self.at >= self.toks.len()
    }

    /// The offset of the next word, or of the end of the rule.
    pub fn offset(&self) -> usize {
        self.peek().map_or(self.end, |t| t.offset)
    }

    pub fn end(&self) -> usize {
        self.end
    }

    /// Takes the words up to (not including) the first unquoted `if` or `unless`.
    pub fn until_condition(&mut self) -> Vec<Token> {
        let mut out = Vec::new();
        while let Some(t) = self.peek() {
            if !t.quoted && (t.text == "if" || t.text == "unless") {
                break;
            }
            out.extend(self.next());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        tokenize(s).unwrap().into_iter().map(|t| t.text).collect()
    }

    #[test]
    fn tokenize_handles_quotes_and_escapes() {
        assert_eq!(
            words(r#"set-header X-A "a b"  c\ d 'e\f'"#),
            ["set-header", "X-A", "a b", "c d", r"e\f"]
        );
        assert_eq!(
            words(r#"return string "say \"hi\"""#),
            ["return", "string", "say \"hi\""]
        );
        assert_eq!(
            words(r#"string "a\nb\x41" c\td"#),
            ["string", "a\nbA", "c\td"]
        );
        let t = tokenize("deny if { path_beg /a }").unwrap();
        assert_eq!(t[3].text, "path_beg");
        assert_eq!(t[3].offset, 10);
    }

    #[test]
    fn tokenize_unterminated_quote_is_an_error() {
        let e = tokenize(r#"return string "oops"#).unwrap_err();
        assert_eq!(e.offset, 14);
        assert!(e.message.contains("unterminated"));
    }
}
