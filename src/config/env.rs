//! `MS365GW_*` environment overrides of single configuration values.
//!
//! Double underscores separate levels, because keys contain single ones:
//! `MS365GW_DATA_DIR` sets `data_dir`, `MS365GW_UPSTREAM__URL` sets `upstream.url`,
//! `MS365GW_LISTENER__0__BIND` sets `listener[0].bind`. A value that parses as a TOML scalar
//! (number, boolean) is used as one; anything else is a string. An override that names no
//! existing table or array element is an error, so a typo does not go unnoticed.

use super::{ConfigError, ENV_PREFIX};

/// Variables with this prefix that belong to the command line (or to the test suite:
/// `TEST_DATABASE*` pick the tests' database and reach the binaries the tests run), not to
/// the file.
const RESERVED: &[&str] = &[
    "CONFIG",
    "LOG",
    "LOG_FORMAT",
    "MASTER_KEY",
    "TEST_DATABASE",
    "TEST_DATABASE_URL",
];

/// Applies the overrides to `table`; returns (config key, variable) for error messages.
pub(super) fn apply_overrides(
    table: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut applied = Vec::new();
    let mut vars: Vec<_> = vars
        .into_iter()
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix(ENV_PREFIX)?.to_string();
            (!RESERVED.contains(&rest.as_str())).then_some((name, rest, value))
        })
        .collect();
    vars.sort();
    for (name, rest, value) in vars {
        let segments: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        let key = display_key(&segments);
        set_path(table, &segments, scalar(&value)).map_err(|message| ConfigError::Invalid {
            origin: format!("environment variable {name}"),
            key: key.clone(),
            message,
        })?;
        applied.push((key, name));
    }
    Ok(applied)
}

/// `["listener", "0", "bind"]` → `listener[0].bind`, the same form serde errors use.
fn display_key(segments: &[String]) -> String {
    let mut out = String::new();
    for s in segments {
        if s.parse::<usize>().is_ok() {
            out.push_str(&format!("[{s}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(s);
        }
    }
    out
}

fn scalar(value: &str) -> toml::Value {
    match value.parse::<toml::Value>() {
        Ok(v @ (toml::Value::Integer(_) | toml::Value::Boolean(_) | toml::Value::Float(_))) => v,
        _ => toml::Value::String(value.to_string()),
    }
}

fn set_path(
    table: &mut toml::Table,
    segments: &[String],
    value: toml::Value,
) -> Result<(), String> {
    let (first, rest) = segments
        .split_first()
        .filter(|(f, _)| !f.is_empty())
        .ok_or_else(|| "empty key".to_string())?;
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return Ok(());
    }
    let entry = table
        .entry(first.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    set_in_value(entry, rest, value)
}

fn set_in_value(
    target: &mut toml::Value,
    segments: &[String],
    value: toml::Value,
) -> Result<(), String> {
    match target {
        toml::Value::Table(t) => set_path(t, segments, value),
        toml::Value::Array(items) => {
            let index: usize = segments[0]
                .parse()
                .map_err(|_| format!("`{}` is not an index into a list", segments[0]))?;
            let len = items.len();
            let item = items
                .get_mut(index)
                .ok_or_else(|| format!("index {index} is past the {len} entries in the file"))?;
            if segments.len() == 1 {
                *item = value;
                Ok(())
            } else {
                set_in_value(item, &segments[1..], value)
            }
        }
        _ => Err("a plain value has no sub-keys".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn sets_nested_and_indexed_keys() {
        let mut t: toml::Table =
            toml::from_str("[[listener]]\nbind = \"a\"\n[upstream]\nurl = \"x\"").unwrap();
        let applied = apply_overrides(
            &mut t,
            vars(&[
                ("MS365GW_LISTENER__0__BIND", "127.0.0.1:1"),
                ("MS365GW_UPSTREAM__URL", "http://y"),
                ("MS365GW_SERVER__MAX_CONNECTIONS", "7"),
                ("MS365GW_LOG_FORMAT", "json"),
                ("MS365GW_TEST_DATABASE", "postgres"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(t["listener"][0]["bind"].as_str(), Some("127.0.0.1:1"));
        assert_eq!(t["upstream"]["url"].as_str(), Some("http://y"));
        assert_eq!(t["server"]["max_connections"].as_integer(), Some(7));
        assert!(
            applied
                .iter()
                .any(|(k, v)| k == "listener[0].bind" && v == "MS365GW_LISTENER__0__BIND")
        );
        assert_eq!(applied.len(), 3);
    }

    #[test]
    fn index_past_the_end_names_the_variable() {
        let mut t: toml::Table = toml::from_str("[[listener]]\nbind = \"a\"").unwrap();
        let err = apply_overrides(&mut t, vars(&[("MS365GW_LISTENER__3__BIND", "x")])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("MS365GW_LISTENER__3__BIND"), "{msg}");
        assert!(msg.contains("listener[3].bind"), "{msg}");
    }
}
