//! The module graph points one way: a module may import only modules in layers below its own
//! (ARCHITECTURE.md, "Module map"). This reads `src/` as text and fails naming every edge that
//! points up or sideways, and every top-level module that has no layer yet.
//!
//! Test code is not read (files named `tests.rs` or `*_tests.rs`, and everything after a
//! `#[cfg(test)]` line): a test may build its fixtures with a higher layer, as the engine's
//! tests build policies from rules-file text, without tying the product's modules together.
//!
//! Only `std`, so it also compiles alone to check another tree:
//! `CARGO_MANIFEST_DIR=/path/to/tree rustc --edition 2024 --test tests/it/layering.rs`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top to bottom, layer 1 first (as ARCHITECTURE.md numbers them). `main` is the binary (it
/// reaches the library as `stitch::`).
const LAYERS: &[&[&str]] = &[
    &["main"],
    &["cli"],
    &["app", "webhook", "hooks"],
    &["admin", "proxy", "inject"],
    &["trace"],
    &["config", "telemetry", "iptables"],
    &["propagation"],
    &["direction", "grpc", "shutdown", "upstream_failure"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The product code of a file: comments and the test section removed.
fn product_code(text: &str) -> String {
    let mut code = String::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        if !line.starts_with("//") {
            code.push_str(line);
            code.push('\n');
        }
    }
    code
}

/// The top-level modules `code` names through `prefix` (`crate::x`, `crate::{x, y::z}`).
fn imported(code: &str, prefix: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices(prefix) {
        let preceded = code[..at].chars().next_back();
        if preceded.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let (mut depth, mut start) = (0, 0);
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            found.insert(ident(group[start..].trim_start()));
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            found.insert(ident(group[start..].trim_start()));
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
            }
            None => {
                found.insert(ident(rest));
            }
        }
    }
    found.retain(|m| !m.is_empty());
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every edge that breaks the rule, as a sentence naming it.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for path in files {
        let relative = path.strip_prefix(src).expect("under src");
        let top = relative.components().next().expect("a path under src");
        let top = top.as_os_str().to_string_lossy();
        let module = top.strip_suffix(".rs").unwrap_or(&top);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if module == "lib" || name == "tests.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let Some(own) = layer_of(module) else {
            found.push(format!(
                "module `{module}` has no layer: place it in LAYERS (tests/it/layering.rs) and in ARCHITECTURE.md's module map"
            ));
            continue;
        };
        let text = std::fs::read_to_string(&path).expect("read a source file");
        let prefix = if module == "main" {
            "stitch::"
        } else {
            "crate::"
        };
        for target in imported(&product_code(&text), prefix) {
            match layer_of(&target) {
                _ if target == module => {}
                Some(layer) if layer > own => {}
                Some(layer) => found.push(format!(
                    "{module} → {target} ({}): `{module}` (layer {}) may only import layers below it, `{target}` is layer {}",
                    relative.display(),
                    own + 1,
                    layer + 1
                )),
                None => found.push(format!(
                    "{module} → {target} ({}): `{target}` has no layer",
                    relative.display()
                )),
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn modules_only_import_modules_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(
        found.is_empty(),
        "the module graph must point down only:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_grouped_and_qualified_imports() {
    let code = product_code(
        "use crate::a::B;\nuse crate::{b, c::D, e::{F, G}};\n// crate::hidden\nlet x = crate::h::f();\n#[cfg(test)]\nuse crate::t;\n",
    );
    let names: Vec<String> = imported(&code, "crate::").into_iter().collect();
    assert_eq!(names, ["a", "b", "c", "e", "h"]);
}
