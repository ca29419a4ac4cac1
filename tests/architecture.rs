//! The architecture rules of docs/design.md ("Layers"), checked from the source text:
//!
//! 1. No module of the library imports, directly or through others, a module that imports it:
//!    the graph of `use` lines (and inline `crate::…`/`super::…` paths) between the files of
//!    `src/` has no cycle. Test-only modules (`#[cfg(test)]`) are left out: a test may import
//!    from anywhere.
//! 2. The pure layers (`controller::core`, `controller::status`) have no `async fn`, no
//!    `Context`, no `kube::Api`, no Graph client and no clock of their own: given the same
//!    input, the same answer.
//!
//! A module is a file (`a.rs` or `a/mod.rs` is `a`, `a/b.rs` is `a::b`); `mod x;` declares,
//! it does not import. `pub use` is an import of the module re-exported from.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The modules of a crate: module path (`""` is the root) → the file's text with its test
/// modules cut out.
type Modules = BTreeMap<String, String>;

/// Reads the library crate rooted at `src/lib.rs`, following `mod` declarations that are not
/// `#[cfg(test)]`.
fn read_crate(src: &Path) -> Modules {
    let mut modules = Modules::new();
    read_module(src, &src.join("lib.rs"), "", &mut modules);
    modules
}

fn read_module(src: &Path, file: &Path, module: &str, modules: &mut Modules) {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let (text, children) = declarations(&text);
    for (child, path_attr) in children {
        let name = join(module, &child);
        let dir = module_dir(src, file, module);
        let child_file = match path_attr {
            Some(p) => file.parent().unwrap().join(p),
            None if dir.join(format!("{child}.rs")).exists() => dir.join(format!("{child}.rs")),
            None => dir.join(&child).join("mod.rs"),
        };
        read_module(src, &child_file, &name, modules);
    }
    modules.insert(module.to_owned(), text);
}

/// The directory a module's children live in: `a/` for `a.rs`, `a/mod.rs` and `lib.rs`'s
/// `src/`.
fn module_dir(src: &Path, file: &Path, module: &str) -> PathBuf {
    let name = file.file_name().unwrap().to_str().unwrap();
    if module.is_empty() || name == "mod.rs" {
        file.parent().unwrap().to_path_buf()
    } else {
        file.with_extension("")
    }
    .strip_prefix(src)
    .map(|p| src.join(p))
    .unwrap()
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}::{child}")
    }
}

/// Cuts the `#[cfg(test)]` items out of a file's text and lists its `mod name;` declarations
/// (with their `#[path]`). An inline `#[cfg(test)] mod x { … }` is cut to its closing brace.
fn declarations(text: &str) -> (String, Vec<(String, Option<String>)>) {
    let mut kept = String::new();
    let mut children = Vec::new();
    let mut attributes: Vec<&str> = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if trimmed.starts_with("#[") {
            attributes.push(trimmed);
            continue;
        }
        let test_only = attributes.iter().any(|a| a.starts_with("#[cfg(test)]"));
        let path_attr = attributes.iter().find_map(|a| {
            a.strip_prefix("#[path = \"")
                .and_then(|rest| rest.strip_suffix("\"]"))
                .map(str::to_owned)
        });
        attributes.clear();
        let declared = trimmed
            .trim_start_matches("pub ")
            .trim_start_matches("pub(crate) ")
            .strip_prefix("mod ");
        match declared {
            Some(rest) if rest.ends_with(';') => {
                if !test_only {
                    children.push((rest.trim_end_matches(';').trim().to_owned(), path_attr));
                }
            }
            Some(_) if test_only => skip_block(line, &mut lines),
            _ if test_only && trimmed.ends_with('{') => skip_block(line, &mut lines),
            _ if test_only => {}
            _ => {
                kept.push_str(line);
                kept.push('\n');
            }
        }
    }
    (kept, children)
}

/// Skips the lines of a block opened on `first` up to its closing brace.
fn skip_block<'a>(first: &str, lines: &mut impl Iterator<Item = &'a str>) {
    let mut depth = braces(first);
    while depth > 0 {
        let Some(line) = lines.next() else { return };
        depth += braces(line);
    }
}

/// Opening minus closing braces of a line, outside string literals and comments.
fn braces(line: &str) -> i64 {
    let mut depth = 0;
    let mut in_string = false;
    let mut previous = ' ';
    for c in line.chars() {
        match c {
            '"' if previous != '\\' => in_string = !in_string,
            '/' if previous == '/' && !in_string => break,
            '{' if !in_string => depth += 1,
            '}' if !in_string => depth -= 1,
            _ => {}
        }
        previous = if previous == '\\' && c == '\\' {
            ' '
        } else {
            c
        };
    }
    depth
}

