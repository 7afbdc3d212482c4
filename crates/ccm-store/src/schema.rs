//! Schema versions of the stored JSON documents (workers, runtime settings, sessions).
//!
//! Every document the store writes carries `"schema_version": N` beside the value's own
//! fields. Reading checks it: an older document is brought up to date by the kind's upgrade
//! functions, one step at a time (version N → N + 1), before it is decoded; a document newer
//! than this build knows is [`StoreError::UnsupportedSchema`] (a newer ccm wrote it), never a
//! silent misreading. Documents written before versions existed have no `schema_version` and
//! count as version 1.
//!
//! To change a stored shape incompatibly (a new required field, a rename): add an upgrade
//! function at the end of the kind's list below; [`DocSchema::current`] grows by one, new
//! documents are written at the new version, and the golden fixtures in
//! `tests/fixtures/` (today's shapes, never edited) keep proving that old documents load.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::StoreError;

/// The field that holds a document's schema version.
pub const SCHEMA_VERSION_FIELD: &str = "schema_version";

/// One upgrade step: turns a document of version N into one of version N + 1 (the
/// `schema_version` field is already removed). An error says what is wrong with the input.
pub type Upgrade = fn(&mut Map<String, Value>) -> Result<(), String>;

/// The versions of one kind of stored document.
#[derive(Debug, Clone, Copy)]
pub struct DocSchema {
    /// What the documents are (`worker`, `settings`, `session`), for errors.
    pub what: &'static str,
    /// Step `i` upgrades version `i + 1` to `i + 2`.
    pub upgrades: &'static [Upgrade],
}

/// How every document this build writes begins ([`DocSchema::stamp`]): the version first.
const VERSION_PREFIX: &str = "{\"schema_version\":";

/// A document's version alone (every other field skipped, nothing allocated for it).
#[derive(serde::Deserialize)]
struct VersionOnly {
    schema_version: Option<u64>,
}

/// Workers (the `Worker` aggregate of `ccm-domain`).
pub const WORKER: DocSchema = DocSchema {
    what: "worker",
    upgrades: &[worker_v2_compact_breaks],
};

/// Version 2 stores a worker's `breaks` and `absences` as `[from, length]` pairs (Unix
/// seconds, seconds) instead of `{"from": …, "to": …}`. The dated form still decodes, so the
/// step changes nothing; the version is there so that an older ccm (another replica during a
/// rolling upgrade) refuses a version-2 document clearly instead of misreading its breaks.
fn worker_v2_compact_breaks(_: &mut Map<String, Value>) -> Result<(), String> {
    Ok(())
}

/// The runtime settings (`RuntimeSettings` of `ccm-domain`).
pub const SETTINGS: DocSchema = DocSchema {
    what: "settings",
    upgrades: &[],
};

/// API sessions. The store does not interpret them otherwise; their shape is the API's, so a
/// change there that old documents do not satisfy needs an upgrade step here.
pub const SESSION: DocSchema = DocSchema {
    what: "session",
    upgrades: &[],
};

impl DocSchema {
    /// The version this build writes: 1 plus the number of upgrade steps.
    pub fn current(&self) -> u64 {
        1 + self.upgrades.len() as u64
    }

    /// Serializes `value` (which must serialize to a JSON object) with the current
    /// `schema_version`.
    pub fn encode<T: Serialize + ?Sized>(&self, id: &str, value: &T) -> Result<String, StoreError> {
        let json = serde_json::to_string(value).map_err(|e| self.corrupt(id, e))?;
        self.stamp(id, &json)
    }

    /// Adds the current `schema_version` to a JSON object given as text (a document the store
    /// receives already serialized). Anything but an object is refused.
    pub fn stamp(&self, id: &str, json: &str) -> Result<String, StoreError> {
        let json = json.trim();
        let Some(rest) = json.strip_prefix('{') else {
            return Err(self.corrupt(id, "not a JSON object"));
        };
        if json.contains(&format!("\"{SCHEMA_VERSION_FIELD}\"")) {
            // Rare (the field name appears somewhere inside): take the slow, exact way.
            let mut map: Map<String, Value> =
                serde_json::from_str(json).map_err(|e| self.corrupt(id, e))?;
            if map.contains_key(SCHEMA_VERSION_FIELD) {
                return Err(self.corrupt(id, "the document already has a schema_version"));
            }
            map.insert(SCHEMA_VERSION_FIELD.into(), Value::from(self.current()));
            return serde_json::to_string(&map).map_err(|e| self.corrupt(id, e));
        }
        let rest = rest.trim_start();
        let sep = if rest.starts_with('}') { "" } else { "," };
        Ok(format!(
            "{{\"{SCHEMA_VERSION_FIELD}\":{}{sep}{rest}",
            self.current()
        ))
    }

