//! Loading rules: a folder of TOML files (or named texts) into one
//! [`RuleSet`], or every error found, each with file, line and column.
//!
//! All or nothing: a single error anywhere means no ruleset.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::compile::compile_rule;
use super::context::WindowRegistry;
use super::ruleset::{RuleSet, SourceFile};
use super::selftest::run_test;
use super::spec::RuleFileSpec;
use super::{CompiledRule, RuleSource};

/// Largest rule file accepted by default, in bytes.
pub const MAX_RULE_FILE_BYTES: usize = 1 << 20;
/// Most rules in one ruleset by default.
pub const MAX_RULES: usize = 10_000;

/// How large a rules folder may be; the service takes them from
/// `[limits]` (`max_rule_file_bytes`, `max_rules`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleLimits {
    /// Largest rule file, in bytes.
    pub max_file_bytes: usize,
    /// Most rules in one ruleset.
    pub max_rules: usize,
}

impl Default for RuleLimits {
    fn default() -> Self {
        RuleLimits {
            max_file_bytes: MAX_RULE_FILE_BYTES,
            max_rules: MAX_RULES,
        }
    }
}

impl RuleLimits {
    fn file_too_large(&self, file: &str, bytes: u64) -> RuleError {
        RuleError {
            file: file.to_string(),
            line: 0,
            column: 0,
            message: format!(
                "file is {bytes} bytes; the limit is {} (limits.max_rule_file_bytes)",
                self.max_file_bytes
            ),
        }
    }
}

/// A problem in a rule file, located for the person who wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub file: String,
    /// 1-based; 0 when the problem is with the file as a whole.
    pub line: usize,
    /// 1-based, in characters; 0 when the problem is with the file as a whole.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)
        }
    }
}

impl std::error::Error for RuleError {}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Loads every `*.toml` file directly in `dir` (hidden files are skipped,
/// so a Kubernetes ConfigMap's `..data` folder is not read twice), in file
/// name order, within the default [`RuleLimits`].
///
/// # Errors
/// Every problem found, in file order; an unreadable folder is one error.
pub fn load_dir(dir: &Path) -> Result<RuleSet, Vec<RuleError>> {
    load_dir_with(dir, &RuleLimits::default())
}

/// As [`load_dir`], within `limits`: a file over the size limit is not
/// read.
///
/// # Errors
/// Every problem found, in file order; an unreadable folder is one error.
pub fn load_dir_with(dir: &Path, limits: &RuleLimits) -> Result<RuleSet, Vec<RuleError>> {
    let shown = dir.display().to_string();
    let whole = |message: String| {
        vec![RuleError {
            file: shown.clone(),
            line: 0,
            column: 0,
            message,
        }]
    };
    let entries = std::fs::read_dir(dir).map_err(|e| whole(format!("cannot read rules folder: {e}")))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| whole(format!("cannot read rules folder: {e}")))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".toml") {
            continue;
        }
        // Follows symlinks: ConfigMap files are links into `..data`.
        if entry.path().is_file() {
            names.push(name);
        }
    }
    names.sort();
    let mut files = Vec::with_capacity(names.len());
    let mut errors = Vec::new();
    for name in names {
        let path = dir.join(&name);
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.len() > limits.max_file_bytes as u64 {
                errors.push(limits.file_too_large(&name, meta.len()));
                continue;
            }
        }
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() > limits.max_file_bytes => {
                errors.push(limits.file_too_large(&name, bytes.len() as u64));
            }
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => files.push((name, text)),
                Err(e) => errors.push(RuleError {
                    file: name,
                    line: 0,
                    column: 0,
                    message: format!("not UTF-8: {e}"),
                }),
            },
            Err(e) => errors.push(RuleError {
                file: name,
                line: 0,
                column: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    match compile_texts_with(&files, limits) {
        Ok(set) if errors.is_empty() => Ok(set),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

/// The rule files `load_dir` would read, with their SHA-256: for audit
/// records of folders that did not compile. Unreadable files are left out.
pub fn source_files(dir: &Path) -> Vec<SourceFile> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<SourceFile> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".toml") {
                return None;
            }
            // Streamed: a file far over the size limit costs no memory.
            let mut file = std::fs::File::open(entry.path()).ok()?;
            let mut hasher = Sha256::new();
            std::io::copy(&mut file, &mut hasher).ok()?;
            Some(SourceFile {
                name,
                sha256: hex(&hasher.finalize()),
            })
        })
        .collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    files
}

/// Compiles named rule texts (file name, contents) into one ruleset,
/// within the default [`RuleLimits`].
///
/// # Errors
/// Every problem found, in the order of the texts.
pub fn compile_texts(files: &[(String, String)]) -> Result<RuleSet, Vec<RuleError>> {
    compile_texts_with(files, &RuleLimits::default())
}

