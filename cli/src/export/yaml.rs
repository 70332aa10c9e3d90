//! JSON values written as block YAML, for manifests people read and diff. Every string is a
//! double-quoted scalar with JSON's escapes (a subset of YAML's), so no value is ever read back
//! as another type (`"on"`, `"1.30"`, `"0755"` stay strings); keys are plain only when they
//! cannot be mistaken for anything but a string. No dependency: the manifests are
//! `serde_json::Value`s (whose maps keep keys sorted, so `apiVersion`, `kind`, `metadata`,
//! `spec` come in the usual order), and this is all of YAML they need.

use std::fmt::Write as _;

use serde_json::Value;

/// One YAML document (no `---`), ending in a newline.
pub fn document(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => mapping(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => sequence(&mut out, items, 0),
        scalar => {
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
    out
}

/// Documents joined by `---`.
pub fn documents(values: &[Value]) -> String {
    values
        .iter()
        .map(document)
        .collect::<Vec<_>>()
        .join("---\n")
}

fn mapping(out: &mut String, map: &serde_json::Map<String, Value>, indent: usize) {
    for (key, value) in map {
        let _ = write!(out, "{:indent$}{}:", "", key_text(key));
        nested(out, value, indent);
    }
}

fn sequence(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        let _ = write!(out, "{:indent$}-", "");
        match item {
            // `- key: value` with the rest of the mapping aligned under the first key.
            Value::Object(map) if !map.is_empty() => {
                let mut first = String::new();
                mapping(&mut first, map, indent + 2);
                out.push(' ');
                out.push_str(&first[indent + 2..]);
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                sequence(out, inner, indent + 2);
            }
            scalar => {
                out.push(' ');
                out.push_str(&inline(scalar));
                out.push('\n');
            }
        }
    }
}

/// What follows `key:`: a scalar on the same line, or a block on the next ones.
fn nested(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            mapping(out, map, indent + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            sequence(out, items, indent);
        }
        scalar => {
            out.push(' ');
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
}

fn inline(value: &Value) -> String {
    match value {
        Value::Object(_) => "{}".to_owned(),
        Value::Array(_) => "[]".to_owned(),
        // JSON's number, boolean, null and string spellings are YAML's too.
        scalar => scalar.to_string(),
    }
}

/// Plain when it is a word of letters, digits and `. _ / -` starting with a letter, and not
/// one YAML 1.1 reads as a boolean or null; quoted otherwise.
fn key_text(key: &str) -> String {
    const RESERVED: [&str; 11] = [
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~", "",
    ];
    let plain = key.starts_with(|c: char| c.is_ascii_alphabetic())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))
        && !RESERVED.contains(&key.to_ascii_lowercase().as_str());
    if plain {
        key.to_owned()
    } else {
        Value::String(key.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nested_mappings_and_sequences_are_block_yaml_with_quoted_strings() {
        let value = json!({
            "apiVersion": "v1",
            "metadata": {"name": "cache", "labels": {"app.kubernetes.io/name": "cache"}},
            "spec": {
                "replicas": 2,
                "clusterIP": "None",
                "ports": [{"name": "grpc", "port": 50052}, {"name": "h", "port": 8080}],
                "args": ["a", "on"],
                "empty": {},
                "none": [],
                "nested": [[1, 2]],
                "y": true,
            },
        });
        // serde_json's maps keep their keys sorted, so the output is too.
        let expected = r#"apiVersion: "v1"
metadata:
  labels:
    app.kubernetes.io/name: "cache"
  name: "cache"
spec:
  args:
  - "a"
  - "on"
  clusterIP: "None"
  empty: {}
  nested:
  -
    - 1
    - 2
  none: []
  ports:
  - name: "grpc"
    port: 50052
  - name: "h"
    port: 8080
  replicas: 2
  "y": true
"#;
        assert_eq!(document(&value), expected);
    }

    #[test]
    fn strings_keep_their_escapes_and_documents_are_separated() {
        let text = documents(&[json!({"a": "line\n\"q\"\t$(X)"}), json!({"b": null})]);
        assert_eq!(text, "a: \"line\\n\\\"q\\\"\\t$(X)\"\n---\nb: null\n");
    }
}
