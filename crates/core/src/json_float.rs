//! `#[serde(with = "crate::json_float")]`: an `f64` that survives JSON, NaN and infinities
//! included (written as the strings `"NaN"`, `"+Inf"`, `"-Inf"`, as Prometheus does).

// One implementation, in canary-judge (which canary-core depends on): comparisons' results and
// the journal's readings write numbers alike.
pub use canary_judge::json_float::{deserialize, serialize};

/// The same for `Option<f64>`.
pub mod option {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "super")] f64);
        Ok(Option::<W>::deserialize(d)?.map(|W(v)| v))
    }
}