/// The modules `module`'s text refers to: every `use` tree and every inline `crate::…`,
/// `super::…` or `self::…` path, resolved to the longest module path it starts with.
fn imports(module: &str, text: &str, modules: &Modules) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let is_child = |name: &str| modules.contains_key(&join(module, name));
    for path in paths(&strip_comments(text), is_child) {
        let Some(absolute) = absolute(module, &path) else {
            continue;
        };
        if let Some(target) = resolve(&absolute, modules)
            && target != module
        {
            found.insert(target);
        }
    }
    found
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with("//") { "" } else { l }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path in `text` that starts at `crate`, `super`, `self` or a child module (`is_child`),
/// with `use` groups (`use crate::a::{b, c::d}`) expanded.
fn paths(text: &str, is_child: impl Fn(&str) -> bool) -> Vec<Vec<String>> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let boundary = i == 0 || !(is_ident(chars[i - 1]) || chars[i - 1] == ':');
        let first: String = chars[i..].iter().take_while(|c| is_ident(**c)).collect();
        let rooted = ["crate", "super", "self"].contains(&first.as_str()) || is_child(&first);
        if boundary
            && !first.is_empty()
            && rooted
            && starts_with(&chars, i + first.chars().count(), "::")
        {
            let (trees, end) = tree(&chars, i);
            out.extend(trees);
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn starts_with(chars: &[char], at: usize, prefix: &str) -> bool {
    prefix
        .chars()
        .enumerate()
        .all(|(k, c)| chars.get(at + k) == Some(&c))
}

/// Parses a path (and its `{…}` group) starting at `at`: the expanded paths and where the
/// path ends.
fn tree(chars: &[char], mut at: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    loop {
        let start = at;
        while at < chars.len() && is_ident(chars[at]) {
            at += 1;
        }
        if at > start {
            prefix.push(chars[start..at].iter().collect::<String>());
        }
        if starts_with(chars, at, "::{") {
            at += 3;
            let mut out = Vec::new();
            loop {
                while at < chars.len() && (chars[at].is_whitespace() || chars[at] == ',') {
                    at += 1;
                }
                if at >= chars.len() || chars[at] == '}' {
                    return (out, at + 1);
                }
                let (inner, end) = tree(chars, at);
                for p in inner {
                    out.push(prefix.iter().cloned().chain(p).collect());
                }
                // `a as b` and `*` end the inner path without more segments.
                at = end.max(at + 1);
                while at < chars.len() && chars[at] != ',' && chars[at] != '}' {
                    at += 1;
                }
            }
        }
        if starts_with(chars, at, "::") {
            at += 2;
            continue;
        }
        return (vec![prefix], at);
    }
}

/// The path from the crate root, or `None` for `self` alone.
fn absolute(module: &str, path: &[String]) -> Option<Vec<String>> {
    let mut base: Vec<String> = if module.is_empty() {
        vec![]
    } else {
        module.split("::").map(str::to_owned).collect()
    };
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        _ => {}
    }
    while rest.first().map(String::as_str) == Some("super") {
        base.pop()?;
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

fn resolve(path: &[String], modules: &Modules) -> Option<String> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|candidate| modules.contains_key(candidate))
}

/// The module graph: module → the modules it imports.
fn graph(modules: &Modules) -> BTreeMap<String, BTreeSet<String>> {
    modules
        .iter()
        .map(|(m, text)| (m.clone(), imports(m, text, modules)))
        .collect()
}

/// The strongly connected components with more than one module (Tarjan), each sorted.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.found
}

