use std::io::{ErrorKind, Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

/// A response read by [`http`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A bare HTTP/1.1 request to `addr` (`host:port`), enough for black-box tests without an
/// HTTP client dependency. `headers` are sent as given; the connection is closed after.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    send_allowing_an_early_answer(&mut stream, &request)?;
    let mut raw = Vec::new();
    if let Err(e) = stream.read_to_end(&mut raw)
        && (raw.is_empty() || !cut_short(&e))
    {
        return Err(e);
    }
    parse(&raw)
}

/// Writes `request`; a server that answers before reading the whole body (413 from the
/// declared length) and closes makes the write fail, and its answer is still to be read.
fn send_allowing_an_early_answer(stream: &mut TcpStream, request: &[u8]) -> std::io::Result<()> {
    match stream.write_all(request) {
        Err(e) if cut_short(&e) => Ok(()),
        other => other,
    }
}

/// The peer closed the connection (with part of what was sent unread).
fn cut_short(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
    )
}

fn parse(raw: &[u8]) -> std::io::Result<HttpResponse> {
    let bad = |what: &str| std::io::Error::other(format!("bad HTTP response ({what})"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("chunked body"))?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).ok()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// A kept-alive HTTP/1.1 connection for load generators: requests one after the other on
/// one TCP connection, as client libraries with a connection pool do. Responses must carry
/// a `Content-Length` (soma's do).
#[derive(Debug)]
pub struct HttpConnection {
    addr: String,
    stream: std::io::BufReader<TcpStream>,
}

impl HttpConnection {
    pub fn connect(addr: &str) -> std::io::Result<HttpConnection> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(HttpConnection {
            addr: addr.to_string(),
            stream: std::io::BufReader::new(stream),
        })
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<HttpResponse> {
        use std::io::BufRead as _;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        send_allowing_an_early_answer(self.stream.get_mut(), &request)?;

        let bad = |what: &str| std::io::Error::other(format!("bad HTTP response ({what})"));
        let mut raw = Vec::new();
        loop {
            let before = raw.len();
            if self.stream.read_until(b'\n', &mut raw)? == 0 {
                return Err(bad("connection closed"));
            }
            if raw[before..] == *b"\r\n" {
                break;
            }
        }
        let mut response = parse(&raw)?;
        let length: usize = response
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("no Content-Length"))?;
        response.body = vec![0; length];
        self.stream.read_exact(&mut response.body)?;
        Ok(response)
    }
}

/// Sends `bytes` as they are on a new connection to `addr`, ends the client's side of it (a
/// half-close), and reads until the server closes: `None` if it has not within `timeout`.
/// For tests that send what a client library would not: damaged or pipelined requests.
pub fn send_raw(addr: &str, bytes: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(timeout)).expect("timeout");
    // The server may close first (a head it refuses): then the rest cannot be sent.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => Some(answer),
        Err(e) if cut_short(&e) => Some(answer),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("reading from {addr}: {e}"),
    }
}

/// The HTTP/1.1 answers in `raw` (as [`send_raw`] read them), one after the other, each
/// framed by its `Content-Length`; an error names what is not such an answer.
pub fn parse_answers(mut raw: &[u8]) -> Result<Vec<HttpResponse>, String> {
    let mut answers = Vec::new();
    while !raw.is_empty() {
        let text = || String::from_utf8_lossy(raw).into_owned();
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| format!("an answer without the end of its head: {:?}", text()))?;
        if !raw.starts_with(b"HTTP/1.1 ") {
            return Err(format!("not an HTTP/1.1 answer: {:?}", text()));
        }
        let mut answer = parse(&raw[..end + 4]).map_err(|e| format!("{e}: {:?}", text()))?;
        let length: usize = answer
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("an answer without Content-Length: {:?}", text()))?;
        let body = raw
            .get(end + 4..end + 4 + length)
            .ok_or_else(|| format!("an answer cut short: {:?}", text()))?;
        answer.body = body.to_vec();
        answers.push(answer);
        raw = &raw[end + 4 + length..];
    }
    Ok(answers)
}

/// The bytes of an HTTP/1.1 POST of `body`, for [`send_raw`].
pub fn raw_post(path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: soma\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    [head.as_bytes(), body].concat()
}
