//! Request validation against the published PortSIP v22 OpenAPI document, generically: the
//! request body of an operation is checked against its schema (types, `required`,
//! `enum`, `minLength`/`maxLength` in characters, `pattern`, `minimum`/`maximum`, array
//! `items`, `allOf`), and a property the schema does not name is refused, as PortSIP
//! refuses it. The first violation is reported with its JSON path, which becomes
//! `detail.field` of PortSIP's `VALIDATE_FAILED` answer.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Map, Value};

/// The OpenAPI subset this stand-in serves (the same file the gateway's docs point to).
const DOCUMENT: &str = include_str!("../../docs/reference/portsip-rest-api-v22-ms365-subset.json");

/// A violation: the field's path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub message: String,
}

fn violation(field: &str, message: impl Into<String>) -> Violation {
    Violation {
        field: if field.is_empty() {
            "body".into()
        } else {
            field.into()
        },
        message: message.into(),
    }
}

fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        serde_json::from_str(DOCUMENT).expect("the embedded OpenAPI document parses")
    })
}

/// The request-body schema of `method` on the document's `path` (`/users/{id}`).
pub fn request_schema(method: &str, path: &str) -> Option<&'static Value> {
    document()
        .get("paths")?
        .get(path)?
        .get(method)?
        .get("requestBody")?
        .get("content")?
        .get("application/json")?
        .get("schema")
}

/// The schema of query parameter `name` of an operation.
pub fn query_schema(method: &str, path: &str, name: &str) -> Option<&'static Value> {
    let params = document()
        .get("paths")?
        .get(path)?
        .get(method)?
        .get("parameters")?;
    params
        .as_array()?
        .iter()
        .find(|p| {
            p.get("name") == Some(&Value::from(name)) && p.get("in") == Some(&Value::from("query"))
        })?
        .get("schema")
}

/// Checks `body` against the request schema of the operation.
pub fn validate_body(method: &str, path: &str, body: &Value) -> Result<(), Violation> {
    match request_schema(method, path) {
        Some(schema) => validate(body, schema, ""),
        None if body.is_null() || body.as_object().is_some_and(Map::is_empty) => Ok(()),
        None => Err(violation("", "this operation takes no request body")),
    }
}

/// Checks `value` (at `at`) against `schema`.
pub fn validate(value: &Value, schema: &Value, at: &str) -> Result<(), Violation> {
    for branch in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        validate_here(value, branch, at)?;
    }
    validate_here(value, schema, at)?;
    if let (Some(object), Some(known)) = (value.as_object(), properties(schema)) {
        if let Some(extra) = object.keys().find(|k| !known.contains_key(k.as_str())) {
            return Err(violation(
                &join(at, extra),
                "is not a field of this request",
            ));
        }
    }
    Ok(())
}

/// Every property a schema names, its `allOf` branches included.
fn properties(schema: &Value) -> Option<HashMap<&str, &Value>> {
    let mut out: Option<HashMap<&str, &Value>> = None;
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        out.get_or_insert_with(HashMap::new)
            .extend(props.iter().map(|(k, v)| (k.as_str(), v)));
    }
    for branch in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(more) = properties(branch) {
            out.get_or_insert_with(HashMap::new).extend(more);
        }
    }
    out
}

/// The keywords of one schema object (without its `allOf`, handled by the caller).
fn validate_here(value: &Value, schema: &Value, at: &str) -> Result<(), Violation> {
    if let Some(kind) = schema.get("type").and_then(Value::as_str) {
        check_type(value, kind, at)?;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        return Err(violation(
            at,
            format!("must be one of {}", Value::from(options.clone())),
        ));
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

/// JSON Schema patterns are unanchored (ECMA-262 search semantics).
fn pattern_matches(pattern: &str, s: &str) -> bool {
    static CACHE: OnceLock<std::sync::Mutex<HashMap<String, regex::Regex>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if !cache.contains_key(pattern) {
        match regex::Regex::new(pattern) {
            Ok(re) => cache.insert(pattern.to_string(), re),
            Err(_) => return false,
        };
    }
    cache[pattern].is_match(s)
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
    Ok(())
}

fn check_object(object: &Map<String, Value>, schema: &Value, at: &str) -> Result<(), Violation> {
    for name in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(name) = name.as_str()
            && !object.contains_key(name)
        {
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

    #[test]
    fn a_valid_user_passes_and_each_violation_is_named() {
        assert_eq!(validate_body("post", "/users", &user()), Ok(()));
        let cases = [
            ("name", Value::Null, "name", "required"),
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
            ("email", json!("e".repeat(129)), "email", "at most 128"),
            ("sms", json!("SOMETIMES"), "sms", "one of"),
            (
                "favourite_colour",
                json!("blue"),
                "favourite_colour",
                "not a field",
            ),
        ];
        for (key, value, field, message) in cases {
            let mut body = user();
            if value.is_null() {
                body.as_object_mut().unwrap().remove(key);
            } else {
                body[key] = value;
            }
            let v = validate_body("post", "/users", &body).unwrap_err();
            assert_eq!(v.field, field, "{v:?}");
            assert!(v.message.contains(message), "{v:?}");
        }
    }

    #[test]
    fn nested_all_of_objects_and_query_parameters() {
        let update = json!({"office_hours": {"mode": "CUSTOM", "monday": {"enabled": true}}});
        assert_eq!(validate_body("post", "/users/{id}", &update), Ok(()));
        let bad = json!({"office_hours": {"mode": "SOMETIMES"}});
        let v = validate_body("post", "/users/{id}", &bad).unwrap_err();
        assert_eq!(v.field, "office_hours.mode");
        let top = query_schema("get", "/users", "top").unwrap();
        assert!(validate(&json!(100), top, "top").is_ok());
        assert!(validate(&json!(101), top, "top").is_err());
        assert!(validate_body("post", "/users/{id}/destroy", &json!({"x": 1})).is_err());
    }
}
