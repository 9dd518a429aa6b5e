//! The pattern language: text to an untyped [`PatternAst`], every error
//! with the 1-based character column it points at.
//!
//! ```text
//! pattern := step ( "->" step )* [ "within" DURATION ]
//! step    := event [ "{" N [ "," ] "}" ]          a positive step, N events
//!          | "not" event "within" DURATION        absence (last step only)
//! event   := "tick" "(" EXPRESSION ")"             a tick meeting a condition
//!          | "alert" "(" arg ( "," arg )* ")"      an alert of another rule
//! arg     := 'rule-id' | rule = 'id' | kind = NAME | severity (= | >=) NAME
//! ```
//!
//! The expression inside `tick(...)` is the expression language of `when`
//! (`rules/EXPRESSIONS.md`); it is found by balancing parentheses and
//! compiled by the caller. Quotes are `'` or `"`.

use crate::rules::units::parse_duration;

/// A pattern as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternAst {
    pub steps: Vec<StepAst>,
    /// `within` after the last step: how long from the first event of a
    /// match to its last positive event.
    pub within: Option<(i64, usize)>,
}

/// One step as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepAst {
    pub event: EventAst,
    /// `{n}` (1 when absent) with the column of `{`.
    pub count: (u32, usize),
    /// Absence: `not EVENT within D`, with D.
    pub absent_for: Option<i64>,
    /// Column of the step's first character.
    pub column: usize,
}

/// An event as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventAst {
    /// `tick(EXPR)`: the expression and the column of its first character.
    Tick { expr: String, column: usize },
    /// `alert(...)`.
    Alert(AlertAst),
}

/// The filters of `alert(...)`, each with the column it was written at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlertAst {
    pub rule: Option<(String, usize)>,
    pub kind: Option<(String, usize)>,
    /// The severity, and whether it is a minimum (`>=`).
    pub severity: Option<(String, bool, usize)>,
}

/// A problem in a pattern, at a 1-based character column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    pub column: usize,
    pub message: String,
}

fn err<T>(column: usize, message: impl Into<String>) -> Result<T, PatternError> {
    Err(PatternError {
        column,
        message: message.into(),
    })
}

/// Longest pattern text, in characters.
pub const MAX_PATTERN_CHARS: usize = 4096;

