//! A bound on a connection's opening: a peer that connects and never finishes sending what a
//! client sends first (the HTTP/2 connection preface and the frame header of its SETTINGS) is
//! disconnected after [`OPENING_TIMEOUT`], instead of holding a socket and a connection task
//! for as long as it likes. hyper waits for the preface without any bound of its own.
//!
//! Under TLS the bound counts the bytes inside TLS, once the handshake (bounded by
//! [`TLS_HANDSHAKE_TIMEOUT`](crate::security::tls::TLS_HANDSHAKE_TIMEOUT)) has succeeded: a
//! peer that finishes its TLS handshake and then stalls is cut off too.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::Sleep,
};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How long a new connection may take to send its first [`OPENING_BYTES`].
pub const OPENING_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP/2 connection preface (24 bytes) and the 9-byte header of the SETTINGS frame that
/// must follow it.
pub const OPENING_BYTES: usize = 24 + 9;

/// A connection that fails its reads once `timeout` has passed without its first
/// [`OPENING_BYTES`] having arrived; after them, the connection as it is.
#[derive(Debug)]
pub struct Opening<IO> {
    io: IO,
    /// Bytes still to come before the opening is complete.
    missing: usize,
    /// `None` once the opening is complete.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<IO> Opening<IO> {
    /// `io`, bounded by `timeout` from now. Call it on the runtime (it starts a timer).
    pub fn new(io: IO, timeout: Duration) -> Opening<IO> {
        Opening {
            io,
            missing: OPENING_BYTES,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Opening<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            let arrived = buf.filled().len() - before;
            this.missing = this.missing.saturating_sub(arrived);
            if this.missing == 0 {
                this.deadline = None;
            }
        }
        if let Some(deadline) = &mut this.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not open its HTTP/2 connection in time",
            )));
        }
        read
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Opening<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for Opening<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// A connection as accepted: plain TCP, or TLS over TCP once its handshake has succeeded.
#[derive(Debug)]
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Transport::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Transport::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Transport::Tls(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Plain(stream) => stream.is_write_vectored(),
            Transport::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Transport::Tls(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Transport::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

impl Connected for Transport {
    /// The TCP peer's, for both: `Request::remote_addr` reads it.
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match self {
            Transport::Plain(stream) => stream.connect_info(),
            Transport::Tls(stream) => stream.get_ref().0.connect_info(),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_never_finishes_its_opening_is_cut_off() {
        let (client, server) = tokio::io::duplex(1024);
        let mut server = Opening::new(server, Duration::from_secs(10));
        let mut client = client;
        client.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let first = server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..first], b"PRI * HTTP/2.0\r\n");
        // Nothing more: the next read fails once the bound has passed.
        let error = server.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn after_its_opening_a_connection_may_be_idle() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut server = Opening::new(server, Duration::from_secs(10));
        client.write_all(&[7u8; OPENING_BYTES]).await.unwrap();
        let mut buf = [0u8; 64];
        let mut read = 0;
        while read < OPENING_BYTES {
            read += server.read(&mut buf).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        client.write_all(b"later").await.unwrap();
        let later = server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..later], b"later");
    }
}
