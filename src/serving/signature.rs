//! A model's input/output signature, and the two request shapes that are decoded against it into
//! one columnar [`Batch`]: records (`[{"field": value, ...}]`, the friendly endpoint and streams)
//! and Open Inference Protocol v2 tensors (named, with shape, datatype and row-major data).
//! Every refusal names the field and says what was expected.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Tensor element types, named as the Open Inference Protocol names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DType {
    #[serde(rename = "BYTES")]
    Bytes,
    #[serde(rename = "INT64")]
    Int64,
    #[serde(rename = "FP64")]
    Fp64,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::Bytes => "BYTES",
            DType::Int64 => "INT64",
            DType::Fp64 => "FP64",
        }
    }
    fn what(self) -> &'static str {
        match self {
            DType::Bytes => "a string",
            DType::Int64 => "an integer",
            DType::Fp64 => "a number",
        }
    }
    /// OIP datatypes a client may send for a field of this type.
    fn accepts(self, oip: &str) -> bool {
        const INTS: &[&str] = &["INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"];
        match self {
            DType::Bytes => oip == "BYTES",
            DType::Int64 => INTS.contains(&oip),
            DType::Fp64 => INTS.contains(&oip) || matches!(oip, "FP16" | "FP32" | "FP64"),
        }
    }
}

/// One named input or output. `shape` is per record: `[]` a scalar, `[-1]` a sequence of any
/// length, `[10]` exactly ten values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    pub datatype: DType,
    pub shape: Vec<i64>,
    /// A missing value may be sent as null.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nullable: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub doc: String,
}

impl Field {
    pub fn scalar(name: &str, datatype: DType) -> Field {
        Field { name: name.into(), datatype, shape: vec![], nullable: false, doc: String::new() }
    }
    pub fn seq(name: &str, datatype: DType, len: i64) -> Field {
        Field { name: name.into(), datatype, shape: vec![len], nullable: false, doc: String::new() }
    }
    pub fn nullable(mut self) -> Field {
        self.nullable = true;
        self
    }
    pub fn doc(mut self, doc: &str) -> Field {
        self.doc = doc.into();
        self
    }
    fn expected(&self) -> String {
        match self.shape.first() {
            None => format!("{}{}", self.datatype.what(), if self.nullable { " or null" } else { "" }),
            Some(-1) => {
                format!("a list of {}s", self.datatype.what().trim_start_matches("an ").trim_start_matches("a "))
            }
            Some(n) => {
                format!("a list of {n} {}s", self.datatype.what().trim_start_matches("an ").trim_start_matches("a "))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    pub inputs: Vec<Field>,
    pub outputs: Vec<Field>,
}

impl Signature {
    /// OIP metadata: shapes with the batch dimension (-1) first.
    pub fn oip_tensors(fields: &[Field]) -> Vec<Value> {
        fields
            .iter()
            .map(|f| {
                let mut shape = vec![-1];
                shape.extend(&f.shape);
                json!({"name": f.name, "datatype": f.datatype.name(), "shape": shape})
            })
            .collect()
    }
}

/// The values of one input for every record. Missing floats are NaN.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    Text(Vec<String>),
    Int(Vec<i64>),
    Float(Vec<f64>),
    FloatSeq(Vec<Vec<f64>>),
}

/// Decoded inputs, one column per signature input, all of `rows` length.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub rows: usize,
    pub columns: BTreeMap<String, Column>,
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::Text(v) => v.len(),
            Column::Int(v) => v.len(),
            Column::Float(v) => v.len(),
            Column::FloatSeq(v) => v.len(),
        }
    }
}

impl Batch {
    /// Every column has a value per row (decoding guarantees it; predictions check it).
    pub fn check(&self) -> Result<(), String> {
        match self.columns.iter().find(|(_, c)| c.len() != self.rows) {
            Some((name, c)) => Err(format!("input `{name}` has {} rows, expected {}", c.len(), self.rows)),
            None => Ok(()),
        }
    }

    pub fn text(&self, name: &str) -> &[String] {
        match self.columns.get(name) {
            Some(Column::Text(v)) => v,
            _ => &[],
        }
    }
    pub fn ints(&self, name: &str) -> &[i64] {
        match self.columns.get(name) {
            Some(Column::Int(v)) => v,
            _ => &[],
        }
    }
    pub fn floats(&self, name: &str) -> &[f64] {
        match self.columns.get(name) {
            Some(Column::Float(v)) => v,
            _ => &[],
        }
    }
    pub fn seqs(&self, name: &str) -> &[Vec<f64>] {
        match self.columns.get(name) {
            Some(Column::FloatSeq(v)) => v,
            _ => &[],
        }
    }
}

