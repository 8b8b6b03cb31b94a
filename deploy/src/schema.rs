//! JSON Schemas (draft 2020-12) of every answers payload, generated from the
//! payload types so that the schema and the parser can never disagree.

use schemars::JsonSchema;

/// The draft 2020-12 schema of `T`.
pub fn schema_for<T: JsonSchema>() -> serde_json::Value {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>();
    schema.to_value()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::TrafficSetAnswers;

    #[test]
    fn schemas_declare_draft_2020_12_and_forbid_unknown_fields() {
        let schema = schema_for::<TrafficSetAnswers>();
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(schema["additionalProperties"], false);
        let required = schema["required"].as_array().expect("required list");
        assert!(required.iter().any(|r| r == "idempotency_key"));
    }
}
