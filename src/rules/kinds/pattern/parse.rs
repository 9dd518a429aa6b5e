//! The pattern language: text to an untyped [`PatternAst`], every error
//! with the 1-based character column it points at.
//!
//! ```text
//! pattern := [ "every" ] step ( arrow step )* [ "within" DURATION ] [ "->" absence ]
//! arrow   := "->"                                 relaxed: other events may come between
//!          | "=>"                                 strict: the very next event
//! step    := [ NAME "=" ] unit [ count ]
//! count   := "{" N "}" | "{" N "," "}" | "{" N "," M "}"
//! unit    := event
//!          | "(" event ( "or" event )+ ")"       any one of them
//!          | "(" event ( "and" event )+ ")"      all of them, in any order
//! absence := "not" unit "within" DURATION        the last step only
//! event   := "tick" "(" EXPRESSION ")"            a tick meeting a condition
//!          | "alert" "(" arg ( "," arg )* ")"     an alert of another rule
//! arg     := 'rule-id' | rule = 'id' | kind = NAME | severity (= | >=) NAME
//! ```
//!
//! The expression inside `tick(...)` is the expression language of `when`
//! (`rules/EXPRESSIONS.md`), which may read earlier steps by name
//! (`b.price < a.price * 0.95`); it is found by balancing parentheses and
//! compiled by the caller. Quotes are `'` or `"`.

use crate::rules::units::parse_duration;

/// A pattern as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternAst {
    /// The positive steps, at least one.
    pub steps: Vec<StepAst>,
    /// `within` after the positive steps: the longest time from the first
    /// event of a match to its last positive event, with its column.
    pub within: Option<(i64, usize)>,
    /// `-> not EVENT within D` at the end.
    pub absence: Option<AbsenceAst>,
}

/// One positive step as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepAst {
    /// `NAME =` before it, with the column of the name.
    pub name: Option<(String, usize)>,
    pub unit: UnitAst,
    pub count: CountAst,
    /// Whether the arrow before it is `=>` (false for the first step).
    pub strict: bool,
    /// Column of the step's first character.
    pub column: usize,
}

/// `{n}`, `{n,}` or `{n,m}`; `{1}` when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountAst {
    pub min: u32,
    /// `None` for `{n,}`.
    pub max: Option<u32>,
    /// Column of `{` (of the step when there is no count).
    pub column: usize,
}

/// What one step waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitAst {
    One(EventAst),
    /// `(A or B ...)`: any one.
    Any(Vec<EventAst>),
    /// `(A and B ...)`: each once, in any order.
    All(Vec<EventAst>),
}

/// `not UNIT within D`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsenceAst {
    pub unit: UnitAst,
    pub window_ns: i64,
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
/// Highest count (`{n}`, and `m` of `{n,m}`).
pub const MAX_COUNT: u32 = 64;

