//! Rule files: any UTF-8 text through the rule loader (`compile_texts`),
//! alone and next to the bundled rules.
#![no_main]

use airbag_fuzz::checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let alone = [("fuzzed.toml".to_string(), text.to_string())];
    let _ = checks::rule_texts(&alone);
    // Next to real files: duplicate ids and window sharing across files.
    if data.len() % 4 == 0 {
        let mut files = checks::bundled_rule_files();
        files.push(("50-fuzzed.toml".to_string(), text.to_string()));
        let _ = checks::rule_texts(&files);
    }
});
