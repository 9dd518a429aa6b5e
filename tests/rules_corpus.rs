//! Rule files on disk: the bundled default rules compile, every good
//! fixture compiles, and every bad fixture fails at exactly the place its
//! first line names.
//!
//! A bad fixture starts with `# expect: LINE:COL: MESSAGE-FRAGMENT` (one
//! line per expected error, in order).
//!
//! Every fixture is checked before a test fails, and the failure names
//! each fixture that went wrong and how.

use std::path::Path;

use airbag::service::rulebook::{compile_texts, load_dir};

fn fixtures(kind: &str) -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rules")
        .join(kind);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn bundled_default_rules_compile() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let set = load_dir(&dir).unwrap_or_else(|errors| {
        panic!(
            "default rules do not compile:\n{}",
            errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
        )
    });
    assert!(set.rule("btc-flash-crash").is_some());
    assert!(set.rule("drawdown-catch-all").is_some());
    assert!(set.len() >= 10, "{} rules", set.len());
    assert_eq!(set.sources.len(), 7);
    for id in ["repeated-velocity-halt", "halt-without-resume"] {
        assert!(set.rule(id).is_some(), "the bundled pattern rule {id}");
    }
    assert_eq!(
        set.refdata.of_underlying("BTC").len(),
        3,
        "the bundled reference data knows BTC's spot, perpetual and future"
    );
}

/// Fails naming every fixture in `failures` (fixture name, what was wrong),
/// after all of them have been checked.
fn report(kind: &str, checked: usize, failures: &[(String, String)]) {
    if failures.is_empty() {
        return;
    }
    let list: Vec<String> = failures
        .iter()
        .map(|(name, why)| format!("--- {name}\n{}", why.trim_end()))
        .collect();
    panic!(
        "{} of {checked} {kind} fixtures failed:\n{}",
        failures.len(),
        list.join("\n")
    );
}

fn shown(errors: &[airbag::rules::RuleError]) -> String {
    errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
}

#[test]
fn good_fixtures_compile() {
    let files = fixtures("ok");
    assert!(!files.is_empty());
    let mut failures = Vec::new();
    for (name, text) in &files {
        if let Err(errors) = compile_texts(&[(name.clone(), text.clone())]) {
            failures.push((name.clone(), format!("should compile:\n{}", shown(&errors))));
        }
    }
    report("good", files.len(), &failures);
}

/// What is wrong with a bad fixture's errors, if anything: each
/// `# expect: LINE:COL: FRAGMENT` line must match the error in its place.
fn check_bad(name: &str, text: &str) -> Result<(), String> {
    let mut expected = Vec::new();
    for l in text.lines().filter_map(|l| l.strip_prefix("# expect: ")) {
        let mut parts = l.splitn(3, ':');
        let mut number = |what: &str| {
            parts
                .next()
                .and_then(|p| p.trim().parse::<usize>().ok())
                .ok_or_else(|| format!("`# expect: {l}` has no {what} number"))
        };
        let (line, col) = (number("line")?, number("column")?);
        let fragment = parts.next().unwrap_or_default().trim().to_string();
        expected.push((line, col, fragment));
    }
    if expected.is_empty() {
        return Err("has no `# expect:` line".into());
    }
    let errors = match compile_texts(&[(name.to_string(), text.to_string())]) {
        Ok(_) => return Err("should not compile, but did".into()),
        Err(errors) => errors,
    };
    let mut wrong = Vec::new();
    if errors.len() != expected.len() {
        wrong.push(format!(
            "{} error(s) expected, got {}:\n{}",
            expected.len(),
            errors.len(),
            shown(&errors)
        ));
    }
    for (error, (line, col, fragment)) in errors.iter().zip(&expected) {
        if (error.line, error.column) != (*line, *col) {
            wrong.push(format!("expected at {line}:{col}, got {error}"));
        }
        if !error.message.contains(fragment.as_str()) {
            wrong.push(format!("`{}` lacks `{fragment}`", error.message));
        }
        if error.file != name {
            wrong.push(format!("names file `{}`", error.file));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("\n"))
    }
}

#[test]
fn bad_fixtures_fail_where_they_say() {
    let files = fixtures("bad");
    assert!(files.len() >= 10, "only {} bad fixtures", files.len());
    let failures: Vec<(String, String)> = files
        .iter()
        .filter_map(|(name, text)| check_bad(name, text).err().map(|why| (name.clone(), why)))
        .collect();
    report("bad", files.len(), &failures);
}

#[test]
fn duplicate_ids_across_files_are_reported_at_the_second() {
    let a = (
        "a.toml".to_string(),
        "[[rule]]\nid = \"x\"\nkind = \"stale_feed\"\nafter = \"5s\"\n".to_string(),
    );
    let b = (
        "b.toml".to_string(),
        "\n[[rule]]\nid = \"x\"\nkind = \"stale_feed\"\nafter = \"5s\"\n".to_string(),
    );
    let errors = compile_texts(&[a, b]).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].to_string(),
        "b.toml:3:6: duplicate rule id `x`: first defined at a.toml:1"
    );
}

#[test]
fn a_folder_with_one_broken_file_yields_no_ruleset() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("good.toml"),
        "[[rule]]\nid = \"a\"\nkind = \"stale_feed\"\nafter = \"5s\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[[rule]]\nid = \"b\"\nkind = \"stale_feed\"\nafter = \"5 s\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join(".hidden.toml"), "garbage").unwrap();
    std::fs::write(dir.path().join("README.md"), "not a rule").unwrap();
    let errors = load_dir(dir.path()).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].file, "bad.toml");
    assert_eq!((errors[0].line, errors[0].column), (4, 9));
}
