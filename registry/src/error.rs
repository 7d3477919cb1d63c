//! How registry errors become gRPC statuses: in one place, with the right codes.

use tonic::{Code, Status};

use crate::store::StoreError;

impl From<StoreError> for Status {
    fn from(err: StoreError) -> Status {
        let code = match &err {
            StoreError::NodeNotFound(_)
            | StoreError::ServerNotFound(_)
            | StoreError::InstanceNotFound(_) => Code::NotFound,
            StoreError::PackageNotFound(_) | StoreError::RolloutNotFound(_) => Code::NotFound,
            StoreError::PackageExists(_) => Code::AlreadyExists,
            StoreError::NodeUp(_)
            | StoreError::NodeExists(_)
            | StoreError::PackageBusy(_)
            | StoreError::PackageInUse { .. }
            | StoreError::Conflict(_)
            | StoreError::NoSecretKey
            | StoreError::SecretUnreadable { .. } => Code::FailedPrecondition,
            StoreError::SecretKey(_) => Code::Internal,
            StoreError::UnsupportedUrl { .. } => Code::InvalidArgument,
            StoreError::Open { .. }
            | StoreError::CreateDir { .. }
            | StoreError::Migrate { .. }
            | StoreError::Query { .. }
            | StoreError::File { .. }
            | StoreError::FileGone { .. }
            | StoreError::FileReplaced { .. }
            | StoreError::NotWritable { .. }
            | StoreError::Unreachable { .. }
            | StoreError::NoAnswer { .. } => Code::Unavailable,
        };
        Status::new(code, err.to_string())
    }
}

/// The longest status message the registry sends, in bytes. A gRPC status message travels
/// percent-encoded in an HTTP/2 header, and clients refuse header lists past 16 KiB (the
/// hyper default): a longer message reaches the user as "h2 protocol error" instead of
/// itself. 4 KiB encodes to at most 12 KiB.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Caps the message of every gRPC status the registry sends, whichever service, handler
/// or interceptor made it: in the headers of an error answer and in the trailers that end
/// a stream. The handlers already keep messages short (values shown cut, the first
/// problems of many); this layer is the one place that guarantees it.
#[derive(Clone, Copy, Debug, Default)]
pub struct CapStatusLayer;

impl<S> tower::Layer<S> for CapStatusLayer {
    type Service = CapStatus<S>;

    fn layer(&self, inner: S) -> CapStatus<S> {
        CapStatus { inner }
    }
}

#[derive(Clone, Debug)]
pub struct CapStatus<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for CapStatus<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<CappedBody<ResBody>>;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut res = fut.await?;
            cap_status_headers(res.headers_mut());
            Ok(res.map(CappedBody))
        })
    }
}

/// A response body whose trailers (where a stream's final status is) get the same cap.
#[derive(Debug)]
pub struct CappedBody<B>(B);

impl<B> http_body::Body for CappedBody<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.0)
            .poll_frame(cx)
            .map_ok(|frame| match frame.into_trailers() {
                Ok(mut trailers) => {
                    cap_status_headers(&mut trailers);
                    http_body::Frame::trailers(trailers)
                }
                Err(frame) => frame,
            })
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

/// Rewrites a `grpc-message` longer than [`MAX_MESSAGE_BYTES`] (encoded) to its capped
/// form; other headers stay as they are.
pub fn cap_status_headers(headers: &mut http::HeaderMap) {
    let too_long = headers
        .get("grpc-message")
        .is_some_and(|v| v.len() > MAX_MESSAGE_BYTES);
    if !too_long {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let mut max = MAX_MESSAGE_BYTES;
    loop {
        let capped = Status::new(
            status.code(),
            corral_proto::text::cap(status.message(), max),
        );
        let mut fresh = http::HeaderMap::new();
        let encoded = capped
            .add_header(&mut fresh)
            .ok()
            .and_then(|()| fresh.remove("grpc-message"));
        match encoded {
            Some(v) if v.len() <= 3 * MAX_MESSAGE_BYTES || max <= 256 => {
                tracing::warn!(
                    bytes = status.message().len(),
                    code = ?status.code(),
                    "a status message was cut to fit an HTTP/2 header"
                );
                headers.insert("grpc-message", v);
                return;
            }
            Some(_) => max /= 2,
            None => {
                headers.remove("grpc-message");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_of(status: &Status) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        status.add_header(&mut h).expect("encodes");
        h
    }

    #[test]
    fn short_messages_pass_unchanged() {
        let mut h = headers_of(&Status::invalid_argument("app: is required"));
        let before = h.clone();
        cap_status_headers(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn long_messages_are_capped_and_keep_their_code() {
        for text in [
            "x".repeat(1 << 20),
            "\n".repeat(1 << 20),
            "é".repeat(1 << 19),
        ] {
            let mut h = headers_of(&Status::invalid_argument(text));
            cap_status_headers(&mut h);
            let encoded = h.get("grpc-message").expect("message").len();
            assert!(encoded <= 3 * MAX_MESSAGE_BYTES, "{encoded}");
            let back = Status::from_header_map(&h).expect("status");
            assert_eq!(back.code(), Code::InvalidArgument);
            assert!(back.message().contains("message cut"), "{}", back.message());
        }
    }
}
