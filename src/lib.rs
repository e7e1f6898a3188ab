//! The gRPC contract of the neuron activation service, generated from `proto/`.
//!
//! # Layout
//!
//! - [`pb`]: the messages of `neuron_explainer.activations.v1` (prost) with the
//!   `ActivationService` client and server stubs (tonic).
//! - [`record`]: [`pb::ActivationRecord`] and [`pb::SplitActivationRecord`], the structs prost
//!   would generate with hand-written decoders, since a response is mostly tokens; the record's
//!   field numbers ([`record::field`]) for every hand-written encoder and decoder.
//! - [`wire`] and [`encoded`]: the same messages for the server, with each `ActivationRecord`
//!   held as its encoding ([`encoded::EncodedRecord`]), and the server stub over them.
//! - [`codec`]: the tonic codec of those stubs (prost, decoding each message from one slice).
//! - [`cursor`]: the `StreamNeuronSplits` cursor, versioned, and the stream it is bound to.
//! - [`page_token`]: the `ListNeurons` page token, bound to its dataset and layer.
//! - [`reason`]: [`ErrorReason`], the `ErrorInfo.reason` names of the service's errors.
//! - [`python_max`]: Python's `max` over floats, which `max_activation` follows everywhere.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors of `proto/`, including
//!   `google/rpc/error_details.proto`, for server reflection.
//!
//! The server (`activations-server`) and the client SDK (`activations-client`) both build on this
//! crate, so they can never disagree about the wire format.

/// Generated messages and stubs of `neuron_explainer.activations.v1`.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod pb {
    tonic::include_proto!("neuron_explainer.activations.v1");
    pub use crate::record::{ActivationRecord, SplitActivationRecord};
}

/// The server's view of the same messages: [`wire::ActivationRecord`](encoded::EncodedRecord)
/// holds the protobuf encoding of a record instead of its fields, so the server encodes each
/// record once, when it reads the neuron, and every response shares those bytes. The encoding
/// is the same; only the server stub is generated here.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod wire {
    include!(concat!(
        env!("OUT_DIR"),
        "/wire/neuron_explainer.activations.v1.rs"
    ));
}

pub mod codec;
pub mod cursor;
pub mod encoded;
pub mod page_token;
pub mod reason;
pub mod record;

pub use reason::ErrorReason;

/// Encoded `FileDescriptorSet` of every file in `proto/`, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/activations_descriptor.bin"));

/// The fully qualified name of the service, as reflection and health checks name it.
pub const SERVICE_NAME: &str = "neuron_explainer.activations.v1.ActivationService";

/// The methods of the service, in the order of the contract (checked against it by a test).
pub const METHODS: [&str; 8] = [
    "GetNeuronRecord",
    "StreamActivationRecords",
    "StreamNeuronSplits",
    "GetNeuronSummary",
    "NeuronExists",
    "ListLayers",
    "ListNeurons",
    "ListDatasets",
];

/// Python's `max` over floats: keeps the first item and replaces it only by a strictly greater
/// one, so a NaN in first place wins and a later NaN is skipped. `None` for no items (where
/// Python raises).
pub fn python_max(values: impl IntoIterator<Item = f32>) -> Option<f32> {
    values.into_iter().fold(None, |best, x| match best {
        Some(b) if x > b => Some(x),
        Some(b) => Some(b),
        None => Some(x),
    })
}

/// The canonical upper-case name of a gRPC code, as the gRPC documentation and grpcurl spell it
/// (`NOT_FOUND`); the server's metrics and logs and the client's errors print codes this way.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use prost_types::{FileDescriptorProto, FileDescriptorSet};

    use super::FILE_DESCRIPTOR_SET;

    /// The descriptor set of the released contract, compiled from `proto/` when it was frozen.
    /// Regenerate it only for a deliberate, compatible change of the contract.
    const RELEASED: &[u8] = include_bytes!("../proto/snapshot/descriptor_set_v1.binpb");

    /// Each file's descriptor without its comments and source positions: what crosses the wire.
    fn contract(bytes: &[u8]) -> Vec<FileDescriptorProto> {
        let set = FileDescriptorSet::decode(bytes).expect("a descriptor set decodes");
        set.file
            .into_iter()
            .map(|file| FileDescriptorProto {
                source_code_info: None,
                ..file
            })
            .collect()
    }

    #[test]
    fn the_methods_are_the_contract_s() {
        let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let service = set
            .file
            .iter()
            .flat_map(|file| {
                let package = file.package().to_string();
                file.service
                    .iter()
                    .map(move |service| (format!("{package}.{}", service.name()), service))
            })
            .find(|(name, _)| name == super::SERVICE_NAME)
            .expect("the service is in the contract")
            .1;
        let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
        assert_eq!(methods, super::METHODS);
    }

    #[test]
    fn python_max_follows_python() {
        use super::python_max;

        assert_eq!(python_max([-3.0, -1.25, -4.0]), Some(-1.25));
        assert_eq!(python_max([]), None);
        assert!(python_max([f32::NAN, 1.0]).unwrap().is_nan());
        assert_eq!(python_max([1.0, f32::NAN]), Some(1.0));
        assert_eq!(python_max([1.0, f32::NAN, 2.0]), Some(2.0));
    }

    #[test]
    fn the_wire_contract_is_the_released_one() {
        let compiled = contract(FILE_DESCRIPTOR_SET);
        let released = contract(RELEASED);
        let names = |files: &[FileDescriptorProto]| -> Vec<String> {
            files.iter().map(|f| f.name().to_string()).collect()
        };
        assert_eq!(names(&compiled), names(&released), "the contract's files");
        for (now, then) in compiled.iter().zip(&released) {
            for (message, before) in now.message_type.iter().zip(&then.message_type) {
                assert_eq!(
                    message,
                    before,
                    "message {} of {}",
                    before.name(),
                    then.name()
                );
            }
            for (service, before) in now.service.iter().zip(&then.service) {
                assert_eq!(
                    service,
                    before,
                    "service {} of {}",
                    before.name(),
                    then.name()
                );
            }
            assert_eq!(
                now,
                then,
                "{} (enums, options or the count of messages)",
                then.name()
            );
        }
    }
}
