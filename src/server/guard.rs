//! The gRPC request guard: no memory is reserved for bytes a peer has not sent, and every
//! message is charged to its request's memory budget before tonic decodes it.
//!
//! tonic reserves a message's declared length as soon as it reads the 5-byte frame header, so
//! 15 bytes declaring 2 GiB would reserve 2 GiB. The guard holds each message's header back
//! until the whole message has arrived (charging the chunks as they come), then charges what
//! decoding will allocate ([`DecodeCost`]) and tonic's own copy, and only then passes it on.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Frame, SizeHint};
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::Service;
use tonic::server::NamedService;
use tonic::Status;

use crate::api::decode_cost::DecodeCost;
use crate::memory::{MemoryPool, RequestBudget};

/// gRPC's frame header: a compression flag and a big-endian length.
const HEADER: usize = 5;

/// What every guarded service shares.
#[derive(Debug)]
pub struct GuardState {
    /// Where request budgets come from.
    pub memory: Arc<MemoryPool>,
    /// Cost plans of our request types.
    pub cost: DecodeCost,
    /// Largest message accepted (`--max_message_size_bytes`).
    pub max_message_size: usize,
}

/// A gRPC service behind the guard.
#[derive(Clone, Debug)]
pub struct Guarded<S> {
    /// The service.
    inner: S,
    /// Shared settings.
    state: Arc<GuardState>,
}

impl<S> Guarded<S> {
    /// Guards `inner`.
    pub fn new(inner: S, state: Arc<GuardState>) -> Self {
        Guarded { inner, state }
    }
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<Request<Body>> for Guarded<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Send,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let budget = Arc::new(self.state.memory.budget());
        let plan = self.state.cost.method(request.uri().path());
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(budget.clone());
        let body = HeldBody::new(body, budget.clone(), plan, self.state.clone());
        let future = self.inner.call(Request::from_parts(parts, Body::new(body)));
        Box::pin(async move {
            let mut response = future.await;
            // The request's memory is given back when its handler is done.
            drop(budget);
            if let Ok(response) = &mut response {
                undecodable_is_invalid_argument(response);
            }
            response
        })
    }
}

/// tonic answers a request it cannot decode with INTERNAL; the client sent it, so it is
/// INVALID_ARGUMENT (the message is kept).
fn undecodable_is_invalid_argument(response: &mut Response<Body>) {
    let headers = response.headers_mut();
    let undecodable = headers.get("grpc-status").is_some_and(|v| v == "13")
        && headers.get("grpc-message").is_some_and(|m| m.as_bytes().starts_with(b"failed%20to%20decode%20Protobuf"));
    if undecodable {
        headers.insert("grpc-status", tonic::codegen::http::HeaderValue::from_static("3"));
    }
}

/// Where the body is in the gRPC framing.
#[derive(Debug)]
enum Framing {
    /// Reading a header; `filled` of its bytes are in.
    Header { bytes: [u8; HEADER], filled: usize },
    /// Reading a message body; `left` bytes still to come.
    Message { header: Bytes, len: usize, left: usize },
}

/// A request body that passes each gRPC message on only once it is whole and paid for.
struct HeldBody {
    inner: Body,
    budget: Arc<RequestBudget>,
    /// Cost plan of the request type, when the method is one of ours.
    plan: Option<usize>,
    state: Arc<GuardState>,
    framing: Framing,
    /// Chunks of the message being received.
    held: Vec<Bytes>,
    /// Frames ready for tonic, each with the bytes charged for it while it waited.
    ready: VecDeque<(Bytes, usize)>,
    /// Trailers to pass on after the data.
    trailers: Option<tonic::codegen::http::HeaderMap>,
    /// The inner body ended.
    ended: bool,
    /// A refusal to report once.
    error: Option<Status>,
}