/// For a cycle, each module's imports inside it: what to cut.
fn explain(component: &[String], graph: &BTreeMap<String, BTreeSet<String>>) -> String {
    component
        .iter()
        .map(|m| {
            let inside: Vec<&str> = graph[m]
                .iter()
                .filter(|t| component.contains(t))
                .map(String::as_str)
                .collect();
            format!("  {m} -> {}", inside.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn library() -> Modules {
    read_crate(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn no_module_of_the_library_imports_itself_through_others() {
    let modules = library();
    assert!(modules.len() > 50, "read {} modules", modules.len());
    let graph = graph(&modules);
    let found = cycles(&graph);
    let report: Vec<String> = found.iter().map(|c| explain(c, &graph)).collect();
    assert!(
        found.is_empty(),
        "{} import cycle(s) in src/ (docs/design.md, \"Layers\"):\n{}",
        found.len(),
        report.join("\n\n")
    );
}

/// What a pure module must not contain, and why.
const IMPURE: &[(&str, &str)] = &[
    ("async fn", "an effect (pure code does not wait)"),
    (".await", "an effect (pure code does not wait)"),
    ("Context", "the controller's shared state"),
    ("kube::Api", "an API server client"),
    ("kube::Client", "an API server client"),
    ("GraphClient", "the Graph client"),
    ("Timestamp::now", "a clock (time is an input)"),
    ("SystemTime::now", "a clock (time is an input)"),
    ("Instant::now", "a clock (time is an input)"),
    ("tokio::", "the runtime"),
];

/// The pure layers, by module path prefix.
const PURE: &[&str] = &["controller::core", "controller::status"];

#[test]
fn the_pure_layers_hold_no_effect() {
    let modules = library();
    let pure: Vec<&String> = modules
        .keys()
        .filter(|m| {
            PURE.iter()
                .any(|p| *m == p || m.starts_with(&format!("{p}::")))
        })
        .collect();
    assert!(pure.len() >= PURE.len(), "pure modules found: {pure:?}");
    let mut found = Vec::new();
    for m in pure {
        let text = strip_comments(&modules[m]);
        for (needle, why) in IMPURE {
            if text.contains(needle) {
                found.push(format!("  {m}: `{needle}` is {why}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the pure layers hold effects (docs/design.md, \"Layers\"):\n{}",
        found.join("\n")
    );
    // Nor do they import a layer above them: the core only itself, the status the core.
    let graph = graph(&modules);
    let mut upward = Vec::new();
    for (m, targets) in &graph {
        let Some(allowed) = below(m) else { continue };
        for t in targets.iter().filter(|t| t.starts_with("controller")) {
            if !allowed.iter().any(|a| within(t, a)) {
                upward.push(format!("  {m} -> {t}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "the pure layers import layers above them (docs/design.md, \"Layers\"):\n{}",
        upward.join("\n")
    );
}

/// Whether module `m` is `layer` or inside it.
fn within(m: &str, layer: &str) -> bool {
    m == layer || m.starts_with(&format!("{layer}::"))
}

/// The controller's modules a pure module may import, or `None` when `m` is not pure.
fn below(m: &str) -> Option<&'static [&'static str]> {
    if within(m, "controller::core") {
        Some(&["controller::core"])
    } else if within(m, "controller::status") {
        Some(&["controller::core", "controller::status"])
    } else {
        None
    }
}

/// The checker itself, on a crate written here: a cycle through a `use` group and an inline
/// path is found, a `#[cfg(test)]` import is not, and `mod` declarations are no imports.
#[test]
fn the_checker_finds_a_cycle_and_ignores_tests() {
    let dir = std::env::temp_dir().join(format!("architecture-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("a")).unwrap();
    let write = |p: &str, text: &str| std::fs::write(src.join(p), text).unwrap();
    write("lib.rs", "pub mod a;\npub mod b;\n#[cfg(test)]\nmod t;\n");
    write("a/mod.rs", "pub mod x;\npub mod y;\npub use x::X;\n");
    write("a/x.rs", "use super::y::{Y, self as why};\npub struct X;\n");
    write("a/y.rs", "pub struct Y;\nfn f() { crate::b::g() }\n");
    write(
        "b.rs",
        "pub fn g() {}\n// crate::a::x is only named here\n#[cfg(test)]\nmod tests {\n    use crate::a::X;\n    fn f() { let _ = \"}\"; }\n}\n",
    );
    write("t.rs", "use crate::a::X;\n");
    let modules = read_crate(&src);
    assert_eq!(
        modules.keys().map(String::as_str).collect::<Vec<_>>(),
        ["", "a", "a::x", "a::y", "b"]
    );
    let g = graph(&modules);
    assert!(cycles(&g).is_empty(), "{g:?}");
    assert_eq!(g["a"], BTreeSet::from(["a::x".to_owned()]));
    assert_eq!(g["a::y"], BTreeSet::from(["b".to_owned()]));
    // b now imports the re-export of a: a cycle a -> a::x -> a::y -> b -> a.
    write("b.rs", "use crate::{a::X, a};\npub fn g() {}\n");
    let g = graph(&read_crate(&src));
    assert_eq!(
        cycles(&g),
        vec![
            vec!["a", "a::x", "a::y", "b"]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