/// Parses a pattern.
///
/// # Errors
/// The first problem, with its column.
pub fn parse(text: &str) -> Result<PatternAst, PatternError> {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() > MAX_PATTERN_CHARS {
        return err(1, format!("a pattern may be at most {MAX_PATTERN_CHARS} characters"));
    }
    let mut p = Parser { chars, pos: 0 };
    let mut steps = Vec::new();
    let mut within = None;
    loop {
        p.skip_ws();
        let step = p.step()?;
        let absent = step.absent_for.is_some();
        steps.push(step);
        p.skip_ws();
        if p.eat("->") {
            if absent {
                return err(
                    p.col() - 2,
                    "an absence (`not ...`) must be the last step: nothing can follow it",
                );
            }
            continue;
        }
        if p.keyword("within") {
            within = Some((p.duration()?, p.col()));
            p.skip_ws();
        }
        if !p.at_end() {
            let what = if p.peek() == Some('{') && absent {
                "an absence (`not ...`) takes no count".to_string()
            } else {
                format!("unexpected `{}`: expected `->`, `within` or the end", p.rest_word())
            };
            return err(p.col(), what);
        }
        return Ok(PatternAst { steps, within });
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn col(&self) -> usize {
        self.pos + 1
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, s: &str) -> bool {
        let n = s.chars().count();
        if self.chars[self.pos.min(self.chars.len())..]
            .iter()
            .take(n)
            .copied()
            .eq(s.chars())
        {
            self.pos += n;
            true
        } else {
            false
        }
    }

    fn word_at(&self, at: usize) -> String {
        self.chars[at.min(self.chars.len())..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == '_' || **c == '-' || **c == '.')
            .collect()
    }

    /// The word here, or the next character, for messages.
    fn rest_word(&self) -> String {
        let w = self.word_at(self.pos);
        if w.is_empty() {
            self.peek().map(String::from).unwrap_or_default()
        } else {
            w
        }
    }

    /// Takes `word` when it is the whole next word.
    fn keyword(&mut self, word: &str) -> bool {
        self.skip_ws();
        let at = self.pos;
        let w: String = self.chars[at.min(self.chars.len())..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
            .collect();
        if w == word {
            self.pos += w.chars().count();
            true
        } else {
            false
        }
    }

    fn duration(&mut self) -> Result<i64, PatternError> {
        self.skip_ws();
        let col = self.col();
        let w = self.word_at(self.pos);
        if w.is_empty() {
            return err(col, "expected a duration such as `30s`, `10m` or `500ms`");
        }
        match parse_duration(&w) {
            Ok(0) => err(col, "a duration here must be longer than zero"),
            Ok(ns) => {
                self.pos += w.chars().count();
                Ok(ns)
            }
            Err(e) => err(col, format!("`{w}`: {e}")),
        }
    }

    fn step(&mut self) -> Result<StepAst, PatternError> {
        let column = self.col();
        if self.keyword("not") {
            let event = self.event()?;
            self.skip_ws();
            if !self.keyword("within") {
                return err(
                    self.col(),
                    "an absence needs its window: `not EVENT within DURATION` (how long the event must not happen)",
                );
            }
            let d = self.duration()?;
            return Ok(StepAst {
                event,
                count: (1, column),
                absent_for: Some(d),
                column,
            });
        }
        let event = self.event()?;
        self.skip_ws();
        let mut count = (1, column);
        if self.peek() == Some('{') {
            let at = self.col();
            self.pos += 1;
            self.skip_ws();
            let digits: String = self.chars[self.pos..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            let n: u32 = match digits.parse() {
                Ok(n) if n >= 1 => n,
                _ => return err(self.col(), "a count is `{N}` or `{N,}` with N from 1"),
            };
            self.pos += digits.len();
            self.skip_ws();
            if self.eat(",") {
                self.skip_ws();
                if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    return err(
                        self.col(),
                        "an upper bound (`{N,M}`) is not supported: a step counts at least N events, `{N}` or `{N,}`",
                    );
                }
            }
            if !self.eat("}") {
                return err(self.col(), "expected `}` to close the count");
            }
            count = (n, at);
        }
        Ok(StepAst {
            event,
            count,
            absent_for: None,
            column,
        })
    }

    fn event(&mut self) -> Result<EventAst, PatternError> {
        self.skip_ws();
        let col = self.col();
        if self.keyword("tick") {
            self.open("tick")?;
            let start = self.pos;
            let mut depth = 1usize;
            while let Some(c) = self.peek() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                self.pos += 1;
            }
            if depth != 0 {
                return err(col, "`tick(` is not closed: expected `)`");
            }
            let expr: String = self.chars[start..self.pos].iter().collect();
            self.pos += 1;
            if expr.trim().is_empty() {
                return err(start + 1, "`tick()` needs a condition, e.g. `tick(price < 100)`");
            }
            return Ok(EventAst::Tick {
                expr,
                column: start + 1,
            });
        }
        if self.keyword("alert") {
            self.open("alert")?;
            return self.alert_args(col).map(EventAst::Alert);
        }
        let w = self.rest_word();
        if w.is_empty() {
            return err(col, "expected a step: `tick(CONDITION)`, `alert(...)` or `not ...`");
        }
        err(
            col,
            format!("unexpected `{w}`: a step is `tick(CONDITION)`, `alert(...)` or `not ...`"),
        )
    }

    fn open(&mut self, what: &str) -> Result<(), PatternError> {
        self.skip_ws();
        if self.eat("(") {
            Ok(())
        } else {
            err(self.col(), format!("expected `(` after `{what}`"))
        }
    }

    fn quoted(&mut self) -> Result<Option<String>, PatternError> {
        let Some(q @ ('\'' | '"')) = self.peek() else {
            return Ok(None);
        };
        let col = self.col();
        self.pos += 1;
        let start = self.pos;
        while self.peek().is_some_and(|c| c != q) {
            self.pos += 1;
        }
        if self.at_end() {
            return err(col, "string not closed");
        }
        let s: String = self.chars[start..self.pos].iter().collect();
        self.pos += 1;
        Ok(Some(s))
    }

    fn value(&mut self) -> Result<String, PatternError> {
        self.skip_ws();
        if let Some(s) = self.quoted()? {
            return Ok(s);
        }
        let w = self.word_at(self.pos);
        if w.is_empty() {
            return err(self.col(), "expected a value");
        }
        self.pos += w.chars().count();
        Ok(w)
    }

    fn alert_args(&mut self, col: usize) -> Result<AlertAst, PatternError> {
        let mut a = AlertAst::default();
        loop {
            self.skip_ws();
            let at = self.col();
            if self.peek() == Some(')') && a == AlertAst::default() {
                return err(
                    at,
                    "`alert()` needs a filter: a rule id, `kind = ...` or `severity >= ...`",
                );
            }
            if let Some(id) = self.quoted()? {
                if a.rule.is_some() {
                    return err(at, "the rule id is given twice");
                }
                a.rule = Some((id, at));
            } else {
                let key = self.word_at(self.pos);
                self.pos += key.chars().count();
                self.skip_ws();
                let min =
                    match key.as_str() {
                        "severity" if self.eat(">=") => true,
                        "rule" | "kind" | "severity" if self.eat("=") => false,
                        "rule" | "kind" | "severity" => {
                            return err(self.col(), format!("expected `=` after `{key}`"));
                        }
                        "" => return err(at, "expected a rule id in quotes, `rule =`, `kind =` or `severity`"),
                        other => return err(
                            at,
                            format!(
                                "unknown alert filter `{other}`: use a rule id in quotes, `rule`, `kind` or `severity`"
                            ),
                        ),
                    };
                let value = self.value()?;
                match key.as_str() {
                    "severity" => {
                        if a.severity.is_some() {
                            return err(at, "`severity` is given twice");
                        }
                        a.severity = Some((value, min, at));
                    }
                    _ => {
                        let slot = if key == "rule" { &mut a.rule } else { &mut a.kind };
                        if slot.is_some() {
                            return err(at, format!("`{key}` is given twice"));
                        }
                        *slot = Some((value, at));
                    }
                }
            }
            self.skip_ws();
            if self.eat(",") {
                continue;
            }
            break;
        }
        self.skip_ws();
        if !self.eat(")") {
            return err(
                self.col(),
                format!("expected `,` or `)` in `alert(` (opened at column {col})"),
            );
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequence_with_counts_and_within() {
        let p = parse("alert('v'){3} -> tick(price < 100) within 10m").unwrap();
        assert_eq!(p.steps.len(), 2);
        assert_eq!(p.steps[0].count.0, 3);
        assert_eq!(
            p.steps[1].event,
            EventAst::Tick {
                expr: "price < 100".into(),
                column: 23
            }
        );
        assert_eq!(p.within.map(|w| w.0), Some(600_000_000_000));
    }

    #[test]
    fn absence_takes_its_own_window_and_ends_the_pattern() {
        let p = parse("alert(kind = tripped) -> not alert(kind = resumed) within 15m").unwrap();
        assert_eq!(p.steps[1].absent_for, Some(900_000_000_000));
        assert_eq!(p.within, None);
        let e = parse("not alert('a') within 1s -> tick(price > 1)").unwrap_err();
        assert!(e.message.contains("last step"), "{e:?}");
        let e = parse("tick(price > 1) -> not alert('a')").unwrap_err();
        assert!(e.message.contains("needs its window"), "{e:?}");
    }

    #[test]
    fn errors_point_at_their_column() {
        let e = parse("tick(price > 1) => tick(price < 1)").unwrap_err();
        assert_eq!(e.column, 17);
        let e = parse("alert('a'){2,5}").unwrap_err();
        assert!(e.message.contains("upper bound"), "{e:?}");
        let e = parse("alert(sev = critical)").unwrap_err();
        assert_eq!(e.column, 7);
        let e = parse("tick(price > 1 within 5s").unwrap_err();
        assert!(e.message.contains("not closed"), "{e:?}");
        let e = parse("tick(price > 1) within 5x").unwrap_err();
        assert_eq!(e.column, 24);
    }

    #[test]
    fn alert_filters() {
        let p = parse("alert(\"x\", kind = fired, severity >= warning)").unwrap();
        let EventAst::Alert(a) = &p.steps[0].event else {
            panic!()
        };
        assert_eq!(a.rule.as_ref().map(|r| r.0.as_str()), Some("x"));
        assert_eq!(a.kind.as_ref().map(|r| r.0.as_str()), Some("fired"));
        assert_eq!(
            a.severity.as_ref().map(|s| (s.0.as_str(), s.1)),
            Some(("warning", true))
        );
    }
}
