//! Query results in Prometheus' data model, serialised exactly as Prometheus' HTTP API v1 does.
//!
//! The same types come back from the embedded evaluator and from a remote Prometheus, so callers
//! cannot tell the two apart.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, Prometheus' own time unit.
pub type Millis = i64;

/// One label: name and value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    pub name: String,
    pub value: String,
}

/// A label set, kept sorted by name with unique names — the identity of a series.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Vec<Label>);

impl Labels {
    /// Builds a label set from pairs in any order; a later duplicate name replaces an earlier one.
    /// Empty values are dropped, as Prometheus treats `l=""` as the label being absent.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut labels = Labels::default();
        for (name, value) in pairs {
            labels.set(name.into(), value.into());
        }
        labels
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|l| l.name.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].value.as_str())
    }

    /// Sets `name` to `value`; an empty value removes the label.
    pub fn set(&mut self, name: String, value: String) {
        match self.0.binary_search_by(|l| l.name.cmp(&name)) {
            Ok(i) if value.is_empty() => {
                self.0.remove(i);
            }
            Ok(i) => self.0[i].value = value,
            Err(_) if value.is_empty() => {}
            Err(i) => self.0.insert(i, Label { name, value }),
        }
    }

    /// Removes `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        match self.0.binary_search_by(|l| l.name.as_str().cmp(name)) {
            Ok(i) => Some(self.0.remove(i).value),
            Err(_) => None,
        }
    }

    /// Labels in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Labels {
    /// `{a="1", b="2"}`, with the metric name in front when present, as Prometheus prints series.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.get("__name__") {
            f.write_str(name)?;
        }
        let mut rest = self.0.iter().filter(|l| l.name != "__name__").peekable();
        if rest.peek().is_none() && self.get("__name__").is_some() {
            return Ok(());
        }
        f.write_str("{")?;
        let mut first = true;
        for l in rest {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{}={:?}", l.name, l.value)?;
        }
        f.write_str("}")
    }
}

impl Serialize for Labels {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for l in &self.0 {
            map.serialize_entry(&l.name, &l.value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<String, String>::deserialize(d)?;
        Ok(Labels::from_pairs(map))
    }
}

/// One point of a series: time and value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub t: Millis,
    pub v: f64,
}

/// An instant-vector element.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub metric: Labels,
    #[serde(rename = "value", with = "point_json")]
    pub point: Point,
}

/// A range-vector element.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub metric: Labels,
    #[serde(rename = "values", with = "points_json")]
    pub points: Vec<Point>,
}

/// The result of a query, as Prometheus types it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(Point),
    String { t: Millis, v: String },
    Vector(Vec<Sample>),
    Matrix(Vec<Series>),
}

impl Value {
    /// Prometheus' `resultType` name.
    pub fn result_type(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "scalar",
            Value::String { .. } => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

/// Formats a sample value as Prometheus does (`strconv.FormatFloat(v, 'f', -1, 64)`).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        // Rust's shortest round-trip representation, never in exponent form — Go's 'f', -1.
        format!("{v}")
    }
}

/// Parses a sample value as Prometheus writes it.
pub fn parse_value(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

fn seconds(t: Millis) -> Box<serde_json::value::RawValue> {
    // Prometheus (`jsonutil.MarshalTimestamp`) writes whole seconds, then `.` and three digits
    // of milliseconds when there are any: 1435781451, 1435781451.781, 1435781451.500.
    let sign = if t < 0 { "-" } else { "" };
    let ms = t.unsigned_abs();
    let text = if ms.is_multiple_of(1000) {
        format!("{sign}{}", ms / 1000)
    } else {
        format!("{sign}{}.{:03}", ms / 1000, ms % 1000)
    };
    // The text is always a valid JSON number.
    serde_json::value::RawValue::from_string(text)
        .unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned())
}

/// Scalars and strings carry their time as Go's `strconv.FormatFloat(t/1000, 'f', -1, 64)`:
/// 1435781451, 1435781451.5 (unlike vector and matrix points).
fn scalar_seconds(t: Millis) -> Box<serde_json::value::RawValue> {
    let text = format!("{}", t as f64 / 1000.0);
    serde_json::value::RawValue::from_string(text)
        .unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned())
}

fn millis<E: de::Error>(secs: f64) -> Result<Millis, E> {
    if secs.is_finite() {
        Ok((secs * 1000.0).round() as Millis)
    } else {
        Err(E::custom("timestamp is not finite"))
    }
}

mod point_json {
    use super::*;

    pub fn serialize<S: Serializer>(p: &Point, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(2))?;
        seq.serialize_element(&seconds(p.t))?;
        seq.serialize_element(&format_value(p.v))?;
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Point, D::Error> {
        let (t, v): (f64, String) = Deserialize::deserialize(d)?;
        let v = parse_value(&v).ok_or_else(|| de::Error::custom(format!("bad value {v:?}")))?;
        Ok(Point { t: millis(t)?, v })
    }
}

