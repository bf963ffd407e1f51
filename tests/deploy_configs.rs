//! Every example config in deploy/ loads through the real config loader, and
//! the annotated example names every field of [`RawConfig`] with its default,
//! so that a field added to the config without being added to the example
//! fails here.
//!
//! The example writes a setting that is unset by default commented out, as
//! `#key = value` (no space after the `#`), and a section that is absent by
//! default as `#[section]`; prose comments start with `# `. The tests read
//! the file twice: as it is (which must parse to exactly
//! `RawConfig::default()`), and with those settings uncommented (which must
//! name every field, nested ones included, and may add only settings whose
//! default is unset).

use std::path::Path;

use partner_events_gateway::config::{Config, RawConfig};
use serde_json::Value;

fn example() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/gateway.example.toml");
    std::fs::read_to_string(path).unwrap()
}

/// The example with its commented-out settings (`#key = ...`, `#[table]`)
/// uncommented.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if !rest.is_empty() && !rest.starts_with([' ', '#']) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn as_json(raw: &RawConfig) -> Value {
    serde_json::to_value(raw).unwrap()
}

/// The value at a dotted path (`auth.tokens[0].caller` is `auth.tokens.0.caller`).
fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| match v {
        Value::Object(m) => m.get(key),
        Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// Every difference between two values, as `path: example vs default`.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn differences(example: &Value, default: &Value, path: &str, out: &mut Vec<String>) {
    match (example, default) {
        (Value::Object(e), Value::Object(d)) => {
            for key in e.keys().chain(d.keys().filter(|k| !e.contains_key(*k))) {
                let null = Value::Null;
                differences(
                    e.get(key).unwrap_or(&null),
                    d.get(key).unwrap_or(&null),
                    &join(path, key),
                    out,
                );
            }
        }
        (Value::Array(e), Value::Array(d)) if e.len() == d.len() => {
            for (i, (e, d)) in e.iter().zip(d).enumerate() {
                differences(e, d, &format!("{path}[{i}]"), out);
            }
        }
        (e, d) if e != d => out.push(format!("{path}: the example has {e}, the default is {d}")),
        _ => {}
    }
}

/// Every field of `fields` (the parsed config as JSON, so that unset fields
/// show as null) that `written` (the TOML text as a table) does not name.
fn unnamed(fields: &Value, written: &toml::Value, path: &str, out: &mut Vec<String>) {
    match (fields, written) {
        (Value::Object(f), toml::Value::Table(w)) => {
            for (key, value) in f {
                let p = join(path, key);
                match w.get(key) {
                    Some(w) => unnamed(value, w, &p, out),
                    None => out.push(p),
                }
            }
        }
        (Value::Array(f), toml::Value::Array(w)) => {
            for (i, (f, w)) in f.iter().zip(w).enumerate() {
                unnamed(f, w, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Every setting path in `table`, arrays of tables by index.
fn settings(v: &toml::Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                path.push(k.clone());
                settings(v, path, out);
                path.pop();
            }
        }
        toml::Value::Array(a) if a.iter().all(|v| v.is_table()) && !a.is_empty() => {
            for (i, v) in a.iter().enumerate() {
                path.push(i.to_string());
                settings(v, path, out);
                path.pop();
            }
        }
        _ => out.push(path.clone()),
    }
}

#[test]
fn every_example_config_loads() {
    let mut n = 0;
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("toml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 2, "expected the example configs in deploy/");
}

#[test]
fn the_annotated_example_states_every_default() {
    let example: RawConfig = toml::from_str(&example()).unwrap();
    let mut diffs = Vec::new();
    differences(
        &as_json(&example),
        &as_json(&RawConfig::default()),
        "",
        &mut diffs,
    );
    assert!(
        diffs.is_empty(),
        "deploy/gateway.example.toml does not state src/config.rs's defaults:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn the_annotated_example_names_every_field() {
    let full_text = uncommented(&example());
    let full: RawConfig = toml::from_str(&full_text)
        .unwrap_or_else(|e| panic!("the example with its `#key = value` lines uncommented: {e}"));
    let written: toml::Value = toml::Value::Table(full_text.parse::<toml::Table>().unwrap());
    let mut missing = Vec::new();
    unnamed(&as_json(&full), &written, "", &mut missing);
    assert!(
        missing.is_empty(),
        "deploy/gateway.example.toml does not name these fields (add each with its default \
         and a comment, or commented out as `#key = value` when it is unset by default):\n{}",
        missing.join("\n")
    );

    // What is commented out must be what is unset by default.
    let as_is = toml::Value::Table(example().parse::<toml::Table>().unwrap());
    let default = as_json(&RawConfig::default());
    let mut paths = Vec::new();
    settings(&written, &mut Vec::new(), &mut paths);
    for path in paths {
        let in_file = path.iter().try_fold(&as_is, |v, k| match v {
            toml::Value::Table(t) => t.get(k),
            toml::Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        });
        if in_file.is_none() {
            let d = lookup(&default, &path);
            assert!(
                d.is_none() || d == Some(&Value::Null),
                "`{}` is commented out in the example but has a default ({}): write it out",
                path.join("."),
                d.unwrap()
            );
        }
    }
}

#[test]
fn every_setting_in_the_annotated_example_has_a_comment() {
    let text = uncommented(&example());
    let lines: Vec<&str> = text.lines().collect();
    let is_setting = |l: &str| {
        let key = l.split('=').next().unwrap_or("").trim();
        l.contains('=')
            && !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.\"".contains(&b))
    };
    for (i, line) in lines.iter().enumerate() {
        if !is_setting(line) || line.contains(" # ") {
            continue;
        }
        // A comment above it, possibly shared with the settings between.
        let above = lines[..i].iter().rev().find(|l| !is_setting(l));
        assert!(
            above.is_some_and(|l| l.starts_with('#')),
            "deploy/gateway.example.toml line {}: `{line}` has no comment",
            i + 1
        );
    }
}