/// One output for every record, row-major: `per_row` values each.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub name: String,
    pub per_row: usize,
    pub data: Vec<f64>,
}

fn as_int(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64))
}

/// Decode records against the inputs. `at` names the first record's position (for streams, the
/// line number) in messages.
pub fn decode_records(sig: &Signature, records: &[Value], first: usize) -> Result<Batch, String> {
    let mut cols: BTreeMap<String, Column> = sig
        .inputs
        .iter()
        .map(|f| {
            let c = match (f.datatype, f.shape.is_empty()) {
                (DType::Bytes, _) => Column::Text(Vec::with_capacity(records.len())),
                (DType::Int64, _) => Column::Int(Vec::with_capacity(records.len())),
                (DType::Fp64, true) => Column::Float(Vec::with_capacity(records.len())),
                (DType::Fp64, false) => Column::FloatSeq(Vec::with_capacity(records.len())),
            };
            (f.name.clone(), c)
        })
        .collect();
    for (i, rec) in records.iter().enumerate() {
        let at = first + i;
        let Some(obj) = rec.as_object() else {
            return Err(format!("record {at} must be an object of named fields, got {}", kind_of(rec)));
        };
        if let Some(extra) = obj.keys().find(|k| !sig.inputs.iter().any(|f| &f.name == *k)) {
            return Err(format!("record {at}: unknown field `{extra}`; the model takes {}", field_list(&sig.inputs)));
        }
        for f in &sig.inputs {
            let v = obj.get(&f.name).ok_or_else(|| {
                format!("record {at}: missing field `{}` ({}, {})", f.name, f.datatype.name(), f.expected())
            })?;
            let bad = || format!("record {at}: field `{}` must be {}, got {}", f.name, f.expected(), short(v));
            let col = cols.get_mut(&f.name).expect("one column per input");
            match col {
                Column::Text(c) => c.push(v.as_str().ok_or_else(bad)?.to_string()),
                Column::Int(c) => c.push(as_int(v).ok_or_else(bad)?),
                Column::Float(c) => match v {
                    Value::Null if f.nullable => c.push(f64::NAN),
                    _ => c.push(v.as_f64().ok_or_else(bad)?),
                },
                Column::FloatSeq(c) => {
                    let arr = v.as_array().ok_or_else(bad)?;
                    let vals: Option<Vec<f64>> = arr.iter().map(Value::as_f64).collect();
                    let vals = vals.ok_or_else(bad)?;
                    check_len(f, vals.len()).map_err(|e| format!("record {at}: {e}"))?;
                    c.push(vals);
                }
            }
        }
    }
    Ok(Batch { rows: records.len(), columns: cols })
}

fn check_len(f: &Field, n: usize) -> Result<(), String> {
    match f.shape.first() {
        Some(&want) if want >= 0 && want as usize != n => {
            Err(format!("field `{}` must have {want} values, got {n}", f.name))
        }
        Some(_) if n == 0 => Err(format!("field `{}` must not be empty", f.name)),
        _ => Ok(()),
    }
}

fn field_list(fields: &[Field]) -> String {
    fields.iter().map(|f| format!("`{}` ({})", f.name, f.datatype.name())).collect::<Vec<_>>().join(", ")
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 { format!("{}… ({})", &s[..s.floor_char_boundary(40)], kind_of(v)) } else { s }
}

/// One input tensor of an OIP inference request.
#[derive(Debug, Deserialize)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    pub data: Value,
    #[serde(default)]
    #[allow(dead_code)]
    pub parameters: Option<Value>,
}

/// An OIP v2 inference request.
#[derive(Debug, Deserialize)]
pub struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    pub parameters: Option<Value>,
    pub inputs: Vec<Tensor>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Debug, Deserialize)]
pub struct RequestedOutput {
    pub name: String,
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| flatten(x, out)),
        x => out.push(x),
    }
}

