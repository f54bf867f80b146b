//! Request validation against the published PortSIP v22 OpenAPI document, generically: the
//! request body of an operation is checked against its schema (`type`, `required`,
//! `enum`, `minLength`/`maxLength` in characters, `pattern`, `minimum`/`maximum`, `format:
//! int32`, array `items`, `allOf`), and a property the schema does not name is refused, as
//! PortSIP refuses it. Query parameters are checked against their parameter schemas. The
//! first violation is reported with its JSON path, which becomes `detail.field` of
//! PortSIP's `VALIDATE_FAILED` answer. The document has no `$ref`, so none is resolved.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, OnceLock};

use serde_json::{Map, Value};

/// The OpenAPI subset this stand-in serves (the same file the gateway's docs point to).
const DOCUMENT: &str =
    include_str!("../../../../docs/reference/portsip-rest-api-v22-ms365-subset.json");

/// A violation: the field's path (`office_hours.mode`, `outbound_caller_ids[0].caller_id`)
/// and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {message}")]
pub struct Violation {
    pub field: String,
    pub message: String,
}

fn violation(field: &str, message: impl Into<String>) -> Violation {
    Violation {
        // The whole body has no name of its own; PortSIP's clients read `body`.
        field: if field.is_empty() { "body" } else { field }.to_string(),
        message: message.into(),
    }
}

/// The parsed document (parsed once; the file is part of the binary).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        serde_json::from_str(DOCUMENT).expect("the embedded OpenAPI document parses")
    })
}

fn operation(method: &str, path: &str) -> Option<&'static Value> {
    document().get("paths")?.get(path)?.get(method)
}

/// The request-body schema of `method` (lower case) on the document's `path` (`/users/{id}`).
pub fn request_schema(method: &str, path: &str) -> Option<&'static Value> {
    operation(method, path)?
        .get("requestBody")?
        .get("content")?
        .get("application/json")?
        .get("schema")
}

/// Whether the operation declares its request body `required`.
fn body_required(method: &str, path: &str) -> bool {
    let body = operation(method, path).and_then(|op| op.get("requestBody"));
    body.and_then(|b| b.get("required")) == Some(&Value::Bool(true))
}

fn query_parameters(method: &str, path: &str) -> impl Iterator<Item = &'static Value> {
    (operation(method, path).and_then(|op| op.get("parameters")))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p.get("in").and_then(Value::as_str) == Some("query"))
}

/// The schema of query parameter `name` of an operation.
pub fn query_schema(method: &str, path: &str, name: &str) -> Option<&'static Value> {
    query_parameters(method, path)
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))?
        .get("schema")
}

/// The property names of an operation's 200 answer; for a list (`{count, items}`), those
/// of one item. What the stand-in shows is cut to these, so it shows what PortSIP shows.
pub fn response_fields(method: &str, path: &str) -> BTreeSet<&'static str> {
    let schema = (operation(method, path).and_then(|op| op.get("responses")))
        .and_then(|r| r.get("200"))
        .and_then(|r| r.get("content"))
        .and_then(|c| c.get("application/json"))
        .and_then(|c| c.get("schema"));
    let props = |s: Option<&'static Value>| s.and_then(|s| s.get("properties"));
    let item = props(schema)
        .and_then(|p| p.get("items"))
        .and_then(|i| i.get("items"));
    let fields = props(item).or(props(schema)).and_then(Value::as_object);
    fields
        .into_iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .collect()
}

/// Checks `body` (`Null` when the request had none) against the operation's request schema.
pub fn validate_body(method: &str, path: &str, body: &Value) -> Result<(), Violation> {
    match request_schema(method, path) {
        Some(_) if body.is_null() && body_required(method, path) => {
            Err(violation("", "is required: send a JSON object"))
        }
        Some(_) if body.is_null() => Ok(()),
        Some(schema) => validate(body, schema, ""),
        None if body.is_null() => Ok(()),
        None => Err(violation("", "must be empty: this operation takes no body")),
    }
}

/// Checks `value` (found at JSON path `at`) against `schema`.
pub fn validate(value: &Value, schema: &Value, at: &str) -> Result<(), Violation> {
    for branch in all_of(schema) {
        validate_here(value, branch, at)?;
    }
    validate_here(value, schema, at)?;
    // Unknown properties are judged against the union of the branches' properties: an
    // `allOf` of two objects names the fields of both.
    if let (Some(object), Some(known)) = (value.as_object(), properties(schema))
        && let Some(extra) = object.keys().find(|k| !known.contains_key(k.as_str()))
    {
        return Err(violation(
            &join(at, extra),
            "is not a field of this request",
        ));
    }
    Ok(())
}

