//! `#[serde(with = "crate::json_float")]`: an `f64` that survives JSON, NaN and infinities
//! included (written as the strings `"NaN"`, `"+Inf"`, `"-Inf"`, as Prometheus does).

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serializer};

pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_nan() {
        s.serialize_str("NaN")
    } else if *v == f64::INFINITY {
        s.serialize_str("+Inf")
    } else if *v == f64::NEG_INFINITY {
        s.serialize_str("-Inf")
    } else {
        s.serialize_f64(*v)
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        N(f64),
        S(String),
    }
    match Num::deserialize(d)? {
        Num::N(v) => Ok(v),
        Num::S(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "+Inf" | "Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            other => Err(de::Error::custom(format!("not a number: {other:?}"))),
        },
    }
}

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
