//! The generated `ActivationService` stub as every call of a client uses it: over one channel
//! (one server, or several balanced), with the credentials on every request, the message-size
//! limits and the compression of the client's settings.

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::pb::activation_service_client::ActivationServiceClient;
use crate::security::Credentials;
use crate::settings::Compression;

/// The stub; cloning it shares the channel.
pub(crate) type Stub = ActivationServiceClient<InterceptedService<Channel, Credentials>>;

/// A stub over `channel` with these settings.
pub(crate) fn new(
    channel: Channel,
    credentials: Credentials,
    compression: Option<Compression>,
    max_decoding_message_size: usize,
    max_encoding_message_size: usize,
) -> Stub {
    let mut stub = ActivationServiceClient::with_interceptor(channel, credentials)
        .max_decoding_message_size(max_decoding_message_size)
        .max_encoding_message_size(max_encoding_message_size);
    if let Some(compression) = compression {
        // Advertising an encoding makes the server compress every response with it.
        stub = stub
            .send_compressed(compression.into())
            .accept_compressed(compression.into());
    }
    stub
}
