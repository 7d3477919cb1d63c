//! The codec every generated service and client uses: prost's, with smaller buffers.
//!
//! tonic gives each stream an 8 KiB decode buffer and each response an 8 KiB encode
//! buffer, allocated when the stream opens and kept while it lives. A registry holds one
//! agent session per node, whose messages are a few hundred bytes: at 10,000 sessions
//! those two buffers were 160 MiB of its heap. They start at 1 KiB here and grow when a
//! message needs it (a package chunk, a large desired state), as tonic's do past 8 KiB.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Where a stream's encode and decode buffers start.
pub const BUFFER_SIZE: usize = 1024;
/// How much an encoded response stream may buffer before it yields (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

/// [`tonic_prost::ProstCodec`] with [`BUFFER_SIZE`] buffers.
#[derive(Debug, Clone, Copy)]
pub struct SmallBufferCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        SmallBufferCodec(PhantomData)
    }
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}
