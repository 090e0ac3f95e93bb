//! A small reader (and fixture writer) for MATLAB level-5 `.mat` files: just enough for
//! Cars-196's `cars_annos.mat` (struct arrays and cell arrays of char and numeric arrays,
//! optionally zlib-compressed). Format: MathWorks, "MAT-File Format", level 5.

use std::collections::HashMap;
use std::io::{Read, Write};

use flate2::{read::ZlibDecoder, write::ZlibEncoder, Compression};

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;
const MI_UTF16: u32 = 17;

const MX_CELL: u8 = 1;
const MX_STRUCT: u8 = 2;
const MX_CHAR: u8 = 4;
const MX_DOUBLE: u8 = 6;
const MX_UINT64: u8 = 15;

/// A MATLAB array, as far as this reader understands one. Element order is MATLAB's
/// column-major order; `dims` are the array's dimensions.
#[derive(Debug, Clone, PartialEq)]
pub enum MatValue {
    /// Any numeric class (double, single, integers), converted to f64; imaginary parts dropped.
    Numeric { dims: Vec<usize>, data: Vec<f64> },
    /// A char array, read as one string (rows concatenated column-major; a 1 x N array reads
    /// as its text).
    Char { dims: Vec<usize>, text: String },
    /// A struct array: `elements[e][f]` is field `fields[f]` of element `e`.
    Struct { dims: Vec<usize>, fields: Vec<String>, elements: Vec<Vec<MatValue>> },
    /// A cell array.
    Cell { dims: Vec<usize>, items: Vec<MatValue> },
    /// An empty (zero-byte) matrix element.
    Empty,
    /// An array class this reader does not decode (sparse, object, function handles...).
    Unsupported { class: u8 },
}

impl MatValue {
    /// The value as one number (the first element of a numeric array).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            MatValue::Numeric { data, .. } => data.first().copied(),
            _ => None,
        }
    }

    /// The value as text (a char array).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MatValue::Char { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A field of struct element `element`, by name.
    pub fn field(&self, element: usize, name: &str) -> Option<&MatValue> {
        match self {
            MatValue::Struct { fields, elements, .. } => {
                let f = fields.iter().position(|n| n == name)?;
                elements.get(element)?.get(f)
            }
            _ => None,
        }
    }
}

/// Read every named top-level variable of a MAT v5 file held in `bytes`.
/// Errors are plain descriptions; the caller adds the file's path.
pub fn read(bytes: &[u8]) -> Result<HashMap<String, MatValue>, String> {
    if bytes.len() < 128 {
        return Err("shorter than the 128-byte MAT-file header".into());
    }
    let big = match &bytes[126..128] {
        b"IM" => false,
        b"MI" => true,
        _ => return Err("not a MATLAB level-5 MAT-file (no IM/MI endian mark at byte 126)".into()),
    };
    let mut vars = HashMap::new();
    let mut cur = Cursor { data: bytes, pos: 128, big };
    while cur.pos + 8 <= bytes.len() {
        let (ty, body) = cur.element()?;
        let (name, value) = match ty {
            MI_MATRIX => matrix(body, big)?,
            MI_COMPRESSED => {
                let mut inflated = Vec::new();
                ZlibDecoder::new(body)
                    .read_to_end(&mut inflated)
                    .map_err(|e| format!("corrupt compressed element at byte {}: {e}", cur.pos))?;
                let mut inner = Cursor { data: &inflated, pos: 0, big };
                let (ity, ibody) = inner.element()?;
                if ity != MI_MATRIX {
                    continue;
                }
                matrix(ibody, big)?
            }
            _ => continue,
        };
        if !name.is_empty() {
            vars.insert(name, value);
        }
    }
    Ok(vars)
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    big: bool,
}