impl HeldBody {
    fn new(inner: Body, budget: Arc<RequestBudget>, plan: Option<usize>, state: Arc<GuardState>) -> Self {
        HeldBody {
            inner,
            budget,
            plan,
            state,
            framing: Framing::Header { bytes: [0; HEADER], filled: 0 },
            held: Vec::new(),
            ready: VecDeque::new(),
            trailers: None,
            ended: false,
            error: None,
        }
    }

    /// Splits `data` along message boundaries, holding each message until it is complete.
    fn feed(&mut self, mut data: Bytes) -> Result<(), Status> {
        while data.has_remaining() {
            match &mut self.framing {
                // The common case: a whole header in this chunk, passed on without a copy.
                Framing::Header { filled: 0, .. } if data.len() >= HEADER => {
                    let header = data.split_to(HEADER);
                    self.start_message(header)?;
                }
                Framing::Header { bytes, filled } => {
                    let take = (HEADER - *filled).min(data.len());
                    bytes[*filled..*filled + take].copy_from_slice(&data[..take]);
                    *filled += take;
                    data.advance(take);
                    if *filled == HEADER {
                        let header = Bytes::copy_from_slice(&bytes[..]);
                        self.start_message(header)?;
                    }
                }
                Framing::Message { left, .. } => {
                    let take = (*left).min(data.len());
                    let chunk = data.split_to(take);
                    *left -= take;
                    let done = *left == 0;
                    self.budget.charge(chunk.len(), || "the request message".to_string()).map_err(Status::from)?;
                    self.held.push(chunk);
                    if done {
                        self.complete()?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A header is in: check the declared length, then wait for that many bytes.
    fn start_message(&mut self, header: Bytes) -> Result<(), Status> {
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let limit = self.state.max_message_size;
        if len > limit {
            // grpc-core's wording, which TF Serving's clients know.
            return Err(Status::resource_exhausted(format!("Received message larger than max ({len} vs. {limit})")));
        }
        self.framing = Framing::Message { header, len, left: len };
        if len == 0 {
            self.complete()?;
        }
        Ok(())
    }

    /// A message is whole: charge its decoding and tonic's copy, then release it to tonic.
    fn complete(&mut self) -> Result<(), Status> {
        let Framing::Message { header, len, .. } =
            std::mem::replace(&mut self.framing, Framing::Header { bytes: [0; HEADER], filled: 0 })
        else {
            return Ok(());
        };
        // Compressed messages cannot be walked; tonic refuses them (no compression is enabled).
        if let (Some(plan), 0) = (self.plan, header[0]) {
            let cost = self.state.cost.estimate(plan, &self.held);
            self.budget.charge(cost, || "decoding the request".to_string()).map_err(Status::from)?;
        }
        self.budget.charge(len, || "the transport's copy of the request".to_string()).map_err(Status::from)?;
        self.ready.push_back((header, 0));
        for chunk in self.held.drain(..) {
            let charged = chunk.len();
            self.ready.push_back((chunk, charged));
        }
        Ok(())
    }
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        loop {
            if let Some((chunk, charged)) = this.ready.pop_front() {
                // tonic copies it into its own buffer (already charged): the held chunk is freed.
                this.budget.release(charged);
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if let Some(status) = this.error.take() {
                this.ended = true;
                this.trailers = None;
                return Poll::Ready(Some(Err(status)));
            }
            if this.ended {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.ended = true;
                    // A message cut short is refused here: passing its header on would make tonic
                    // reserve the length it declares.
                    if let Framing::Message { len, left, .. } = this.framing {
                        let held: usize = this.held.drain(..).map(|c| c.len()).sum();
                        this.budget.release(held);
                        this.error = Some(Status::invalid_argument(format!(
                            "the request ended inside a message: {} of its {len} bytes arrived",
                            len - left
                        )));
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if let Err(status) = this.feed(data) {
                            tracing::debug!("gRPC request refused: {}", status.message());
                            let held: usize = this.held.drain(..).map(|c| c.len()).sum();
                            this.budget.release(held);
                            this.error = Some(status);
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            this.trailers = Some(trailers);
                        }
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.ready.is_empty() && self.error.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