/// As [`compile_texts`], within `limits`.
///
/// # Errors
/// Every problem found, in the order of the texts.
pub fn compile_texts_with(files: &[(String, String)], limits: &RuleLimits) -> Result<RuleSet, Vec<RuleError>> {
    let mut errors = Vec::new();
    let mut registry = WindowRegistry::default();
    let mut rules = Vec::new();
    let mut sources = Vec::new();
    let mut seen: HashMap<String, (String, usize)> = HashMap::new();
    for (name, text) in files {
        let first_error = errors.len();
        if text.len() > limits.max_file_bytes {
            errors.push(limits.file_too_large(name, text.len() as u64));
        } else {
            compile_file(name, text, &mut registry, &mut rules, &mut seen, &mut errors);
        }
        // Within a file, errors in reading order.
        errors[first_error..].sort_by_key(|e| (e.line, e.column));
        sources.push(SourceFile {
            name: name.clone(),
            sha256: hex(&Sha256::digest(text.as_bytes())),
        });
    }
    finish(registry, rules, sources, errors, limits)
}

fn compile_file(
    name: &str,
    text: &str,
    registry: &mut WindowRegistry,
    rules: &mut Vec<Arc<CompiledRule>>,
    seen: &mut HashMap<String, (String, usize)>,
    errors: &mut Vec<RuleError>,
) {
    let at = |offset: usize, message: String| {
        let (line, column) = line_col(text, offset);
        RuleError {
            file: name.to_string(),
            line,
            column,
            message,
        }
    };
    let spec: RuleFileSpec = match toml::from_str(text) {
        Ok(spec) => spec,
        Err(e) => {
            let offset = e.span().map_or(0, |s| s.start);
            errors.push(at(offset, e.message().trim_end().to_string()));
            return;
        }
    };
    // The same file as plain TOML values, to hash each rule's definition.
    let tables: Vec<toml::Value> = toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|mut t| t.remove("rule"))
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    if spec.rule.is_empty() {
        errors.push(at(0, "no `[[rule]]` tables in this file".to_string()));
    }
    for (i, rule) in spec.rule.iter().enumerate() {
        let start = rule.span().start;
        let (line, _) = line_col(text, start);
        let id = rule.get_ref().id.get_ref().clone();
        let duplicate = seen.get(&id).map(|(file, first_line)| {
            at(
                rule.get_ref().id.span().start,
                format!("duplicate rule id `{id}`: first defined at {file}:{first_line}"),
            )
        });
        seen.entry(id).or_insert((name.to_string(), line));
        let hash = tables.get(i).map_or(0, rule_hash);
        let source = RuleSource {
            file: name.to_string(),
            line,
        };
        // A duplicate is still compiled, for its own errors, but not kept.
        let compiled = compile_rule(rule.get_ref(), start, registry, source.clone(), hash);
        if let Some(duplicate) = duplicate {
            errors.push(duplicate);
            if let Err(errs) = compiled {
                errors.extend(errs.into_iter().map(|e| at(e.offset, e.message)));
            }
            continue;
        }
        match compiled {
            Ok(compiled) => rules.push(Arc::new(compiled)),
            Err(errs) => {
                errors.extend(errs.into_iter().map(|e| at(e.offset, e.message)));
                continue;
            }
        }
        for test in &rule.get_ref().tests {
            // The rule alone, with its own window table, in a fresh engine.
            let mut own = WindowRegistry::default();
            let Ok(alone) = compile_rule(rule.get_ref(), start, &mut own, source.clone(), hash) else {
                continue;
            };
            if let Err(failure) = run_test(alone, own.into_table(), test.get_ref(), test.span().start) {
                errors.push(at(failure.offset, failure.message));
            }
        }
    }
}

fn finish(
    registry: WindowRegistry,
    rules: Vec<Arc<CompiledRule>>,
    sources: Vec<SourceFile>,
    mut errors: Vec<RuleError>,
    limits: &RuleLimits,
) -> Result<RuleSet, Vec<RuleError>> {
    if let Some(first_over) = rules.get(limits.max_rules) {
        // Named at the first rule past the limit, so the author sees
        // where the folder overflowed.
        errors.push(RuleError {
            file: first_over.source.file.clone(),
            line: first_over.source.line,
            column: 1,
            message: format!(
                "the ruleset has {} rules; the limit is {} (limits.max_rules), and this is rule {}",
                rules.len(),
                limits.max_rules,
                limits.max_rules + 1
            ),
        });
    }
    if registry.len() >= usize::from(u16::MAX) {
        errors.push(RuleError {
            file: "(ruleset)".into(),
            line: 0,
            column: 0,
            message: format!(
                "rules ask for {} distinct windows; the limit is {}",
                registry.len(),
                u16::MAX - 1
            ),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(RuleSet {
        version: 0,
        rules,
        windows: registry.into_table(),
        sources,
    })
}

fn rule_hash(table: &toml::Value) -> u64 {
    let canonical = toml::to_string(table).unwrap_or_default();
    let digest = Sha256::digest(canonical.as_bytes());
    u64::from_le_bytes(digest[..8].try_into().unwrap_or_default())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