const RESERVED: &[&str] = &["every", "tick", "alert", "not", "within", "and", "or"];

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
    let mut absence = None;
    let mut strict = false;
    // `every` says what is always so: each event that fits the first step
    // starts a match (Esper's word; accepted, changes nothing).
    p.skip_ws();
    p.keyword("every");
    loop {
        p.skip_ws();
        let column = p.col();
        if p.keyword("not") {
            if steps.is_empty() {
                return err(
                    column,
                    "an absence needs a step before it, the event that starts the wait: `EVENT -> not EVENT within D`",
                );
            }
            if strict {
                return err(
                    column,
                    "an absence is measured in time, not in events: write `-> not EVENT within D`, not `=>`",
                );
            }
            let unit = p.unit()?;
            if !p.keyword("within") {
                return err(
                    p.col(),
                    "an absence needs its window: `not EVENT within DURATION` (how long the event must not happen)",
                );
            }
            let window_ns = p.duration()?;
            absence = Some(AbsenceAst {
                unit,
                window_ns,
                column,
            });
            p.skip_ws();
            if p.at_end() {
                break;
            }
            if p.peek() == Some('{') {
                return err(p.col(), "an absence (`not ...`) takes no count");
            }
            if p.eat("->") || p.eat("=>") {
                return err(
                    p.col() - 2,
                    "an absence (`not ...`) must be the last step: nothing can follow it",
                );
            }
            return err(
                p.col(),
                format!("unexpected `{}` after the absence: it ends the pattern", p.rest_word()),
            );
        }
        if within.is_some() {
            return err(
                column,
                "only an absence (`-> not EVENT within D`) may follow `within`: put `within` after the last positive step",
            );
        }
        let mut step = p.step()?;
        step.strict = strict;
        step.column = column;
        steps.push(step);
        p.skip_ws();
        if p.keyword("within") {
            within = Some((p.duration()?, p.col()));
            p.skip_ws();
        }
        if p.at_end() {
            break;
        }
        if p.eat("->") {
            strict = false;
            continue;
        }
        if p.eat("=>") {
            strict = true;
            continue;
        }
        return err(
            p.col(),
            format!(
                "unexpected `{}`: expected `->`, `=>`, `within` or the end",
                p.rest_word()
            ),
        );
    }
    Ok(PatternAst { steps, within, absence })
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
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

    fn peek_at(&self, k: usize) -> Option<char> {
        self.chars.get(self.pos + k).copied()
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

    fn ident_at(&self, at: usize) -> String {
        self.chars[at.min(self.chars.len())..]
            .iter()
            .take_while(|c| is_word(**c))
            .collect()
    }

    /// Takes `word` when it is the whole next word.
    fn keyword(&mut self, word: &str) -> bool {
        self.skip_ws();
        if self.ident_at(self.pos) == word {
            self.pos += word.chars().count();
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

    fn number(&mut self) -> Result<u32, PatternError> {
        self.skip_ws();
        let col = self.col();
        let digits: String = self.chars[self.pos..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        match digits.parse::<u32>() {
            Ok(n) if (1..=MAX_COUNT).contains(&n) => {
                self.pos += digits.len();
                Ok(n)
            }
            _ => err(
                col,
                format!("a count is `{{N}}`, `{{N,}}` or `{{N,M}}` with N and M from 1 to {MAX_COUNT}"),
            ),
        }
    }

    fn step(&mut self) -> Result<StepAst, PatternError> {
        self.skip_ws();
        let mut name = None;
        let word = self.ident_at(self.pos);
        let after = self.pos + word.chars().count();
        let mut k = after - self.pos;
        while self.peek_at(k).is_some_and(char::is_whitespace) {
            k += 1;
        }
        if !word.is_empty()
            && self.peek_at(k) == Some('=')
            && self.peek_at(k + 1) != Some('=')
            && self.peek_at(k + 1) != Some('>')
        {
            let col = self.col();
            if RESERVED.contains(&word.as_str()) || !word.starts_with(|c: char| c.is_ascii_lowercase()) {
                return err(
                    col,
                    format!("`{word}` cannot name a step: a name is lowercase letters, digits and `_`, starting with a letter, and not a keyword"),
                );
            }
            name = Some((word, col));
            self.pos += k + 1;
        }
        let unit = self.unit()?;
        self.skip_ws();
        let mut count = CountAst {
            min: 1,
            max: Some(1),
            column: self.col(),
        };
        if self.peek() == Some('{') {
            count.column = self.col();
            self.pos += 1;
            let min = self.number()?;
            self.skip_ws();
            let max = if self.eat(",") {
                self.skip_ws();
                if self.peek() == Some('}') {
                    None
                } else {
                    let at = self.col();
                    let max = self.number()?;
                    if max < min {
                        return err(
                            at,
                            format!("in `{{{min},{max}}}` the upper bound is below the lower one"),
                        );
                    }
                    Some(max)
                }
            } else {
                Some(min)
            };
            self.skip_ws();
            if !self.eat("}") {
                return err(self.col(), "expected `}` to close the count");
            }
            count.min = min;
            count.max = max;
        }
        Ok(StepAst {
            name,
            unit,
            count,
            strict: false,
            column: 0,
        })
    }

    fn unit(&mut self) -> Result<UnitAst, PatternError> {
        self.skip_ws();
        if self.peek() != Some('(') {
            return self.event().map(UnitAst::One);
        }
        let open = self.col();
        self.pos += 1;
        let mut events = vec![self.event()?];
        let mut op: Option<&str> = None;
        loop {
            self.skip_ws();
            if self.eat(")") {
                break;
            }
            let at = self.col();
            let this = if self.keyword("or") {
                "or"
            } else if self.keyword("and") {
                "and"
            } else {
                return err(
                    at,
                    format!("expected `or`, `and` or `)` in the group opened at column {open}"),
                );
            };
            if op.is_some_and(|o| o != this) {
                return err(
                    at,
                    "a group is all `or` or all `and`: write one group per step (`(A or B) -> (C and D)`)",
                );
            }
            op = Some(this);
            events.push(self.event()?);
        }
        Ok(match op {
            None => UnitAst::One(events.swap_remove(0)),
            Some("or") => UnitAst::Any(events),
            Some(_) => UnitAst::All(events),
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
            format!("unexpected `{w}`: a step is `tick(CONDITION)`, `alert(...)`, a group `(A or B)` or `not ...`"),
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
                let min = match key.as_str() {
                    "severity" if self.eat(">=") => true,
                    "rule" | "kind" | "severity" if self.eat("=") => false,
                    "rule" | "kind" | "severity" => {
                        return err(self.col(), format!("expected `=` after `{key}`"));
                    }
                    "" => return err(at, "expected a rule id in quotes, `rule =`, `kind =` or `severity`"),
                    other => {
                        return err(
                            at,
                            format!(
                                "unknown alert filter `{other}`: use a rule id in quotes, `rule`, `kind` or `severity`"
                            ),
                        )
                    }
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
        assert_eq!(p.steps[0].count.min, 3);
        assert_eq!(p.steps[0].count.max, Some(3));
        assert_eq!(
            p.steps[1].unit,
            UnitAst::One(EventAst::Tick {
                expr: "price < 100".into(),
                column: 23
            })
        );
        assert_eq!(p.within.map(|w| w.0), Some(600_000_000_000));
    }

    #[test]
    fn names_strict_arrows_groups_and_ranges() {
        let p = parse(
            "a = tick(price > 1) => b = (alert('x') or alert('y')){2,3} -> (alert('p') and alert('q')) within 1m",
        )
        .unwrap();
        assert_eq!(p.steps[0].name.as_ref().map(|n| n.0.as_str()), Some("a"));
        assert!(p.steps[1].strict);
        assert!(!p.steps[2].strict);
        assert!(matches!(&p.steps[1].unit, UnitAst::Any(v) if v.len() == 2));
        assert_eq!((p.steps[1].count.min, p.steps[1].count.max), (2, Some(3)));
        assert!(matches!(&p.steps[2].unit, UnitAst::All(v) if v.len() == 2));
        let p = parse("tick(price > 1){2,} within 1m").unwrap();
        assert_eq!(p.steps[0].count.max, None);
        let e = parse("(alert('a') or alert('b') and alert('c'))").unwrap_err();
        assert!(e.message.contains("all `or` or all `and`"), "{e:?}");
        let e = parse("tick = tick(price > 1)").unwrap_err();
        assert!(e.message.contains("cannot name"), "{e:?}");
    }

    #[test]
    fn absence_takes_its_own_window_and_ends_the_pattern() {
        let p = parse("alert(kind = tripped) -> not alert(kind = resumed) within 15m").unwrap();
        assert_eq!(p.absence.as_ref().map(|a| a.window_ns), Some(900_000_000_000));
        assert_eq!(p.within, None);
        let p = parse("alert('a') -> alert('b') within 1m -> not alert('c') within 15m").unwrap();
        assert_eq!(p.within.map(|w| w.0), Some(60_000_000_000));
        let e = parse("not alert('a') within 1s -> tick(price > 1)").unwrap_err();
        assert!(e.message.contains("step before it"), "{e:?}");
        let e = parse("tick(price > 1) -> not alert('a') within 1s -> tick(price > 1)").unwrap_err();
        assert!(e.message.contains("last step"), "{e:?}");
        let e = parse("tick(price > 1) -> not alert('a')").unwrap_err();
        assert!(e.message.contains("needs its window"), "{e:?}");
        let e = parse("tick(price > 1) => not alert('a') within 1s").unwrap_err();
        assert!(e.message.contains("measured in time"), "{e:?}");
    }

    #[test]
    fn errors_point_at_their_column() {
        let e = parse("tick(price > 1) >> tick(price < 1)").unwrap_err();
        assert_eq!(e.column, 17);
        let e = parse("alert('a'){5,2}").unwrap_err();
        assert!(e.message.contains("below"), "{e:?}");
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
        let UnitAst::One(EventAst::Alert(a)) = &p.steps[0].unit else {
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
