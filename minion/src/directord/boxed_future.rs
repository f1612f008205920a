//! A boxed future: what the engine's pluggable parts and the verbs run in-process return.

/// A boxed future, for the engine's pluggable parts and the verbs run in-process.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
