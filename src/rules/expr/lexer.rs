//! Splits an expression into tokens, each with its 1-based character column.

use crate::model::{Fixed, FixedError};
use crate::rules::units::{parse_duration, parse_fraction};

use super::ratio::Ratio;
use super::ExprError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tok {
    /// A plain decimal such as `5` or `2.5`.
    Number(Ratio),
    /// A percentage or basis points (`8%`, `50bp`), as the fraction itself.
    Fraction(Ratio),
    /// A duration (`3s`, `1m30s`) in nanoseconds.
    Duration(i64),
    Ident,
    LParen,
    RParen,
    Comma,
    Plus,
    Minus,
    Star,
    Slash,
    Lt,
    Le,
    Gt,
    Ge,
    EqEq,
    Ne,
    And,
    Or,
    Not,
    End,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Token {
    pub tok: Tok,
    /// 1-based character column of the first character.
    pub col: usize,
    /// Byte range in the source.
    pub start: usize,
    pub end: usize,
}

/// Tokenizes `src`; the last token is always [`Tok::End`], whose column is
/// one past the last character.
pub(super) fn lex(src: &str) -> Result<Vec<Token>, ExprError> {
    let mut tokens = Vec::new();
    // (byte offset, char) with the column of each char being index + 1.
    let chars: Vec<(usize, char)> = src.char_indices().collect();
    let byte_at = |i: usize| chars.get(i).map_or(src.len(), |&(b, _)| b);
    let mut i = 0;
    while i < chars.len() {
        let (start, c) = chars[i];
        let col = i + 1;
        let err = |message: String| ExprError { column: col, message };
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let next = chars.get(i + 1).map(|&(_, c)| c);
        let (tok, len) = match c {
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            ',' => (Tok::Comma, 1),
            '+' => (Tok::Plus, 1),
            '-' => (Tok::Minus, 1),
            '*' => (Tok::Star, 1),
            '/' => (Tok::Slash, 1),
            '<' if next == Some('=') => (Tok::Le, 2),
            '<' if next == Some('>') => return Err(err("use `!=` for \"not equal\"".into())),
            '<' => (Tok::Lt, 1),
            '>' if next == Some('=') => (Tok::Ge, 2),
            '>' => (Tok::Gt, 1),
            '=' if next == Some('=') => (Tok::EqEq, 2),
            '=' if next == Some('<') || next == Some('>') => {
                return Err(err(format!(
                    "unexpected `={}`: did you mean `{}=`?",
                    next.unwrap_or(' '),
                    next.unwrap_or(' ')
                )))
            }
            '=' => return Err(err("unexpected `=`: use `==` to compare for equality".into())),
            '!' if next == Some('=') => (Tok::Ne, 2),
            '!' => {
                return Err(err(
                    "unexpected `!`: use `not` to negate a condition, `!=` for \"not equal\"".into(),
                ))
            }
            '&' => return Err(err("unexpected `&`: use `and` to combine conditions".into())),
            '|' => return Err(err("unexpected `|`: use `or` to combine conditions".into())),
            '%' => return Err(err("a `%` must directly follow its number, as in `8%`".into())),
            c if c.is_ascii_digit() || (c == '.' && next.is_some_and(|n| n.is_ascii_digit())) => {
                let mut j = i;
                while j < chars.len() && (chars[j].1.is_ascii_digit() || chars[j].1 == '.') {
                    j += 1;
                }
                let number_end = j;
                let mut suffix = None;
                if j < chars.len() && chars[j].1 == '%' {
                    j += 1;
                    suffix = Some('%');
                } else if j < chars.len() && chars[j].1.is_ascii_alphabetic() {
                    while j < chars.len() && (chars[j].1.is_ascii_alphanumeric() || chars[j].1 == '.') {
                        j += 1;
                    }
                    suffix = Some('a');
                }
                let text = &src[start..byte_at(j)];
                let number = &src[start..byte_at(number_end)];
                let tok = match suffix {
                    None => Tok::Number(parse_number(text).map_err(err)?),
                    Some('%') => Tok::Fraction(fraction(text).map_err(err)?),
                    _ => {
                        let unit = &text[number.len()..];
                        if unit == "bp" || unit == "bps" {
                            Tok::Fraction(fraction(text).map_err(err)?)
                        } else {
                            Tok::Duration(duration(text, number, unit).map_err(err)?)
                        }
                    }
                };
                (tok, j - i)
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut j = i;
                // A dot joins two names (`a.price`: a pattern step's field).
                while j < chars.len()
                    && (chars[j].1.is_alphanumeric()
                        || chars[j].1 == '_'
                        || (chars[j].1 == '.' && chars.get(j + 1).is_some_and(|c| c.1.is_alphabetic())))
                {
                    j += 1;
                }
                let tok = match &src[start..byte_at(j)] {
                    "and" => Tok::And,
                    "or" => Tok::Or,
                    "not" => Tok::Not,
                    _ => Tok::Ident,
                };
                (tok, j - i)
            }
            other => return Err(err(format!("unexpected character `{other}`"))),
        };
        tokens.push(Token {
            tok,
            col,
            start,
            end: byte_at(i + len),
        });
        i += len;
    }
    tokens.push(Token {
        tok: Tok::End,
        col: chars.len() + 1,
        start: src.len(),
        end: src.len(),
    });
    Ok(tokens)
}

fn parse_number(text: &str) -> Result<Ratio, String> {
    match Fixed::parse(text) {
        Ok(value) => Ok(Ratio::fixed(value).reduced()),
        Err(FixedError::NotANumber) => Err(format!("`{text}` is not a number")),
        Err(FixedError::TooPrecise) => Err(format!(
            "`{text}` has more than {} decimal places",
            crate::model::FIXED_DECIMALS
        )),
        Err(FixedError::OutOfRange) => Err(format!("`{text}` is too large a number")),
    }
}

fn fraction(text: &str) -> Result<Ratio, String> {
    parse_fraction(text).map(Ratio::fraction)
}

fn duration(text: &str, number: &str, unit: &str) -> Result<i64, String> {
    if number.contains('.') || unit.contains('.') {
        return Err(format!(
            "`{text}`: durations are whole numbers with a unit, such as `1500ms` or `1m30s`"
        ));
    }
    if (unit.starts_with('e') || unit.starts_with('E')) && unit[1..].starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "`{text}`: exponents are not supported, write the number in full"
        ));
    }
    parse_duration(text)
}