/// Decode OIP input tensors: every signature input exactly once, a shape of `[rows, ...per
/// record]`, a compatible datatype, and as many values (flat row-major or nested) as the shape holds.
pub fn decode_tensors(sig: &Signature, inputs: &[Tensor]) -> Result<Batch, String> {
    for t in inputs {
        if !sig.inputs.iter().any(|f| f.name == t.name) {
            return Err(format!("unknown input `{}`; the model takes {}", t.name, field_list(&sig.inputs)));
        }
        if inputs.iter().filter(|u| u.name == t.name).count() > 1 {
            return Err(format!("input `{}` is given more than once", t.name));
        }
    }
    let mut rows: Option<(usize, &str)> = None;
    let mut cols = BTreeMap::new();
    for f in &sig.inputs {
        let t = inputs
            .iter()
            .find(|t| t.name == f.name)
            .ok_or_else(|| format!("missing input `{}` ({}, shape {:?})", f.name, f.datatype.name(), batch_shape(f)))?;
        if !f.datatype.accepts(&t.datatype) {
            return Err(format!("input `{}` has datatype {}; expected {}", f.name, t.datatype, f.datatype.name()));
        }
        if t.shape.len() != f.shape.len() + 1 || t.shape.iter().any(|d| *d < 0) {
            return Err(format!("input `{}` has shape {:?}; expected {:?}", f.name, t.shape, batch_shape(f)));
        }
        let n = t.shape[0] as usize;
        match rows {
            Some((m, other)) if m != n => {
                return Err(format!(
                    "input `{}` has {n} rows but `{other}` has {m}; every input needs the same first dimension",
                    f.name
                ));
            }
            _ => rows = Some((n, &f.name)),
        }
        if let Some(len) = t.shape.get(1) {
            check_len(f, *len as usize).map_err(|e| format!("input {e}"))?;
        }
        // The declared shape is the client's word: count what was sent before trusting it.
        let mut flat = Vec::new();
        flatten(&t.data, &mut flat);
        let per = t.shape[1..].iter().try_fold(1usize, |a, d| a.checked_mul(*d as usize));
        let total = per.and_then(|p| p.checked_mul(n));
        let (Some(per), Some(total)) = (per, total) else {
            return Err(format!("input `{}` has shape {:?}, far larger than any request", f.name, t.shape));
        };
        if flat.len() != total {
            return Err(format!(
                "input `{}` has {} values but its shape {:?} holds {total}",
                f.name,
                flat.len(),
                t.shape
            ));
        }
        let bad =
            |i: usize| format!("input `{}`: value {i} must be {}, got {}", f.name, f.datatype.what(), short(flat[i]));
        let col = match (f.datatype, f.shape.is_empty()) {
            (DType::Bytes, _) => Column::Text(
                (0..flat.len())
                    .map(|i| flat[i].as_str().map(str::to_string).ok_or_else(|| bad(i)))
                    .collect::<Result<_, _>>()?,
            ),
            (DType::Int64, _) => {
                Column::Int((0..flat.len()).map(|i| as_int(flat[i]).ok_or_else(|| bad(i))).collect::<Result<_, _>>()?)
            }
            (DType::Fp64, scalar) => {
                let vals = (0..flat.len())
                    .map(|i| match flat[i] {
                        Value::Null if f.nullable => Ok(f64::NAN),
                        v => v.as_f64().ok_or_else(|| bad(i)),
                    })
                    .collect::<Result<Vec<f64>, _>>()?;
                if scalar {
                    Column::Float(vals)
                } else {
                    Column::FloatSeq(vals.chunks(per.max(1)).map(<[f64]>::to_vec).collect())
                }
            }
        };
        cols.insert(f.name.clone(), col);
    }
    Ok(Batch { rows: rows.map(|r| r.0).unwrap_or(0), columns: cols })
}

fn batch_shape(f: &Field) -> Vec<i64> {
    let mut s = vec![-1];
    s.extend(&f.shape);
    s
}

/// OIP response tensors, optionally only the requested outputs.
pub fn encode_tensors(
    outputs: &[Output],
    rows: usize,
    wanted: Option<&[RequestedOutput]>,
) -> Result<Vec<Value>, String> {
    // An empty list asks for nothing in particular: every output, as the protocol says.
    let wanted = wanted.filter(|w| !w.is_empty());
    if let Some(w) = wanted
        && let Some(bad) = w.iter().find(|r| !outputs.iter().any(|o| o.name == r.name))
    {
        let names: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
        return Err(format!("unknown output `{}`; the model gives {}", bad.name, names.join(", ")));
    }
    Ok(outputs
        .iter()
        .filter(|o| wanted.is_none_or(|w| w.iter().any(|r| r.name == o.name)))
        .map(|o| {
            let shape: Vec<usize> = if o.per_row == 1 { vec![rows] } else { vec![rows, o.per_row] };
            json!({"name": o.name, "datatype": "FP64", "shape": shape, "data": o.data})
        })
        .collect())
}