mod points_json {
    use super::*;

    #[derive(Serialize)]
    struct Ser<'a>(#[serde(with = "point_json")] &'a Point);

    #[derive(Deserialize)]
    struct De(#[serde(with = "point_json")] Point);

    pub fn serialize<S: Serializer>(ps: &[Point], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(ps.len()))?;
        for p in ps {
            seq.serialize_element(&Ser(p))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Point>, D::Error> {
        let v: Vec<De> = Deserialize::deserialize(d)?;
        Ok(v.into_iter().map(|De(p)| p).collect())
    }
}

/// The `data` object of a `/api/v1/query` or `/api/v1/query_range` response.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryData(pub Value);

impl Serialize for QueryData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("resultType", self.0.result_type())?;
        match &self.0 {
            Value::Scalar(p) => {
                map.serialize_entry("result", &(scalar_seconds(p.t), format_value(p.v)))?
            }
            Value::String { t, v } => map.serialize_entry("result", &(scalar_seconds(*t), v))?,
            Value::Vector(samples) => map.serialize_entry("result", samples)?,
            Value::Matrix(series) => map.serialize_entry("result", series)?,
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for QueryData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Raw {
            result_type: String,
            result: serde_json::Value,
        }
        let raw = Raw::deserialize(d)?;
        let value = match raw.result_type.as_str() {
            "scalar" => {
                #[derive(Deserialize)]
                struct P(#[serde(with = "point_json")] Point);
                let P(p) = serde_json::from_value(raw.result).map_err(de::Error::custom)?;
                Value::Scalar(p)
            }
            "string" => {
                let (t, v): (f64, String) =
                    serde_json::from_value(raw.result).map_err(de::Error::custom)?;
                Value::String { t: millis(t)?, v }
            }
            "vector" => {
                Value::Vector(serde_json::from_value(raw.result).map_err(de::Error::custom)?)
            }
            "matrix" => {
                Value::Matrix(serde_json::from_value(raw.result).map_err(de::Error::custom)?)
            }
            other => return Err(de::Error::custom(format!("unknown resultType {other:?}"))),
        };
        Ok(QueryData(value))
    }
}

/// A whole successful API response body: `{"status":"success","data":{...}}`.
pub fn api_response_json(value: &Value) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        status: &'static str,
        data: &'a QueryData,
    }
    let data = QueryData(value.clone());
    // Serialising plain structs, strings and finite numbers cannot fail.
    serde_json::to_string(&Body {
        status: "success",
        data: &data,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_round_trips_through_prometheus_json() {
        let v = Value::Vector(vec![Sample {
            metric: Labels::from_pairs([("__name__", "up"), ("job", "relay")]),
            point: Point {
                t: 1_435_781_451_781,
                v: f64::NAN,
            },
        }]);
        let json = api_response_json(&v);
        assert_eq!(
            json,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"relay"},"value":[1435781451.781,"NaN"]}]}}"#
        );
        let body: serde_json::Value = serde_json::from_str(&json).unwrap();
        let back: QueryData = serde_json::from_value(body["data"].clone()).unwrap();
        match back.0 {
            Value::Vector(s) => {
                assert_eq!(s[0].metric.get("job"), Some("relay"));
                assert!(s[0].point.v.is_nan());
                assert_eq!(s[0].point.t, 1_435_781_451_781);
            }
            other => panic!("expected vector, got {other:?}"),
        }
    }

    #[test]
    fn timestamps_format_like_prometheus() {
        let point = |t| {
            api_response_json(&Value::Vector(vec![Sample {
                metric: Labels::default(),
                point: Point { t, v: 1.0 },
            }]))
        };
        assert!(point(1_700_000_016_000).contains("[1700000016,"));
        assert!(point(1_700_000_016_500).contains("[1700000016.500,"));
        assert!(point(1_700_000_016_007).contains("[1700000016.007,"));
        let scalar = |t| api_response_json(&Value::Scalar(Point { t, v: 2.0 }));
        assert!(scalar(1_700_000_016_500).contains(r#""result":[1700000016.5,"2"]"#));
        assert!(scalar(1_700_000_016_000).contains(r#""result":[1700000016,"2"]"#));
        let string = api_response_json(&Value::String {
            t: 1_500,
            v: "abc".into(),
        });
        assert_eq!(
            string,
            r#"{"status":"success","data":{"resultType":"string","result":[1.5,"abc"]}}"#
        );
    }

    #[test]
    fn values_format_like_go() {
        assert_eq!(format_value(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(format_value(-0.0), "-0");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(3.0), "3");
    }

    #[test]
    fn empty_label_values_are_absent() {
        let l = Labels::from_pairs([("b", "2"), ("a", ""), ("c", "3")]);
        assert_eq!(l.to_string(), r#"{b="2", c="3"}"#);
        assert_eq!(l.get("a"), None);
    }
}