impl<'a> Cursor<'a> {
    fn u32_at(&self, at: usize) -> Result<u32, String> {
        let b: [u8; 4] = self
            .data
            .get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| format!("truncated data element tag at byte {at}"))?;
        Ok(if self.big { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    }

    /// The next data element: (type, payload). Handles the small-element format and the
    /// 8-byte alignment of ordinary elements (compressed elements are not padded).
    fn element(&mut self) -> Result<(u32, &'a [u8]), String> {
        let first = self.u32_at(self.pos)?;
        if first >> 16 != 0 {
            let (ty, n) = (first & 0xffff, (first >> 16) as usize);
            if n > 4 {
                return Err(format!("small data element at byte {} claims {n} bytes", self.pos));
            }
            let body = self
                .data
                .get(self.pos + 4..self.pos + 4 + n)
                .ok_or_else(|| format!("truncated small data element at byte {}", self.pos))?;
            self.pos += 8;
            return Ok((ty, body));
        }
        let n = self.u32_at(self.pos + 4)? as usize;
        let start = self.pos + 8;
        let body = self
            .data
            .get(start..start.saturating_add(n))
            .ok_or_else(|| format!("data element at byte {} claims {n} bytes past the end", self.pos))?;
        self.pos = if first == MI_COMPRESSED { start + n } else { start + n.div_ceil(8) * 8 };
        Ok((first, body))
    }
}

fn numbers(ty: u32, body: &[u8], big: bool) -> Result<Vec<f64>, String> {
    macro_rules! conv {
        ($t:ty, $n:expr) => {
            body.chunks_exact($n)
                .map(|c| {
                    let a: [u8; $n] = c.try_into().unwrap_or([0; $n]);
                    (if big { <$t>::from_be_bytes(a) } else { <$t>::from_le_bytes(a) }) as f64
                })
                .collect()
        };
    }
    Ok(match ty {
        MI_INT8 => body.iter().map(|&b| b as i8 as f64).collect(),
        MI_UINT8 | MI_UTF8 => body.iter().map(|&b| b as f64).collect(),
        MI_INT16 => conv!(i16, 2),
        MI_UINT16 | MI_UTF16 => conv!(u16, 2),
        MI_INT32 => conv!(i32, 4),
        MI_UINT32 => conv!(u32, 4),
        MI_SINGLE => conv!(f32, 4),
        MI_DOUBLE => conv!(f64, 8),
        MI_INT64 => conv!(i64, 8),
        MI_UINT64 => conv!(u64, 8),
        other => return Err(format!("numeric data of unsupported element type {other}")),
    })
}

/// Decode the payload of an miMATRIX element into (name, value).
fn matrix(body: &[u8], big: bool) -> Result<(String, MatValue), String> {
    if body.is_empty() {
        return Ok((String::new(), MatValue::Empty));
    }
    let mut cur = Cursor { data: body, pos: 0, big };
    let (_, flags) = cur.element()?;
    let flags = numbers(MI_UINT32, flags, big)?;
    let word = flags.first().copied().unwrap_or(0.0) as u32;
    let class = (word & 0xff) as u8;
    let (_, dims) = cur.element()?;
    let dims: Vec<usize> = numbers(MI_INT32, dims, big)?.into_iter().map(|d| d.max(0.0) as usize).collect();
    let count: usize = dims.iter().product();
    let (_, name) = cur.element()?;
    let name = String::from_utf8_lossy(name).trim_end_matches('\0').to_string();
    let value = match class {
        MX_CHAR => {
            let (ty, data) = cur.element()?;
            let text = match ty {
                MI_UTF8 | MI_UINT8 | MI_INT8 => String::from_utf8_lossy(data).into_owned(),
                _ => {
                    let units: Vec<u16> = numbers(ty, data, big)?.into_iter().map(|v| v as u16).collect();
                    String::from_utf16_lossy(&units)
                }
            };
            MatValue::Char { dims, text }
        }
        MX_DOUBLE..=MX_UINT64 => {
            let (ty, data) = cur.element()?;
            let data = numbers(ty, data, big)?;
            if data.len() != count {
                return Err(format!("numeric array `{name}` has {} values for dimensions {dims:?}", data.len()));
            }
            MatValue::Numeric { dims, data }
        }
        MX_STRUCT => {
            let (_, len) = cur.element()?;
            let len = numbers(MI_INT32, len, big)?.first().copied().unwrap_or(0.0) as usize;
            let (_, names) = cur.element()?;
            if len == 0 {
                return Err(format!("struct `{name}` has a zero field-name length"));
            }
            let fields: Vec<String> =
                names.chunks(len).map(|c| String::from_utf8_lossy(c).trim_end_matches('\0').to_string()).collect();
            let mut elements = Vec::with_capacity(count);
            for _ in 0..count {
                let mut row = Vec::with_capacity(fields.len());
                for _ in &fields {
                    let (ty, sub) = cur.element()?;
                    if ty != MI_MATRIX {
                        return Err(format!("struct `{name}` holds a field of element type {ty}"));
                    }
                    row.push(matrix(sub, big)?.1);
                }
                elements.push(row);
            }
            MatValue::Struct { dims, fields, elements }
        }
        MX_CELL => {
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                let (ty, sub) = cur.element()?;
                if ty != MI_MATRIX {
                    return Err(format!("cell array `{name}` holds an element of type {ty}"));
                }
                items.push(matrix(sub, big)?.1);
            }
            MatValue::Cell { dims, items }
        }
        other => MatValue::Unsupported { class: other },
    };
    Ok((name, value))
}

/// Write variables as a little-endian MAT v5 file (char, double, struct and cell values),
/// each variable zlib-compressed when `compress` is set. Used to write test fixtures in the
/// official Cars-196 layout.
pub fn write(vars: &[(&str, MatValue)], compress: bool, out: &mut impl Write) -> std::io::Result<()> {
    let mut header = [b' '; 128];
    let text = b"MATLAB 5.0 MAT-file, written by the stml trainer fixture writer";
    header[..text.len()].copy_from_slice(text);
    header[116..124].fill(0);
    header[124..126].copy_from_slice(&0x0100u16.to_le_bytes());
    header[126..128].copy_from_slice(b"IM");
    out.write_all(&header)?;
    for (name, value) in vars {
        let mut m = Vec::new();
        put_matrix(&mut m, name, value);
        if compress {
            let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
            z.write_all(&m)?;
            let z = z.finish()?;
            out.write_all(&MI_COMPRESSED.to_le_bytes())?;
            out.write_all(&(z.len() as u32).to_le_bytes())?;
            out.write_all(&z)?;
        } else {
            out.write_all(&m)?;
        }
    }
    Ok(())
}