/// One prediction per record: the value itself when the model has one scalar output, else an
/// object of every output.
pub fn encode_records(outputs: &[Output], rows: usize) -> Vec<Value> {
    (0..rows)
        .map(|i| {
            let one = |o: &Output| -> Value {
                if o.per_row == 1 { json!(o.data[i]) } else { json!(&o.data[i * o.per_row..(i + 1) * o.per_row]) }
            };
            match outputs {
                [o] if o.per_row == 1 => one(o),
                _ => Value::Object(outputs.iter().map(|o| (o.name.clone(), one(o))).collect::<Map<_, _>>()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig() -> Signature {
        Signature {
            inputs: vec![
                Field::scalar("when", DType::Bytes),
                Field::scalar("zone", DType::Int64),
                Field::scalar("people", DType::Fp64).nullable(),
                Field::seq("close", DType::Fp64, -1),
            ],
            outputs: vec![Field::scalar("prediction", DType::Fp64)],
        }
    }

    #[test]
    fn records_decode_and_name_what_is_wrong() {
        let ok = json!([{"when": "2019-01-01 10:00:00", "zone": 5, "people": null, "close": [1.0, 2.0]},
                        {"when": "x", "zone": 7.0, "people": 2, "close": [3]}]);
        let b = decode_records(&sig(), ok.as_array().unwrap(), 0).unwrap();
        assert_eq!(b.rows, 2);
        assert_eq!(b.ints("zone"), &[5, 7]);
        assert!(b.floats("people")[0].is_nan());
        assert_eq!(b.seqs("close")[1], vec![3.0]);
        let err = |v: Value| decode_records(&sig(), v.as_array().unwrap(), 0).unwrap_err();
        let e = err(json!([{"when": "a", "zone": 1, "people": 1}]));
        assert!(e.contains("record 0: missing field `close`"), "{e}");
        let e = err(json!([{"when": "a", "zone": 1, "people": 1, "close": [1], "extra": 1}]));
        assert!(e.contains("unknown field `extra`"), "{e}");
        let e = err(json!([{"when": "a", "zone": "five", "people": 1, "close": [1]}]));
        assert!(e.contains("field `zone` must be an integer, got \"five\""), "{e}");
        let e = err(json!([{"when": "a", "zone": 1.5, "people": 1, "close": [1]}]));
        assert!(e.contains("`zone` must be an integer"), "{e}");
        let e = err(json!([{"when": "a", "zone": 1, "people": 1, "close": []}]));
        assert!(e.contains("must not be empty"), "{e}");
        let e = err(json!([3]));
        assert!(e.contains("record 0 must be an object"), "{e}");
    }

    fn t(name: &str, dt: &str, shape: Vec<i64>, data: Value) -> Tensor {
        Tensor { name: name.into(), shape, datatype: dt.into(), data, parameters: None }
    }

    #[test]
    fn tensors_decode_flat_or_nested_and_check_shapes() {
        let good = vec![
            t("when", "BYTES", vec![2], json!(["a", "b"])),
            t("zone", "INT32", vec![2], json!([1, 2])),
            t("people", "FP32", vec![2], json!([1.0, null])),
            t("close", "FP64", vec![2, 3], json!([[1, 2, 3], [4, 5, 6]])),
        ];
        let b = decode_tensors(&sig(), &good).unwrap();
        assert_eq!(b.rows, 2);
        assert_eq!(b.seqs("close")[1], vec![4.0, 5.0, 6.0]);
        let with = |i: usize, x: Tensor| {
            let mut v = vec![
                t("when", "BYTES", vec![2], json!(["a", "b"])),
                t("zone", "INT32", vec![2], json!([1, 2])),
                t("people", "FP32", vec![2], json!([1.0, null])),
                t("close", "FP64", vec![2, 3], json!([1, 2, 3, 4, 5, 6])),
            ];
            v[i] = x;
            decode_tensors(&sig(), &v).unwrap_err()
        };
        let e = with(1, t("zone", "BYTES", vec![2], json!(["1", "2"])));
        assert!(e.contains("input `zone` has datatype BYTES; expected INT64"), "{e}");
        let e = with(1, t("zone", "INT64", vec![3], json!([1, 2, 3])));
        assert!(e.contains("has 3 rows but `when` has 2"), "{e}");
        let e = with(3, t("close", "FP64", vec![2, 3], json!([1, 2, 3])));
        assert!(e.contains("has 3 values but its shape [2, 3] holds 6"), "{e}");
        let e = with(3, t("close", "FP64", vec![6], json!([1, 2, 3, 4, 5, 6])));
        assert!(e.contains("expected [-1, -1]"), "{e}");
        let e = with(3, t("nope", "FP64", vec![2], json!([1, 2])));
        assert!(e.contains("unknown input `nope`"), "{e}");
        // A declared shape is never trusted for allocation: huge or overflowing shapes are a 400.
        let four = vec![
            t("when", "BYTES", vec![4], json!(["a", "b", "c", "d"])),
            t("zone", "INT64", vec![4], json!([1, 2, 3, 4])),
            t("people", "FP64", vec![4], json!([1, 1, 1, 1])),
            t("close", "FP64", vec![4, i64::MAX], json!([])),
        ];
        let e = decode_tensors(&sig(), &four).unwrap_err();
        assert!(e.contains("far larger than any request"), "{e}");
        let e = with(1, t("zone", "INT64", vec![1_000_000_000_000], json!([])));
        assert!(e.contains("rows but `when` has 2") || e.contains("holds"), "{e}");
        let e = with(0, t("when", "BYTES", vec![2], json!(["a", 5])));
        assert!(e.contains("input `when`: value 1 must be a string, got 5"), "{e}");
    }

    #[test]
    fn outputs_encode_both_ways() {
        let outs = vec![Output { name: "prediction".into(), per_row: 1, data: vec![1.5, 2.5] }];
        assert_eq!(encode_records(&outs, 2), vec![json!(1.5), json!(2.5)]);
        let t = encode_tensors(&outs, 2, None).unwrap();
        assert_eq!(t[0]["shape"], json!([2]));
        let two = vec![
            Output { name: "forecast".into(), per_row: 2, data: vec![1.0, 2.0, 3.0, 4.0] },
            Output { name: "return".into(), per_row: 2, data: vec![0.1, 0.2, 0.3, 0.4] },
        ];
        assert_eq!(encode_records(&two, 2)[1], json!({"forecast": [3.0, 4.0], "return": [0.3, 0.4]}));
        let only = encode_tensors(&two, 2, Some(&[RequestedOutput { name: "return".into() }])).unwrap();
        assert_eq!((only.len(), &only[0]["shape"]), (1, &json!([2, 2])));
        assert!(encode_tensors(&two, 2, Some(&[RequestedOutput { name: "x".into() }])).is_err());
    }

    /// JSON of any shape, biased towards the signature's field names and types.
    fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let key = prop_oneof![Just("when"), Just("zone"), Just("people"), Just("close")].prop_map(String::from);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            (-3i64..300).prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
            key.clone().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(prop_oneof![key.clone(), "[a-z]{1,5}"], inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 600, ..Default::default() })]

        /// Any records either decode into a batch of that many rows or get an error message;
        /// never a panic.
        #[test]
        fn any_records_decode_or_say_why(records in proptest::collection::vec(arb_json(), 0..6)) {
            match decode_records(&sig(), &records, 0) {
                Ok(b) => {
                    proptest::prop_assert_eq!(b.rows, records.len());
                    proptest::prop_assert!(b.check().is_ok());
                }
                Err(e) => proptest::prop_assert!(!e.is_empty()),
            }
        }

        /// Any OIP request body: parsed tensors decode or get an error message; never a panic.
        #[test]
        fn any_tensors_decode_or_say_why(
            tensors in proptest::collection::vec(
                (
                    proptest::prop_oneof![proptest::strategy::Just("when"), proptest::strategy::Just("zone"), proptest::strategy::Just("people"), proptest::strategy::Just("close"), proptest::strategy::Just("x")],
                    proptest::prop_oneof![proptest::strategy::Just("BYTES"), proptest::strategy::Just("INT64"), proptest::strategy::Just("INT32"), proptest::strategy::Just("FP64"), proptest::strategy::Just("FP32"), proptest::strategy::Just("BOOL"), proptest::strategy::Just("FP16")],
                    proptest::collection::vec(-2i64..6, 0..3),
                    arb_json(),
                ),
                0..6,
            )
        ) {
            let body: Vec<Value> = tensors
                .into_iter()
                .map(|(name, dt, shape, data)| json!({"name": name, "datatype": dt, "shape": shape, "data": data}))
                .collect();
            let Ok(parsed) = serde_json::from_value::<Vec<Tensor>>(Value::Array(body)) else { return Ok(()) };
            match decode_tensors(&sig(), &parsed) {
                Ok(b) => proptest::prop_assert!(b.check().is_ok()),
                Err(e) => proptest::prop_assert!(!e.is_empty()),
            }
        }
    }
}
