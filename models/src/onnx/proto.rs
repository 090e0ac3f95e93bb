//! Building ONNX protobuf messages (value infos, attributes, tensors, nodes) and writing
//! a finished model to disk atomically.

use std::path::Path;

use onnx_protobuf::{
    attribute_proto::AttributeType,
    tensor_proto::DataType,
    tensor_shape_proto::{dimension, Dimension},
    type_proto, AttributeProto, Message, ModelProto, NodeProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};
use protobuf::{EnumOrUnknown, MessageField};

use super::BATCH_DIM;
use crate::{Error, Result};

/// Serialises `model` and writes it to `path` atomically.
pub(super) fn write_model(model: &ModelProto, path: &Path) -> Result<()> {
    let bytes = model.write_to_bytes().map_err(|e| Error::Export {
        path: path.to_path_buf(),
        reason: format!("cannot serialise the ONNX protobuf: {e}"),
    })?;
    crate::weights::write_atomic(path, &bytes).map_err(|e| Error::Export {
        path: path.to_path_buf(),
        reason: format!("cannot write the file ({e}); check that its folder exists and is writable"),
    })
}

/// An f32 tensor value `[batch, dims...]` with a symbolic batch axis.
pub(super) fn value_info(name: &str, dims: &[usize]) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    shape.dim.push(Dimension { value: Some(dimension::Value::DimParam(BATCH_DIM.to_string())), ..Default::default() });
    for &d in dims {
        shape.dim.push(Dimension { value: Some(dimension::Value::DimValue(d as i64)), ..Default::default() });
    }
    let tensor = type_proto::Tensor {
        elem_type: DataType::FLOAT as i32,
        shape: MessageField::some(shape),
        ..Default::default()
    };
    ValueInfoProto {
        name: name.to_string(),
        type_: MessageField::some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An f32 tensor of the given shape, stored little-endian in `raw_data`.
pub(super) fn tensor(name: &str, shape: &[usize], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: shape.iter().map(|&d| d as i64).collect(),
        data_type: DataType::FLOAT as i32,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// A node with one output, named after that output.
pub(super) fn node(op_type: &str, inputs: Vec<String>, output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        name: output.to_string(),
        op_type: op_type.to_string(),
        input: inputs,
        output: vec![output.to_string()],
        attribute,
        ..Default::default()
    }
}

pub(super) fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: name.to_string(), type_: EnumOrUnknown::new(AttributeType::INT), i, ..Default::default() }
}

pub(super) fn attr_ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        type_: EnumOrUnknown::new(AttributeType::INTS),
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

pub(super) fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto { name: name.to_string(), type_: EnumOrUnknown::new(AttributeType::FLOAT), f, ..Default::default() }
}
