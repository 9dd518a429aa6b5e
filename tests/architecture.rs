//! The shape of the code, checked: which top-level module may use which.
//!
//! Reads every file under `src/`, takes the top-level modules each one
//! names in code (`crate::x` outside comments), and checks that the graph
//! they make has no cycle, that modules stay below the layer they belong
//! to, and that the domain knows nothing of gRPC. Run it alone to print
//! the graph:
//!
//! ```sh
//! cargo test --test architecture -- --nocapture
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// The layers, lowest first: a module may use modules of its own layer
/// or lower ones, never higher ones (within a layer the no-cycle check
/// applies).
const LAYERS: &[&[&str]] = &[
    &["clock", "model"],
    &["ingest", "state", "journal", "metrics"],
    &["refdata"],
    &["rules"],
    &["engine"],
    &["alerts", "checkpoint", "tick_file"],
    &["config"],
    &["service", "wire"],
    &["replay", "server", "console", "kafka"],
    &["app"],
    &["cli"],
];

/// Modules that must not name tonic, prost or the generated protobuf code:
/// the domain and the service, which every transport shares.
const NO_GRPC: &[&str] = &[
    "clock",
    "model",
    "ingest",
    "state",
    "journal",
    "metrics",
    "refdata",
    "rules",
    "engine",
    "alerts",
    "checkpoint",
    "tick_file",
    "service",
    "replay",
];

/// The top-level module a path under `src/` belongs to.
fn module_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// Code lines of a Rust file: comments (line and doc) left out.
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(|line| {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            ""
        } else {
            line.split(" // ").next().unwrap_or("")
        }
    })
}

/// The modules `text` names as `crate::x`, and whether it names gRPC.
fn uses(text: &str) -> (BTreeSet<String>, bool) {
    let mut names = BTreeSet::new();
    let mut grpc = false;
    for line in code_lines(text) {
        grpc |= line.contains("tonic") || line.contains("prost") || line.contains("wire::proto");
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    (names, grpc)
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Module -> the modules it uses, and the modules that name gRPC.
fn graph() -> (BTreeMap<String, BTreeSet<String>>, BTreeMap<String, Vec<String>>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut grpc: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        let Some(module) = module_of(relative) else { continue };
        let text = fs::read_to_string(&file).expect("read file");
        let (names, names_grpc) = uses(&text);
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(names.into_iter().filter(|n| *n != module));
        if names_grpc {
            grpc.entry(module).or_default().push(relative.display().to_string());
        }
    }
    (graph, grpc)
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// A cycle through `graph`, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|start| visit(start, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_module_graph_has_no_cycle_and_follows_the_layers() {
    let (graph, _) = graph();
    for (module, names) in &graph {
        println!("{module} -> {}", names.iter().cloned().collect::<Vec<_>>().join(" "));
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!("the modules use each other in a cycle: {}", cycle.join(" -> "));
    }
    let mut wrong = Vec::new();
    for (module, names) in &graph {
        let Some(own) = layer_of(module) else {
            wrong.push(format!("`{module}` is in no layer of LAYERS: give it one"));
            continue;
        };
        for name in names {
            match layer_of(name) {
                Some(layer) if layer > own => wrong.push(format!("`{module}` uses the higher `{name}`")),
                Some(_) => {}
                None => wrong.push(format!("`{module}` uses `{name}`, which is in no layer")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_domain_and_the_service_know_nothing_of_grpc() {
    let (_, grpc) = graph();
    let offenders: Vec<String> = NO_GRPC
        .iter()
        .filter_map(|m| grpc.get(*m).map(|files| format!("{m}: {}", files.join(", "))))
        .collect();
    assert!(offenders.is_empty(), "gRPC named in:\n{}", offenders.join("\n"));
}

#[test]
fn the_checks_see_a_cycle_and_a_layer_breach() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("engine".into()).or_default().insert("rules".into());
    graph.entry("rules".into()).or_default().insert("engine".into());
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["engine".to_string(), "rules".into(), "engine".into()])
    );
    assert!(layer_of("rules") < layer_of("engine"));
    let (names, grpc) = uses("use crate::engine::Engine; // crate::cli\n/// crate::server\nlet x = tonic::Status::ok;");
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["engine"]);
    assert!(grpc);
}