    /// Reads a stored document: checks its version, upgrades it to the current one and
    /// returns the object without the `schema_version` field.
    pub fn upgrade(&self, id: &str, json: &str) -> Result<Map<String, Value>, StoreError> {
        let mut map: Map<String, Value> =
            serde_json::from_str(json).map_err(|e| self.corrupt(id, e))?;
        let found = match map.remove(SCHEMA_VERSION_FIELD) {
            None => 1,
            Some(v) => v
                .as_u64()
                .filter(|v| *v >= 1)
                .ok_or_else(|| self.corrupt(id, format!("schema_version {v} is not a version")))?,
        };
        if found > self.current() {
            return Err(StoreError::UnsupportedSchema {
                what: self.what,
                id: id.to_owned(),
                found,
                supported: self.current(),
            });
        }
        for (step, upgrade) in self.upgrades.iter().enumerate().skip((found - 1) as usize) {
            upgrade(&mut map).map_err(|e| {
                self.corrupt(id, format!("upgrade from version {} failed: {e}", step + 1))
            })?;
        }
        Ok(map)
    }

    /// Reads a stored document into `T` (see [`upgrade`](Self::upgrade)).
    ///
    /// A document at the current version (every document this build wrote) is read straight
    /// into `T` (which must then ignore the `schema_version` field): its version is read from
    /// its first bytes when it begins as this build writes it (`{"schema_version":N,`), else
    /// by a pass over the document (nothing else kept). An intermediate map of every field —
    /// the general path, for older documents, for a `T` that refuses unknown fields and for
    /// every error — costs two to three times as much, and the API reads a page of documents
    /// per request (the engine's writer one per worker it saves).
    pub fn decode<T: DeserializeOwned>(&self, id: &str, json: &str) -> Result<T, StoreError> {
        if (self.begins_at_current(json)
            || serde_json::from_str::<VersionOnly>(json)
                .is_ok_and(|v| v.schema_version == Some(self.current())))
            && let Ok(value) = serde_json::from_str::<T>(json)
        {
            return Ok(value);
        }
        let map = self.upgrade(id, json)?;
        serde_json::from_value(Value::Object(map)).map_err(|e| self.corrupt(id, e))
    }

    /// Whether `json` begins as [`stamp`](Self::stamp) writes it at the current version:
    /// `{"schema_version":N` followed by `,` or `}`.
    fn begins_at_current(&self, json: &str) -> bool {
        let Some(rest) = json.strip_prefix(VERSION_PREFIX) else {
            return false;
        };
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        matches!(rest.as_bytes().get(digits), Some(b',' | b'}'))
            && rest[..digits].parse::<u64>().ok() == Some(self.current())
    }

