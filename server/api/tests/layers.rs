//! The api crate's layers only call down (README "Design"): every `crate::<module>` path in a
//! source file must name a module of a lower layer, and route modules never name each other.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Layer of each top-level module; a module may only name modules of a lower layer, except
/// that the base layer (0) is one group.
fn layers() -> BTreeMap<&'static str, u8> {
    let mut m = BTreeMap::new();
    for base in ["auth", "constitution", "error", "middleware", "ood", "state", "structured", "validate"] {
        m.insert(base, 0);
    }
    for (name, layer) in [("prompt", 1), ("jobs", 1), ("respond", 2), ("tools", 2), ("rewards", 3), ("honesty", 3), ("interp", 3), ("feedback", 4), ("select", 5), ("routes", 6)] {
        m.insert(name, layer);
    }
    m
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src is readable").flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The identifiers following every `crate::` in `text` (a `crate::{a, b}` group yields each).
fn named_modules(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let id: String = part.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                out.push(id);
            }
        } else {
            out.push(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
        }
    }
    out
}

#[test]
fn modules_only_name_lower_layers_and_routes_never_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let layers = layers();
    let mut problems = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).expect("under src").to_string_lossy().replace('\\', "/");
        if rel == "lib.rs" {
            continue; // the router wires every route
        }
        let module = rel.split('/').next().unwrap_or_default().trim_end_matches(".rs").to_string();
        let Some(&own) = layers.get(module.as_str()) else {
            problems.push(format!("{rel}: module `{module}` has no layer (add it to tests/layers.rs and the README's Design section)"));
            continue;
        };
        let text = std::fs::read_to_string(f).expect("source is readable");
        if module == "routes" && rel != "routes/mod.rs" && text.contains("super::") {
            problems.push(format!("{rel}: a route module names its parent or a sibling (super::)"));
        }
        for named in named_modules(&text) {
            // Re-exports at the crate root (`crate::ApiError`, …) are base-layer types.
            let layer = layers.get(named.as_str()).copied().unwrap_or(0);
            if module == "routes" && named == "routes" {
                problems.push(format!("{rel}: a route module names another route (crate::routes)"));
            }
            if named != module && layer != 0 && layer >= own {
                problems.push(format!("{rel}: `{module}` (layer {own}) names `crate::{named}` (layer {layer})"));
            }
        }
    }
    assert!(files.len() > 15, "found the sources ({})", files.len());
    assert!(problems.is_empty(), "layering violations:\n{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_groups_and_paths() {
    let got = named_modules("use crate::{feedback, state::AppState};\nlet x = crate::routes::chat::handler;");
    assert_eq!(got, ["feedback", "state", "routes"]);
}
