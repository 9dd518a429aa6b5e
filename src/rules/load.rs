//! Compiling rules: a folder of TOML files (or named texts) into one
//! [`RuleSet`], or every error found, each with file, line and column.
//!
//! All or nothing: a single error anywhere means no ruleset. The
//! `[[rule.test]]` tables are collected with the ruleset ([`Compiled`]) but
//! not run here: running a test takes an engine, which sits above rules.
//! [`crate::service::rulebook`] compiles and runs them; use it to load rules
//! for use.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::compile::compile_rule;
use super::context::WindowRegistry;
use super::ruleset::{RuleSet, SourceFile};
use super::spec::{RuleFileSpec, RuleTestSpec};
use super::{CompiledRule, GroupRule, GroupScope, RuleSource};
use crate::refdata::{GroupRef, InstrumentRef, RefData, Targets};
use crate::state::{WindowKey, WindowNeeds};

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

/// A compiled ruleset and the rule tests its files hold, not yet run.
#[derive(Debug)]
pub struct Compiled {
    pub ruleset: RuleSet,
    pub tests: Vec<RuleTestCase>,
}

impl Compiled {
    /// The ruleset alone, its rule tests dropped unrun: for code that
    /// builds a ruleset to drive an engine, not to accept rule files.
    pub fn without_tests(self) -> RuleSet {
        self.ruleset
    }
}

/// One `[[rule.test]]` table, ready to run: its rule compiled alone, with
/// its own window table, and where the test sits for errors.
#[derive(Debug)]
pub struct RuleTestCase {
    pub rule: CompiledRule,
    pub windows: Vec<(WindowKey, WindowNeeds)>,
    pub test: RuleTestSpec,
    /// Byte offset of the test's table in its file.
    pub offset: usize,
    pub file: String,
    /// The file's text, to turn an offset into a line and column.
    pub text: Arc<str>,
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The rule files of a folder as read.
#[derive(Debug, Default)]
pub struct FolderFiles {
    /// (name, text), in file name order.
    pub files: Vec<(String, String)>,
    /// A file that could not be read (too large, not UTF-8, unreadable).
    pub errors: Vec<RuleError>,
}

/// The `*.toml` files directly in `dir` (hidden files skipped), in file
/// name order, within `limits`, with an error for each file that could not
/// be read.
///
/// # Errors
/// The folder cannot be listed.
pub fn read_dir(dir: &Path, limits: &RuleLimits) -> Result<FolderFiles, Vec<RuleError>> {
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
    Ok(FolderFiles { files, errors })
}

/// Compiles every `*.toml` file directly in `dir` (hidden files are
/// skipped, so a Kubernetes ConfigMap's `..data` folder is not read twice),
/// in file name order, within `limits`: a file over the size limit is not
/// read.
///
/// # Errors
/// Every problem found, in file order; an unreadable folder is one error.
pub fn compile_dir(dir: &Path, limits: &RuleLimits) -> Result<Compiled, Vec<RuleError>> {
    let FolderFiles { files, mut errors } = read_dir(dir, limits)?;
    match compile(&files, limits) {
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
/// within `limits`.
///
/// # Errors
/// Every problem found, in the order of the texts.
pub fn compile(files: &[(String, String)], limits: &RuleLimits) -> Result<Compiled, Vec<RuleError>> {
    let mut tests = Vec::new();
    let mut refs = Refs::default();
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
            let mut out = FileOut {
                refs: &mut refs,
                registry: &mut registry,
                rules: &mut rules,
                tests: &mut tests,
                seen: &mut seen,
                errors: &mut errors,
            };
            compile_file(name, text, &mut out);
        }
        // Within a file, errors in reading order.
        errors[first_error..].sort_by_key(|e| (e.line, e.column));
        sources.push(SourceFile {
            name: name.clone(),
            sha256: hex(&Sha256::digest(text.as_bytes())),
        });
    }
    let ruleset = finish(registry, rules, sources, refs, errors, limits)?;
    Ok(Compiled { ruleset, tests })
}

/// The reference data the files so far hold, and where each entry was
/// defined.
#[derive(Default)]
struct Refs {
    instruments: Vec<InstrumentRef>,
    groups: Vec<GroupRef>,
    instrument_at: HashMap<String, String>,
    group_at: HashMap<String, String>,
}

/// What compiling the files so far has collected.
struct FileOut<'a> {
    refs: &'a mut Refs,
    registry: &'a mut WindowRegistry,
    rules: &'a mut Vec<Arc<CompiledRule>>,
    tests: &'a mut Vec<RuleTestCase>,
    /// Rule id -> (file, line) where it was first defined.
    seen: &'a mut HashMap<String, (String, usize)>,
    errors: &'a mut Vec<RuleError>,
}

