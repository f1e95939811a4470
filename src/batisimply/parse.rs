//! Tolerant parsing of API answers: one bad record does not spoil a list.

use serde_json::Value;

use super::api;
use super::error::{BatisimplyError, RecordError};
use super::model::{FromWire, Listing};

/// Reads a record id as text, whatever its JSON type.
fn record_id(value: &Value) -> Option<String> {
    match value.get(api::FIELD_ID)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Parses one record, naming the record and field on failure.
pub(crate) fn parse_record<T: FromWire>(value: Value) -> Result<T, RecordError> {
    let id = record_id(&value);
    let wire: T::Wire = serde_path_to_error::deserialize(value).map_err(|err| RecordError {
        record_id: id.clone(),
        field: err.path().to_string(),
        reason: err.inner().to_string(),
    })?;
    T::from_wire(wire, id)
}

/// Extracts the record array of an answer: a bare array or a wrapper object.
pub(crate) fn list_values(body: &[u8]) -> Result<Vec<Value>, BatisimplyError> {
    let value: Value = serde_json::from_slice(body).map_err(BatisimplyError::decode)?;
    match value {
        Value::Array(items) => Ok(items),
        Value::Object(mut map) => api::LIST_WRAPPER_KEYS
            .iter()
            .find_map(|key| match map.remove(*key) {
                Some(Value::Array(items)) => Some(items),
                _ => None,
            })
            .ok_or_else(|| BatisimplyError::decode("object answer without a record list")),
        _ => Err(BatisimplyError::decode(
            "answer is neither a list nor an object",
        )),
    }
}

/// Parses a list answer into records and per-record errors.
pub(crate) fn parse_list<T: FromWire>(body: &[u8]) -> Result<Listing<T>, BatisimplyError> {
    let mut listing = Listing::default();
    for value in list_values(body)? {
        match parse_record::<T>(value) {
            Ok(record) => listing.records.push(record),
            Err(err) => listing.rejected.push(err),
        }
    }
    Ok(listing)
}

/// Parses a single-record answer.
pub(crate) fn parse_one<T: FromWire>(body: &[u8]) -> Result<T, BatisimplyError> {
    let value: Value = serde_json::from_slice(body).map_err(BatisimplyError::decode)?;
    parse_record(value).map_err(BatisimplyError::decode)
}
