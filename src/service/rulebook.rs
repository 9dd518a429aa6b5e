//! Loading rules for use: a rules folder (or named texts) compiled into
//! one ruleset ([`crate::rules::load`]) and checked by its own
//! `[[rule.test]]` tables ([`super::selftest`]), or every error found, each
//! with file, line and column. A rule whose own test fails is refused like
//! a syntax error. Every path that accepts rules goes through here: the
//! service's start and reloads, `RuleAdmin.Validate`, `airbag check` and
//! `airbag replay`.

use std::path::Path;

use crate::rules::load::{compile, compile_dir, Compiled};
use crate::rules::{RuleError, RuleLimits, RuleSet};

use super::selftest::run_test;

/// Loads every `*.toml` file directly in `dir` (see
/// [`compile_dir`]), within the default [`RuleLimits`], and runs its rule
/// tests.
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
    checked(compile_dir(dir, limits)?)
}

/// Compiles named rule texts (file name, contents) into one ruleset,
/// within the default [`RuleLimits`], and runs their rule tests.
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
    checked(compile(files, limits)?)
}

/// The ruleset, once every rule test passed; else every failure, in file
/// order.
fn checked(compiled: Compiled) -> Result<RuleSet, Vec<RuleError>> {
    let Compiled { ruleset, tests } = compiled;
    let errors: Vec<RuleError> = tests
        .into_iter()
        .filter_map(|case| run_test(case, &ruleset.refdata).err())
        .collect();
    if errors.is_empty() {
        Ok(ruleset)
    } else {
        Err(errors)
    }
}
