//! Rule files on disk: the bundled default rules compile, every good
//! fixture compiles, and every bad fixture fails at exactly the place its
//! first line names.
//!
//! A bad fixture starts with `# expect: LINE:COL: MESSAGE-FRAGMENT` (one
//! line per expected error, in order).

use std::path::Path;

use airbag::rules::{compile_texts, load_dir};

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
    assert_eq!(set.sources.len(), 5);
}

#[test]
fn good_fixtures_compile() {
    let files = fixtures("ok");
    assert!(!files.is_empty());
    for (name, text) in files {
        if let Err(errors) = compile_texts(&[(name.clone(), text)]) {
            panic!(
                "{name} should compile:\n{}",
                errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
            );
        }
    }
}

#[test]
fn bad_fixtures_fail_where_they_say() {
    let files = fixtures("bad");
    assert!(files.len() >= 10, "only {} bad fixtures", files.len());
    for (name, text) in files {
        let expected: Vec<(usize, usize, String)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(|l| {
                let mut parts = l.splitn(3, ':');
                let line = parts.next().unwrap().trim().parse().unwrap();
                let col = parts.next().unwrap().trim().parse().unwrap();
                (line, col, parts.next().unwrap().trim().to_string())
            })
            .collect();
        assert!(!expected.is_empty(), "{name} has no `# expect:` line");
        let errors = match compile_texts(&[(name.clone(), text.clone())]) {
            Ok(_) => panic!("{name} should not compile"),
            Err(errors) => errors,
        };
        let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), expected.len(), "{name}: got\n{}", shown.join("\n"));
        for (error, (line, col, fragment)) in errors.iter().zip(&expected) {
            assert_eq!((error.line, error.column), (*line, *col), "{name}: {error}");
            assert!(
                error.message.contains(fragment.as_str()),
                "{name}: `{}` lacks `{fragment}`",
                error.message
            );
            assert_eq!(error.file, name);
        }
    }
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