fn put_element(out: &mut Vec<u8>, ty: u32, data: &[u8]) {
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(8) * 8, 0);
}

fn put_matrix(out: &mut Vec<u8>, name: &str, value: &MatValue) {
    let mut body = Vec::new();
    let (class, dims) = match value {
        MatValue::Numeric { dims, .. } => (MX_DOUBLE, dims.clone()),
        MatValue::Char { text, .. } => (MX_CHAR, vec![1, text.encode_utf16().count()]),
        MatValue::Struct { dims, .. } => (MX_STRUCT, dims.clone()),
        MatValue::Cell { dims, .. } => (MX_CELL, dims.clone()),
        MatValue::Empty | MatValue::Unsupported { .. } => (MX_DOUBLE, vec![0, 0]),
    };
    let flags: Vec<u8> = [class as u32, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
    put_element(&mut body, MI_UINT32, &flags);
    let dims: Vec<u8> = dims.iter().flat_map(|&d| (d as i32).to_le_bytes()).collect();
    put_element(&mut body, MI_INT32, &dims);
    put_element(&mut body, MI_INT8, name.as_bytes());
    match value {
        MatValue::Numeric { data, .. } => {
            let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            put_element(&mut body, MI_DOUBLE, &bytes);
        }
        MatValue::Char { text, .. } => {
            let bytes: Vec<u8> = text.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
            put_element(&mut body, MI_UINT16, &bytes);
        }
        MatValue::Struct { fields, elements, .. } => {
            let len = fields.iter().map(|f| f.len() + 1).max().unwrap_or(1);
            put_element(&mut body, MI_INT32, &(len as i32).to_le_bytes());
            let mut names = vec![0u8; len * fields.len()];
            for (i, f) in fields.iter().enumerate() {
                names[i * len..i * len + f.len()].copy_from_slice(f.as_bytes());
            }
            put_element(&mut body, MI_INT8, &names);
            for element in elements {
                for v in element {
                    put_matrix(&mut body, "", v);
                }
            }
        }
        MatValue::Cell { items, .. } => {
            for v in items {
                put_matrix(&mut body, "", v);
            }
        }
        MatValue::Empty | MatValue::Unsupported { .. } => put_element(&mut body, MI_DOUBLE, &[]),
    }
    put_element(out, MI_MATRIX, &body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MatValue {
        let el = |p: &str, c: f64| {
            vec![
                MatValue::Char { dims: vec![1, p.len()], text: p.into() },
                MatValue::Numeric { dims: vec![1, 1], data: vec![c] },
            ]
        };
        MatValue::Struct {
            dims: vec![1, 2],
            fields: vec!["relative_im_path".into(), "class".into()],
            elements: vec![el("car_ims/000001.jpg", 1.0), el("car_ims/000002.jpg", 99.0)],
        }
    }

    #[test]
    fn round_trips_plain_and_compressed() {
        for compress in [false, true] {
            let mut buf = Vec::new();
            write(&[("annotations", sample())], compress, &mut buf).unwrap();
            let vars = read(&buf).unwrap();
            let a = &vars["annotations"];
            assert_eq!(a, &sample());
            assert_eq!(a.field(1, "class").and_then(MatValue::as_f64), Some(99.0));
            assert_eq!(a.field(0, "relative_im_path").and_then(MatValue::as_str), Some("car_ims/000001.jpg"));
        }
    }

    #[test]
    fn small_element_format_is_read() {
        // A 1x1 uint8 array whose data (one byte) sits in a small data element.
        let mut body = Vec::new();
        put_element(&mut body, MI_UINT32, &[9, 0, 0, 0, 0, 0, 0, 0]);
        put_element(&mut body, MI_INT32, &[1, 0, 0, 0, 1, 0, 0, 0]);
        body.extend_from_slice(&((1u32 << 16) | MI_INT8).to_le_bytes());
        body.extend_from_slice(b"x\0\0\0");
        body.extend_from_slice(&((1u32 << 16) | MI_UINT8).to_le_bytes());
        body.extend_from_slice(&[42, 0, 0, 0]);
        let (name, v) = matrix(&body, false).unwrap();
        assert_eq!(name, "x");
        assert_eq!(v.as_f64(), Some(42.0));
    }

    #[test]
    fn rejects_non_mat_and_truncated() {
        assert!(read(b"hello").is_err());
        let mut buf = Vec::new();
        write(&[("annotations", sample())], false, &mut buf).unwrap();
        buf.truncate(buf.len() - 20);
        assert!(read(&buf).is_err());
    }
}