fn all_of(schema: &Value) -> impl Iterator<Item = &Value> {
    schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// Every property a schema names, its `allOf` branches included; `None` when it names none.
fn properties(schema: &Value) -> Option<HashMap<&str, &Value>> {
    let mut out: Option<HashMap<&str, &Value>> = None;
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        out.get_or_insert_with(HashMap::new)
            .extend(props.iter().map(|(k, v)| (k.as_str(), v)));
    }
    for branch in all_of(schema) {
        if let Some(more) = properties(branch) {
            out.get_or_insert_with(HashMap::new).extend(more);
        }
    }
    out
}

/// The keywords of one schema object (its `allOf` is the caller's).
fn validate_here(value: &Value, schema: &Value, at: &str) -> Result<(), Violation> {
    if let Some(kind) = schema.get("type").and_then(Value::as_str) {
        check_type(value, kind, at)?;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        let options = Value::from(options.clone());
        return Err(violation(at, format!("must be one of {options}")));
    }
    if let Some(s) = value.as_str() {
        check_string(s, schema, at)?;
    }
    if let Some(n) = value.as_f64() {
        check_number(n, schema, at)?;
    }
    if let Some(object) = value.as_object() {
        check_object(object, schema, at)?;
    }
    if let (Some(items), Some(schema)) = (value.as_array(), schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            validate(item, schema, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

fn check_type(value: &Value, kind: &str, at: &str) -> Result<(), Violation> {
    let ok = match kind {
        "string" => value.is_string(),
        // PortSIP decodes integers strictly: `60.0` is not an int32.
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(violation(at, format!("must be of type {kind}")))
    }
}

fn check_string(s: &str, schema: &Value, at: &str) -> Result<(), Violation> {
    // JSON Schema counts characters (code points), not bytes.
    let chars = s.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && chars < min
    {
        return Err(violation(at, format!("must be at least {min} characters")));
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && chars > max
    {
        return Err(violation(at, format!("must be at most {max} characters")));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
        && !pattern_matches(pattern, s)
    {
        return Err(violation(at, format!("must match the pattern {pattern}")));
    }
    Ok(())
}

/// JSON Schema patterns are not anchored (ECMA-262 search semantics): `[0-9]{3,64}` only
/// asks for three digits somewhere. PortSIP's stricter prose rules are checked elsewhere.
/// A pattern that does not compile matches nothing (a test keeps the document's compiling).
pub fn pattern_matches(pattern: &str, s: &str) -> bool {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<regex::Regex>>>> = OnceLock::new();
    let mut cache = (CACHE.get_or_init(Default::default).lock()).unwrap_or_else(|p| p.into_inner());
    let re = cache
        .entry(pattern.to_string())
        .or_insert_with(|| regex::Regex::new(pattern).ok());
    re.as_ref().is_some_and(|re| re.is_match(s))
}

fn check_number(n: f64, schema: &Value, at: &str) -> Result<(), Violation> {
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && n < min
    {
        return Err(violation(at, format!("must be at least {min}")));
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
        && n > max
    {
        return Err(violation(at, format!("must be at most {max}")));
    }
    let int32 = f64::from(i32::MIN)..=f64::from(i32::MAX);
    if schema.get("format").and_then(Value::as_str) == Some("int32") && !int32.contains(&n) {
        return Err(violation(at, "must fit in 32 bits (int32)"));
    }
    Ok(())
}

fn check_object(object: &Map<String, Value>, schema: &Value, at: &str) -> Result<(), Violation> {
    let required = schema.get("required").and_then(Value::as_array);
    for name in required.into_iter().flatten().filter_map(Value::as_str) {
        if !object.contains_key(name) {
            return Err(violation(&join(at, name), "is required"));
        }
    }
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Ok(());
    };
    for (name, value) in object {
        if let Some(schema) = props.get(name) {
            validate(value, schema, &join(at, name))?;
        }
    }
    Ok(())
}

fn join(at: &str, name: &str) -> String {
    if at.is_empty() {
        name.to_string()
    } else {
        format!("{at}.{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Value {
        json!({"name": "ann", "display_name": "Ann", "password": "p", "email": "a@x",
               "role": "StandardUser", "extension_number": "1001", "extension_password": "x",
               "voicemail_pin": "135792"})
    }

    fn edited(key: &str, value: Value) -> Value {
        let mut body = user();
        match value {
            Value::Null => drop(body.as_object_mut().unwrap().remove(key)),
            value => body[key] = value,
        }
        body
    }

    #[test]
    fn a_valid_user_passes_and_each_violation_is_named() {
        assert_eq!(validate_body("post", "/users", &user()), Ok(()));
        let cases = [
            ("name", Value::Null, "name", "is required"),
            (
                "extension_number",
                json!("12"),
                "extension_number",
                "at least 3",
            ),
            (
                "extension_number",
                json!("abc"),
                "extension_number",
                "pattern",
            ),
            ("display_name", json!(7), "display_name", "type string"),
            ("email", json!("é".repeat(129)), "email", "at most 128"),
            ("sms", json!("SOMETIMES"), "sms", "one of"),
            (
                "favourite_colour",
                json!("blue"),
                "favourite_colour",
                "not a field",
            ),
        ];
        for (key, value, field, message) in cases {
            let v = validate_body("post", "/users", &edited(key, value)).unwrap_err();
            assert_eq!(v.field, field, "{v:?}");
            assert!(v.message.contains(message), "{v:?}");
        }
    }

    #[test]
    fn lengths_count_characters_and_patterns_search() {
        // 128 two-byte characters are 128 characters, within maxLength 128.
        let body = edited("email", json!("é".repeat(128)));
        assert_eq!(validate_body("post", "/users", &body), Ok(()));
        // Unanchored, as JSON Schema specifies: three digits somewhere is a match.
        assert!(pattern_matches("[0-9]{3,64}", "ext-123"));
        assert!(!pattern_matches("[0-9]{3,64}", "12-34"));
    }

    #[test]
    fn nested_all_of_objects_arrays_and_integers() {
        let update = json!({"office_hours": {"mode": "CUSTOM", "monday": {"enabled": true}},
            "available_no_answer_forward_rule": {"action": "HANGUP", "timeout": 30}});
        assert_eq!(validate_body("post", "/users/{id}", &update), Ok(()));
        let cases = [
            (
                json!({"office_hours": {"mode": "SOMETIMES"}}),
                "office_hours.mode",
            ),
            (
                json!({"office_hours": {"tuesday": {"x": 1}}}),
                "office_hours.tuesday.x",
            ),
            (
                json!({"outbound_caller_ids": [{"caller_id": ""}]}),
                "outbound_caller_ids[0].caller_id",
            ),
            (
                json!({"busy_no_answer_forward_rule": {"timeout": -1}}),
                "busy_no_answer_forward_rule.timeout",
            ),
            (
                json!({"busy_no_answer_forward_rule": {"timeout": 1.5}}),
                "busy_no_answer_forward_rule.timeout",
            ),
            (
                json!({"busy_no_answer_forward_rule": {"timeout": 5_000_000_000u64}}),
                "busy_no_answer_forward_rule.timeout",
            ),
            (json!({"name": "renamed"}), "name"),
        ];
        for (body, field) in cases {
            let v = validate_body("post", "/users/{id}", &body).unwrap_err();
            assert_eq!(v.field, field, "{body}: {v:?}");
        }
    }

    #[test]
    fn bodies_queries_and_answers_follow_the_document() {
        let top = query_schema("get", "/users", "top").unwrap();
        assert!(validate(&json!(100), top, "top").is_ok());
        assert!(validate(&json!(101), top, "top").is_err());
        assert!(validate(&json!(0), top, "top").is_err());
        assert!(query_schema("get", "/contacts", "skip").is_some());
        assert!(validate_body("post", "/users/{id}/destroy", &json!({"x": 1})).is_err());
        assert_eq!(
            validate_body("post", "/users/{id}/destroy", &Value::Null),
            Ok(())
        );
        let missing = validate_body("post", "/login", &Value::Null).unwrap_err();
        assert_eq!(missing.field, "body");
        assert!(validate_body("post", "/login", &json!([])).is_err());
        let listed = response_fields("get", "/users");
        assert!(listed.contains("extension_number") && listed.contains("sync_type"));
        assert!(!listed.contains("password") && !listed.contains("voicemail_pin"));
        assert!(response_fields("get", "/users/{id}").contains("voicemail_pin"));
    }

    #[test]
    fn every_pattern_in_the_document_compiles() {
        fn walk(v: &Value, found: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(p)) = m.get("pattern") {
                        found.push(p.clone());
                    }
                    m.values().for_each(|v| walk(v, found));
                }
                Value::Array(a) => a.iter().for_each(|v| walk(v, found)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        walk(document(), &mut found);
        assert!(!found.is_empty());
        for p in found {
            assert!(regex::Regex::new(&p).is_ok(), "{p}");
        }
    }
}