    fn corrupt(&self, id: &str, err: impl ToString) -> StoreError {
        StoreError::Corrupt {
            what: self.what,
            id: id.to_owned(),
            message: err.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    /// Version 3 of a toy document: `name` (v1) became `title` (v2), then `tags` appeared as a
    /// required field (v3).
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        title: String,
        tags: Vec<String>,
    }

    fn rename_name_to_title(map: &mut Map<String, Value>) -> Result<(), String> {
        let name = map.remove("name").ok_or("no name")?;
        map.insert("title".into(), name);
        Ok(())
    }

    fn add_tags(map: &mut Map<String, Value>) -> Result<(), String> {
        map.entry("tags").or_insert_with(|| Value::Array(vec![]));
        Ok(())
    }

    const TOY: DocSchema = DocSchema {
        what: "toy",
        upgrades: &[rename_name_to_title, add_tags],
    };

    #[test]
    fn documents_should_be_written_with_the_current_version() {
        let doc = Doc {
            title: "a".into(),
            tags: vec!["x".into()],
        };
        let text = TOY.encode("1", &doc).unwrap();
        let raw: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(raw["schema_version"], 3);
        assert_eq!(TOY.decode::<Doc>("1", &text).unwrap(), doc);
        assert_eq!(TOY.stamp("1", " { } ").unwrap(), "{\"schema_version\":3}");
    }

    #[test]
    fn older_documents_should_be_upgraded_step_by_step() {
        let want = Doc {
            title: "old".into(),
            tags: vec![],
        };
        // No version at all counts as version 1.
        assert_eq!(TOY.decode::<Doc>("1", r#"{"name":"old"}"#).unwrap(), want);
        assert_eq!(
            TOY.decode::<Doc>("1", r#"{"schema_version":1,"name":"old"}"#)
                .unwrap(),
            want
        );
        assert_eq!(
            TOY.decode::<Doc>("1", r#"{"schema_version":2,"title":"old"}"#)
                .unwrap(),
            want
        );
    }

    /// The toy's current shape without `deny_unknown_fields` (as `Worker`): read directly.
    #[derive(Debug, PartialEq, Deserialize)]
    struct Lenient {
        title: String,
        tags: Vec<String>,
    }

    #[test]
    fn a_current_document_should_read_the_same_directly_as_through_the_upgrade_path() {
        let text = r#"{"schema_version":3,"title":"t","tags":["a","b"]}"#;
        let direct = TOY.decode::<Lenient>("1", text).unwrap();
        let map = TOY.upgrade("1", text).unwrap();
        let general: Lenient = serde_json::from_value(Value::Object(map)).unwrap();
        assert_eq!(direct, general);
        // Older, newer and malformed documents still take the general path.
        assert_eq!(
            TOY.decode::<Lenient>("1", r#"{"name":"old"}"#).unwrap(),
            Lenient {
                title: "old".into(),
                tags: vec![]
            }
        );
        assert!(matches!(
            TOY.decode::<Lenient>("1", r#"{"schema_version":4,"title":"x","tags":[]}"#),
            Err(StoreError::UnsupportedSchema { found: 4, .. })
        ));
        assert!(matches!(
            TOY.decode::<Lenient>("1", r#"{"schema_version":3,"title":1,"tags":[]}"#),
            Err(StoreError::Corrupt { .. })
        ));
    }

    /// The decoder reads the version of a document this build wrote from its first bytes
    /// (no pass over the document); anything else takes the general path.
    #[test]
    fn a_document_this_build_wrote_should_show_its_version_in_its_first_bytes() {
        assert_eq!(VERSION_PREFIX, format!("{{\"{SCHEMA_VERSION_FIELD}\":"));
        let v2 = DocSchema {
            what: "thing",
            upgrades: &[add_tags],
        };
        let written = v2.encode("a", &serde_json::json!({"name": "x"})).unwrap();
        assert!(v2.begins_at_current(&written), "{written}");
        assert!(v2.begins_at_current(&v2.stamp("a", "{}").unwrap()));
        for other in [
            r#"{"schema_version":1,"name":"x"}"#,
            r#"{"schema_version":20,"name":"x"}"#,
            r#"{"schema_version":2 ,"name":"x"}"#,
            r#"{"name":"x","schema_version":2}"#,
            r#"{ "schema_version":2,"name":"x"}"#,
            r#"{"schema_version":"#,
        ] {
            assert!(!v2.begins_at_current(other), "{other}");
        }
        // A later key of the same name in a document that begins at the current version is
        // not looked for (this build never writes one: `stamp` refuses a second).
        #[derive(Deserialize, Debug, PartialEq)]
        struct Named {
            name: String,
        }
        let read: Named = v2.decode("a", &written).unwrap();
        assert_eq!(read.name, "x");
        let spaced: Named = v2
            .decode("a", r#"{ "schema_version": 2, "name": "x" }"#)
            .unwrap();
        assert_eq!(spaced, read, "the general path still reads it");
    }

    #[test]
    fn a_newer_document_should_be_refused_clearly() {
        match TOY.decode::<Doc>("7", r#"{"schema_version":4,"title":"x","tags":[]}"#) {
            Err(
                e @ StoreError::UnsupportedSchema {
                    found: 4,
                    supported: 3,
                    ..
                },
            ) => {
                let text = e.to_string();
                assert!(text.contains("toy 7"), "{text}");
                assert!(text.contains("version 4"), "{text}");
            }
            other => panic!("expected UnsupportedSchema, got {other:?}"),
        }
    }

    #[test]
    fn malformed_versions_and_documents_should_be_corrupt() {
        for bad in [
            r#"{"schema_version":0,"title":"x","tags":[]}"#,
            r#"{"schema_version":"2","title":"x","tags":[]}"#,
            r#"{"schema_version":-1}"#,
            r#"[1,2]"#,
            "not json",
            r#"{"schema_version":1}"#, // the v1 → v2 step needs a name
        ] {
            assert!(
                matches!(TOY.decode::<Doc>("1", bad), Err(StoreError::Corrupt { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            TOY.stamp("1", "[1]"),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            TOY.stamp("1", r#"{"schema_version":1}"#),
            Err(StoreError::Corrupt { .. })
        ));
        // The field name inside a value is not the field itself.
        let text = TOY
            .stamp("1", r#"{"title":"\"schema_version\"","tags":[]}"#)
            .unwrap();
        assert_eq!(
            TOY.decode::<Doc>("1", &text).unwrap().title,
            "\"schema_version\""
        );
    }
}