fn compile_file(name: &str, text: &str, out: &mut FileOut<'_>) {
    let FileOut {
        refs,
        registry,
        rules,
        tests,
        seen,
        errors,
    } = out;
    let at = |offset: usize, message: String| {
        let (line, column) = line_col(text, offset);
        RuleError {
            file: name.to_string(),
            line,
            column,
            message,
        }
    };
    let mut spec: RuleFileSpec = match toml::from_str(text) {
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
    if spec.rule.is_empty() && spec.instrument.is_empty() && spec.group.is_empty() {
        errors.push(at(
            0,
            "no `[[rule]]`, `[[instrument]]` or `[[group]]` tables in this file".to_string(),
        ));
    }
    for table in &spec.instrument {
        let (line, _) = line_col(text, table.span().start);
        let symbol = table.get_ref().symbol.get_ref().clone();
        if let Some(first) = refs.instrument_at.get(&symbol) {
            errors.push(at(
                table.get_ref().symbol.span().start,
                format!("instrument `{symbol}` is described twice: first at {first}"),
            ));
            continue;
        }
        let source = format!("{name}:{line}");
        refs.instrument_at.insert(symbol, source.clone());
        match table.get_ref().compile(source) {
            Ok(instrument) => refs.instruments.push(instrument),
            Err(errs) => errors.extend(errs.into_iter().map(|e| at(e.offset, e.message))),
        }
    }
    for table in &spec.group {
        let (line, _) = line_col(text, table.span().start);
        let group = table.get_ref().name.get_ref().clone();
        if let Some(first) = refs.group_at.get(&group) {
            errors.push(at(
                table.get_ref().name.span().start,
                format!("group `{group}` is defined twice: first at {first}"),
            ));
            continue;
        }
        let source = format!("{name}:{line}");
        refs.group_at.insert(group, source.clone());
        match table.get_ref().compile(source) {
            Ok(g) => refs.groups.push(g),
            Err(errs) => errors.extend(errs.into_iter().map(|e| at(e.offset, e.message))),
        }
    }
    let shared_text: Arc<str> = Arc::from(text);
    for (i, rule) in spec.rule.iter_mut().enumerate() {
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
        for test in std::mem::take(&mut rule.get_mut().tests) {
            // The rule alone, with its own window table, for a fresh engine.
            let mut own = WindowRegistry::default();
            let Ok(alone) = compile_rule(rule.get_ref(), start, &mut own, source.clone(), hash) else {
                continue;
            };
            let offset = test.span().start;
            tests.push(RuleTestCase {
                rule: alone,
                windows: own.into_table(),
                test: test.into_inner(),
                offset,
                file: name.to_string(),
                text: shared_text.clone(),
            });
        }
    }
}

fn finish(
    registry: WindowRegistry,
    rules: Vec<Arc<CompiledRule>>,
    sources: Vec<SourceFile>,
    refs: Refs,
    mut errors: Vec<RuleError>,
    limits: &RuleLimits,
) -> Result<RuleSet, Vec<RuleError>> {
    let refdata = RefData::new(refs.instruments, refs.groups);
    for rule in &rules {
        if let Some(GroupRule {
            scope: GroupScope::Named(name),
            ..
        }) = &rule.group
        {
            if refdata.group(name).is_none() {
                errors.push(RuleError {
                    file: rule.source.file.clone(),
                    line: rule.source.line,
                    column: 1,
                    message: format!(
                        "rule `{}` is evaluated over group `{name}`, which no `[[group]]` table defines",
                        rule.id
                    ),
                });
            }
        }
        if let Some(Targets::Group(name)) = &rule.targets {
            if refdata.group(name).is_none() {
                errors.push(RuleError {
                    file: rule.source.file.clone(),
                    line: rule.source.line,
                    column: 1,
                    message: format!(
                        "rule `{}` targets group `{name}`, which no `[[group]]` table defines",
                        rule.id
                    ),
                });
            }
        }
    }
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
        refdata: Arc::new(refdata),
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
